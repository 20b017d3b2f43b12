"""How the kubernetes-client adapter's requests leave: straight to the server's pool (GETs through the
kept-alive GET pool of ``_http1`` when the light client is used), retried as before."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.errors import KubeUnavailable
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.kubeletplugin._kube import _load_body
from nvdra.kubeletplugin.objects import NODES
from tests.webhook.tls import TestCA


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []
        self.drop = ""  # "second": answer a connection's first request, drop it at its second; "all"
        self.answer = b'{"kind":"NodeList","metadata":{"resourceVersion":"7"},"items":[]}'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def setup(self) -> None:
        super().setup()
        self.served = 0

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.served += 1
        if self.server.drop == "all" or (self.server.drop == "second" and self.served == 2):
            self.close_connection = True  # a keep-alive connection the server gave up on: no answer
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def do_POST(self) -> None:
        """Answers the body it was sent (a create), 201."""
        self.server.paths.append("POST " + self.path)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _connect(
    tmp_path: Path,
    server: _Server,
    prefix: str = "",
    user: dict[str, str] | None = None,
    ca: bytes | None = None,
) -> KubernetesKubeApi:
    host, port = server.server_address[:2]
    cluster = {"server": f"{'https' if ca else 'http'}://{host!s}:{port}{prefix}"}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    return KubernetesKubeApi.from_kubeconfig(str(tmp_path / "kubeconfig"), qps=0, timeout=(2.0, 2.0))


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_the_server_urls_path_prefixes_every_request(tmp_path: Path, server: _Server) -> None:
    """A server behind a path (``https://rancher/k8s/clusters/c-1``) gets its prefix on every request."""
    api = _connect(tmp_path, server, prefix="/k8s/clusters/c-1/")
    assert api.list_versioned(NODES, label_selector="a=b") == ([], "7")
    api.close()
    assert api.list_objects(NODES) == []  # after close, on a new pool
    api.close()
    assert server.paths == [
        "/k8s/clusters/c-1/api/v1/nodes?labelSelector=a%3Db",
        "/k8s/clusters/c-1/api/v1/nodes",
    ]


def test_through_the_kubernetes_clients_configuration_too(tmp_path: Path, server: _Server) -> None:
    """A kubeconfig only the kubernetes client's loaders read (basic auth here) sends through that
    client's pool the same way: prefix kept, answers read."""
    api = _connect(tmp_path, server, prefix="/p", user={"username": "a", "password": "b"})
    assert type(api._client).__module__.startswith("kubernetes.")
    assert api.list_objects(NODES) == []
    api.close()
    assert server.paths == ["/p/api/v1/nodes"]


def test_https_with_the_kubeconfigs_ca_only(tmp_path: Path, server: _Server) -> None:
    """Over TLS the server's certificate is checked against the kubeconfig's CA (and its address), by
    both pools (GETs and writes): the server's own CA is trusted, another CA's client refuses the
    server (status 0) for either."""
    ca = TestCA()
    ca.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}
    api = _connect(tmp_path, server, ca=ca.pem)
    assert api.list_objects(NODES) == []  # a GET: the kept-alive GET pool
    assert api.create_object(NODES, node)["metadata"] == {"name": "n"}  # a write: urllib3's pool
    api.close()
    stranger = _connect(tmp_path, server, ca=TestCA().pem)
    with pytest.raises(KubeUnavailable) as info:
        stranger.list_objects(NODES)
    with pytest.raises(KubeUnavailable) as written:
        stranger.create_object(NODES, node)
    stranger.close()
    for refused in (info.value, written.value):
        assert refused.status == 0 and "CERTIFICATE_VERIFY_FAILED" in str(refused)
    assert server.paths == ["/api/v1/nodes", "POST /api/v1/nodes"]


def test_a_get_on_a_dropped_keep_alive_connection_is_sent_again(tmp_path: Path, server: _Server) -> None:
    """The pooled connection's server closes it as the next GET arrives: the GET goes out again on a
    new connection (the GET pool's resend, as urllib3's retries did) instead of failing the call."""
    server.drop = "second"
    api = _connect(tmp_path, server)
    assert api.list_objects(NODES) == []
    assert api.list_objects(NODES) == []
    api.close()
    assert len(server.paths) == 3  # the dropped request and its resend


def test_a_server_that_drops_every_request_is_unavailable(tmp_path: Path, server: _Server) -> None:
    """When the resends are dropped too, the call fails as a transport error (status 0) after four
    attempts (three retries, as urllib3 made them)."""
    server.drop = "all"
    api = _connect(tmp_path, server)
    with pytest.raises(KubeUnavailable) as info:
        api.get_node("n")
    api.close()
    assert info.value.status == 0
    assert server.paths == ["/api/v1/nodes/n"] * 4


def test_answers_orjson_refuses_are_read_by_the_standard_library() -> None:
    """orjson reads answers; an integer beyond 64 bits (which it refuses) still parses, and what is
    not JSON is a ValueError either way."""
    assert _load_body(b'{"a":[1,"x",{"b":null}]}') == {"a": [1, "x", {"b": None}]}
    assert _load_body(b'{"n":18446744073709551616}') == {"n": 18446744073709551616}
    with pytest.raises(ValueError):
        _load_body(b"not json")
