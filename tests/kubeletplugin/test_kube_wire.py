"""What the kubernetes-client adapter puts on the wire: compact bodies, its user agent, watch streams."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nvdra
from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.kubeletplugin._kube import user_agent
from nvdra.kubeletplugin.objects import NODES, RESOURCE_CLAIM_TEMPLATES


class _Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.watch_lines: list[bytes] = []
        self.release = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        if "watch=1" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in self.server.watch_lines:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.server.release.wait(10)
            self.wfile.write(b"0\r\n\r\n")
            return
        answer: dict[str, Any] = {"kind": "List", "metadata": {"resourceVersion": "42"}, "items": []}
        if self.path == "/apis/resource.k8s.io":
            answer = {"kind": "APIGroup", "name": "resource.k8s.io", "versions": [{"version": "v1"}]}
        data = body or json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = _answer


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[_Recorder, KubernetesKubeApi]]:
    server = _Recorder()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    host, port = server.server_address[:2]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://{host!s}:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    api = KubernetesKubeApi.from_kubeconfig(str(tmp_path / "kubeconfig"), qps=0, component="cd-controller")
    yield server, api
    server.release.set()
    api.close()
    server.shutdown()
    server.server_close()


def test_bodies_are_compact_json_and_the_user_agent_names_the_component(
    recorder: tuple[_Recorder, KubernetesKubeApi],
) -> None:
    server, api = recorder
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"spec": {"devices": {"config": [{"opaque": {"parameters": {"b": 1, "a": [1, 2]}}}]}}},
    }
    api.create_object(RESOURCE_CLAIM_TEMPLATES, template)
    api.patch_object(NODES, "n", {"metadata": {"labels": {"k": "v"}}})
    bodies = [body for method, _, _, body in server.requests if method in ("POST", "PATCH")]
    assert bodies[-1] == b'{"metadata":{"labels":{"k":"v"}}}'
    assert b'"parameters":{"a":[1,2],"b":1}' in bodies[0]
    assert b", " not in bodies[0] and b": " not in bodies[0]
    agents = {headers.get("User-Agent") for _, _, headers, _ in server.requests}
    assert agents == {f"nvdra-cd-controller/{nvdra.__version__}"}


def test_user_agent_defaults_to_the_console_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/bin/nvdra-cd-daemon", "run"])
    assert user_agent() == f"nvdra-cd-daemon/{nvdra.__version__}"
    monkeypatch.setattr("sys.argv", ["/usr/bin/python3", "-m", "pytest"])
    assert user_agent() == f"nvdra/{nvdra.__version__}"
    assert user_agent("gpu-plugin") == f"nvdra-gpu-plugin/{nvdra.__version__}"


def test_list_versioned_and_a_streamed_watch(recorder: tuple[_Recorder, KubernetesKubeApi]) -> None:
    server, api = recorder
    items, version = api.list_versioned(NODES, label_selector="a=b", field_selector="metadata.name=n")
    assert (items, version) == ([], "42")
    assert "labelSelector=a%3Db" in server.requests[-1][1]
    assert "fieldSelector=metadata.name%3Dn" in server.requests[-1][1]
    assert api.list_objects(NODES, field_selector="spec.unschedulable=true") == []
    assert "fieldSelector=spec.unschedulable%3Dtrue" in server.requests[-1][1]
    assert "labelSelector" not in server.requests[-1][1]
    node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n", "resourceVersion": "43"}}
    server.watch_lines = [
        json.dumps({"type": "ADDED", "object": node}).encode() + b"\n",
        json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "50"}}}).encode() + b"\n",
    ]
    stream = api.watch_objects(NODES, field_selector="metadata.name=n", resource_version="42", timeout_s=30)
    seen = []
    for event in stream:  # the events arrive while the response is still open
        seen.append((event.type, event.object["metadata"]["resourceVersion"]))
        if len(seen) == 2:
            break
    assert seen == [("ADDED", "43"), ("BOOKMARK", "50")]
    path = server.requests[-1][1]
    assert "watch=1" in path and "resourceVersion=42" in path and "allowWatchBookmarks=true" in path


def test_close_from_another_thread_ends_a_blocked_watch(
    recorder: tuple[_Recorder, KubernetesKubeApi],
) -> None:
    _, api = recorder
    stream = api.watch_objects(NODES, resource_version="1", timeout_s=30)
    done = threading.Event()

    def drain() -> None:
        list(stream)
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    time.sleep(0.2)
    started = time.monotonic()
    stream.close()
    assert done.wait(5) and time.monotonic() - started < 5


def test_a_garbled_event_line_is_one_clear_error(recorder: tuple[_Recorder, KubernetesKubeApi]) -> None:
    server, api = recorder
    server.watch_lines = [b"not json\n"]
    with pytest.raises(KubeApiError, match="not a watch event"):
        list(api.watch_objects(NODES, timeout_s=5))
