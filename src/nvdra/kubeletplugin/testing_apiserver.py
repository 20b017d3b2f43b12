"""``ApiServer``: an in-process HTTP Kubernetes API server over a ``FakeKube`` (tests, demos, benchmarks).

It serves the REST paths :class:`~nvdra.kubeletplugin._kube.KubernetesKubeApi` uses — ``/version``,
``/api``, ``/apis``, ``/apis/resource.k8s.io`` discovery, ResourceSlice list/get/create/update/delete,
ResourceClaim and Node GETs — with Kubernetes-shaped ``Status`` error bodies. Invariants:
- objects are stored in the v1 shape (by the ``FakeKube``) and converted to and from the version named
  in the request path; a version the store does not serve is a 404, a body of another version a 400,
  and so is a body with fields the path's version does not have (``basic`` outside v1beta1, ``exactly``
  in v1beta1: a strict decoder's "unknown field"). This holds for every ``resource.k8s.io`` resource,
  the generic ones (ResourceClaimTemplates, DeviceClasses) included;
- ``/version`` names the store's ``kubernetes_version``;
- the handler speaks HTTP/1.1 keep-alive with ``Content-Length`` and has Nagle's algorithm off: headers
  and body leave in two writes, and with Nagle plus delayed ACKs every answer would stall ~40 ms;
- when built with a ``token``, every request must carry ``Authorization: Bearer <token>`` (else 401);
- closing the server also closes its open keep-alive connections.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nvdra.core.errors import ConfigError, KubeApiError, KubeNotFound
from nvdra.kubeletplugin._kube import (
    RESOURCE_GROUP,
    SUPPORTED_VERSIONS,
    claim_to_version,
    resource_from_version,
    resource_to_version,
    shape_problems,
    slice_from_version,
    slice_to_version,
)
from nvdra.kubeletplugin.fake import FakeKube
from nvdra.kubeletplugin.objects import (
    DAEMON_SETS,
    DEPLOYMENTS,
    DEVICE_CLASSES,
    LEASES,
    NODES,
    PODS,
    RESOURCE_CLAIM_TEMPLATES,
    RESOURCE_CLAIMS,
    ResourceType,
)

__all__ = ["ApiServer"]

JsonObject = dict[str, Any]
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}
_GROUP_PREFIX = f"/apis/{RESOURCE_GROUP}/"
_SLICES = re.compile(r"^/apis/resource\.k8s\.io/(?P<v>[^/]+)/resourceslices(?:/(?P<name>[^/]+))?$")
_CLAIM = re.compile(
    r"^/apis/resource\.k8s\.io/(?P<v>[^/]+)/namespaces/(?P<ns>[^/]+)/resourceclaims/(?P<name>[^/]+)$"
)
_GENERIC = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<group>[^/]+)/(?P<gv>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"
)
_BUILTIN_TYPES = (
    NODES,
    PODS,
    DEPLOYMENTS,
    DAEMON_SETS,
    LEASES,
    RESOURCE_CLAIMS,
    RESOURCE_CLAIM_TEMPLATES,
    DEVICE_CLASSES,
)


def status_body(code: int, message: str) -> JsonObject:
    """A ``meta/v1 Status`` failure body as the API server writes it."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }


def _parse_field_selector(text: str) -> dict[str, str]:
    """``spec.driver=a,spec.nodeName=b`` → ``{"spec.driver": "a", ...}``; only those two fields exist."""
    fields: dict[str, str] = {}
    for term in filter(None, text.split(",")):
        key, sep, value = term.replace("==", "=").partition("=")
        if not sep or key not in ("spec.driver", "spec.nodeName"):
            raise KubeApiError(f'field label not supported: "{key}"', status=400)
        fields[key] = value
    return fields


class _Handler(http.server.BaseHTTPRequestHandler):
    """One keep-alive connection; routes to the owning :class:`ApiServer`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests and benchmarks read stdout."""

    def setup(self) -> None:
        super().setup()
        self.server.api.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.api.track(self.connection, open_=False)
        super().finish()

    def _send(self, code: int, body: JsonObject) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> JsonObject:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            decoded = json.loads(self.rfile.read(length))
        except ValueError as exc:
            raise KubeApiError(f"invalid JSON body: {exc}", status=400) from exc
        if not isinstance(decoded, dict):
            raise KubeApiError("request body must be a JSON object", status=400)
        return decoded

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query: dict[str, str] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self.server.api.authorize(self.headers.get("Authorization"))
            body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else {}
            code, answer = self.server.api.route(method, url.path, query, body)
        except KubeApiError as exc:
            code = exc.status or 500
            answer = status_body(code, str(exc))
        except ConfigError as exc:  # a v1 body that v1beta1 cannot express
            code, answer = 422, status_body(422, str(exc))
        self._send(code, answer)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    api: ApiServer


class ApiServer:
    """An HTTP Kubernetes API server on 127.0.0.1 backed by a :class:`FakeKube` (context manager).

    Example::

        with ApiServer(FakeKube(served_versions=("v1beta1",))) as server:
            server.write_kubeconfig(tmp_path / "kubeconfig")
    """

    def __init__(self, store: FakeKube | None = None, *, token: str | None = None, port: int = 0) -> None:
        """Bind (not yet serve) on 127.0.0.1.

        Args:
            store: the objects to serve (a new empty ``FakeKube`` by default).
            token: when set, the bearer token every request must carry.
            port: the TCP port; 0 picks a free one.
        """
        self.store = store if store is not None else FakeKube()
        self._token = token
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.api = self
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._routes: list[tuple[re.Pattern[str], Callable[..., tuple[int, JsonObject]]]] = [
            (_SLICES, self._slices),
            (_CLAIM, self._claim),
            (_GENERIC, self._generic),
        ]
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in _BUILTIN_TYPES:
            self.register(rt)

    def register(self, rt: ResourceType) -> None:
        """Serve a resource type through the generic routes (as installing a CRD does)."""
        self._types[(rt.group, rt.version, rt.plural)] = rt

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ApiServer:
        """Serve in a daemon thread. Returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, args=(0.05,), name="nvdra-apiserver", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, close open keep-alive connections and the listening socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        with self._conns_lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    continue
        self._httpd.server_close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        self.close()

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (plain http; the bearer token when set) that points at this server."""
        user: JsonObject = {"token": self._token} if self._token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "nvdra-test", "cluster": {"server": self.url}}],
            "users": [{"name": "nvdra-test", "user": user}],
            "contexts": [{"name": "nvdra-test", "context": {"cluster": "nvdra-test", "user": "nvdra-test"}}],
            "current-context": "nvdra-test",
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))  # JSON is YAML: the client's loader reads it
        return target

    # --- request handling (called from handler threads) ------------------------------------------

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        """Remember open connections so :meth:`close` can end them."""
        with self._conns_lock:
            if open_:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def authorize(self, header: str | None) -> None:
        """Raise a 401 unless the request carries the configured bearer token."""
        if self._token is not None and header != f"Bearer {self._token}":
            raise KubeApiError("Unauthorized", status=401)

    def route(
        self, method: str, path: str, query: dict[str, str], body: JsonObject
    ) -> tuple[int, JsonObject]:
        """Answer one request: (HTTP status, JSON body). Errors leave as :class:`KubeApiError`."""
        if method == "GET":
            found = self._discovery(path)
            if found is not None:
                return 200, found
        for pattern, handler in self._routes:
            match = pattern.match(path)
            if match:
                return handler(
                    method, query, body, **{k: unquote(v) for k, v in match.groupdict().items() if v}
                )
        raise KubeNotFound("the server could not find the requested resource", status=404)

    def _discovery(self, path: str) -> JsonObject | None:
        served = [v for v in SUPPORTED_VERSIONS if v in self.store.served_versions]
        group_versions = [{"groupVersion": f"{RESOURCE_GROUP}/{v}", "version": v} for v in served]
        group: JsonObject = {"name": RESOURCE_GROUP, "versions": group_versions}
        if group_versions:
            group["preferredVersion"] = group_versions[0]
        if path == "/version":
            major, minor = self.store.kubernetes_version
            return {
                "major": str(major),
                "minor": str(minor),
                "gitVersion": f"v{major}.{minor}.0-nvdra",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group] if served else []}
        if path == f"/apis/{RESOURCE_GROUP}" and served:
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        return None

    def _check_version(self, version: str) -> None:
        if version not in self.store.served_versions or version not in SUPPORTED_VERSIONS:
            raise KubeNotFound("the server could not find the requested resource", status=404)

    def _slices(self, method: str, query: dict[str, str], body: JsonObject, *, v: str, name: str = "") -> Any:
        self._check_version(v)
        if method == "GET" and not name:
            fields = _parse_field_selector(query.get("fieldSelector", ""))
            items = self.store.list_resource_slices(
                driver=fields.get("spec.driver"), node_name=fields.get("spec.nodeName")
            )
            listed = [slice_to_version(item, v) for item in items]
            return 200, {"kind": "ResourceSliceList", "apiVersion": f"{RESOURCE_GROUP}/{v}", "items": listed}
        if method == "GET":
            return 200, slice_to_version(self.store.get_resource_slice(name), v)
        if method == "DELETE" and name:
            uid = (body.get("preconditions") or {}).get("uid")
            return 200, slice_to_version(self.store.pop_resource_slice(name, uid=uid), v)
        if method in ("POST", "PUT") and bool(name) == (method == "PUT"):
            obj = self._incoming(body, v)
            if method == "POST":
                return 201, slice_to_version(self.store.create_resource_slice(obj), v)
            if (obj.get("metadata") or {}).get("name") != name:
                raise KubeApiError("the name of the object does not match the name on the URL", status=400)
            return 200, slice_to_version(self.store.update_resource_slice(obj), v)
        raise KubeApiError(f"method {method} is not allowed here", status=405)

    @staticmethod
    def _incoming(body: JsonObject, version: str, kind: str = "ResourceSlice") -> JsonObject:
        expected = f"{RESOURCE_GROUP}/{version}"
        if body.get("apiVersion") != expected or body.get("kind") != kind:
            raise KubeApiError(
                f"the API version in the data ({body.get('apiVersion')}) does not match the expected "
                f"API version ({expected}), or kind is not {kind}",
                status=400,
            )
        unknown = shape_problems(kind, body, version)
        if unknown:
            raise KubeApiError(
                f"{kind} in version {version} cannot be handled: strict decoding error: "
                + ", ".join(unknown),
                status=400,
            )
        return slice_from_version(body) if kind == "ResourceSlice" else resource_from_version(kind, body)

    def _claim(
        self, method: str, query: dict[str, str], body: JsonObject, *, v: str, ns: str, name: str
    ) -> Any:
        self._check_version(v)
        if method != "GET":
            raise KubeApiError(f"method {method} is not allowed here", status=405)
        return 200, claim_to_version(self.store.get_resource_claim(ns, name), v)

    def _generic_type(self, group: str, version: str, plural: str) -> ResourceType:
        """The registered type a generic path names; resource.k8s.io types at every served version."""
        if group == RESOURCE_GROUP:
            # Stored once (v1 shape, by the v1 type), served at every version the store serves.
            self._check_version(version)
            version = "v1"
        rt = self._types.get((group, version, plural))
        if rt is None:
            raise KubeNotFound("the server could not find the requested resource", status=404)
        return rt

    def _generic(
        self,
        method: str,
        query: dict[str, str],
        body: JsonObject,
        *,
        plural: str,
        cv: str = "",
        group: str = "",
        gv: str = "",
        ns: str | None = None,
        name: str = "",
        sub: str = "",
    ) -> Any:
        version = gv or cv
        rt = self._generic_type(group, version, plural)
        objects = self.store

        def out(obj: JsonObject) -> JsonObject:
            return resource_to_version(rt.kind, obj, version) if group == RESOURCE_GROUP else obj

        if group == RESOURCE_GROUP and method in ("POST", "PUT"):
            body = self._incoming(body, version, rt.kind)
        if method == "GET" and not name:
            items = objects.list_objects(rt, ns, label_selector=query.get("labelSelector", ""))
            api_version = f"{group}/{version}" if group else version
            return 200, {
                "kind": f"{rt.kind}List",
                "apiVersion": api_version,
                "items": [out(i) for i in items],
            }
        if method == "GET":
            return 200, out(objects.get_object(rt, name, ns))
        if method == "POST" and not name:
            if rt.namespaced:
                body.setdefault("metadata", {})["namespace"] = ns or "default"
            return 201, out(objects.create_object(rt, body))
        if method == "PUT" and name:
            if (body.get("metadata") or {}).get("name") != name:
                raise KubeApiError("the name of the object does not match the name on the URL", status=400)
            if rt.namespaced:
                body["metadata"]["namespace"] = ns or "default"
            return 200, out(objects.update_object(rt, body, status=sub == "status"))
        if method == "PATCH" and name:
            return 200, out(objects.patch_object(rt, name, body, ns))
        if method == "DELETE" and name:
            uid = (body.get("preconditions") or {}).get("uid")
            objects.delete_object(rt, name, ns, uid=uid)
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 200,
            }
        raise KubeApiError(f"method {method} is not allowed here", status=405)
