"""The :class:`~nvdra.kubeletplugin.types.KubeApi` adapter on the ``kubernetes`` client (its only importer).

What it owns:
- the ``kubernetes`` package is imported lazily, inside functions, so importing this module (for the
  shape conversions and the error mapping, which the test API server shares) never loads it;
- requests go out through the client's configured REST layer (TLS, auth, token refresh, proxies):
  straight to the API server's urllib3 connection pool, found once, with urllib3's retries (a proxy's
  manager is used as it is); with the light client (no proxy) GETs go through its kept-alive GET pool
  instead (:mod:`._http1`: the claim GET's CPU); answers are read as raw JSON (orjson): no pydantic
  models are built or parsed (ARCHITECTURE.md §8);
- the ``resource.k8s.io`` version is discovered once (v1, else v1beta2, else v1beta1) and every object
  of that group (ResourceSlices, ResourceClaims, ResourceClaimTemplates, DeviceClasses, also through the
  generic ``ObjectApi`` calls) is sent to that version's path and converted at this boundary, so callers
  always send and see the v1 shape (``apiVersion: resource.k8s.io/v1``) whatever the server speaks;
- the server's Kubernetes version (``/version``) is read once too: it decides where shared counters
  may sit in ResourceSlices (:func:`nvdra.kubeletplugin.publisher.counter_placement`);
- every failure leaves as a :class:`~nvdra.core.errors.KubeApiError` subclass carrying the HTTP status;
- background calls (ResourceSlice list/create/update/delete) take a token from a
  :class:`~nvdra.kubeletplugin.ratelimit.TokenBucket`; claim and node GETs never wait on it; a watch
  takes one token to open and none while it streams;
- request bodies are serialized here, once, compactly (no spaces, keys sorted): the API server keeps a
  RawExtension's bytes (a claim template's opaque ``parameters``) as sent and re-serializes them
  compactly on any later patch, so spaced JSON would turn a metadata-only patch into an "immutable
  spec" 422. The client's REST layer (which ``json.dumps`` with spaces) is bypassed for the send; its
  pool, TLS and auth are used as configured;
- every request carries the user agent ``nvdra-<component>/<version>`` (:func:`user_agent`).
"""

from __future__ import annotations

__all__ = [
    "RESOURCE_GROUP",
    "SUPPORTED_VERSIONS",
    "KubernetesKubeApi",
    "claim_from_version",
    "claim_to_version",
    "error_for_status",
    "parse_server_version",
    "pick_resource_version",
    "resource_from_version",
    "resource_to_version",
    "shape_problems",
    "slice_from_version",
    "slice_to_version",
    "template_from_version",
    "template_to_version",
    "user_agent",
]

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import quote, urlencode

import attrs
import orjson

import nvdra
from nvdra.core.errors import ConfigError, KubeApiError, KubeConflict, KubeNotFound, KubeUnavailable
from nvdra.core.resourceslice import to_v1beta1_device
from nvdra.kubeletplugin._restconfig import LightApiClient, light_client
from nvdra.kubeletplugin.objects import (
    PATCH_CONTENT_TYPES,
    Query,
    ResourceType,
    Selectors,
    WatchEvent,
    WatchOptions,
    WatchStream,
)
from nvdra.kubeletplugin.ratelimit import TokenBucket
from nvdra.kubeletplugin.types import JsonObject

if TYPE_CHECKING:  # urllib3 is imported on the first request, after the plugin has registered
    import urllib3

    from nvdra.kubeletplugin._http1 import Http1Pool

_log = logging.getLogger(__name__)
RESOURCE_GROUP = "resource.k8s.io"
SUPPORTED_VERSIONS = ("v1", "v1beta2", "v1beta1")  # preference order
_V1 = f"{RESOURCE_GROUP}/v1"
_OWN_VERSION_KINDS = frozenset({"DeviceTaintRule"})  # resource.k8s.io kinds not served at v1
# Fields of a v1 DeviceRequest that v1beta1 keeps flat on the request (v1 nests them under `exactly`).
_EXACT_FIELDS = (
    "deviceClassName",
    "selectors",
    "allocationMode",
    "count",
    "adminAccess",
    "tolerations",
    "capacity",
)


def user_agent(component: str | None = None) -> str:
    """``nvdra-<component>/<version>``: the component given, else the console script's name.

    ``nvdra-cd-controller`` (argv[0] of the console script) → ``nvdra-cd-controller/0.1.0``; a process
    that is no nvdra console script (tests, embedding programs) says ``nvdra/<version>``.
    """
    if component is None:
        script = os.path.basename(sys.argv[0] if sys.argv else "")
        name = script if re.fullmatch(r"nvdra(-[a-z0-9-]+)?", script) else "nvdra"
    else:
        name = component if component.startswith("nvdra") else f"nvdra-{component}"
    return f"{name}/{nvdra.__version__}"


def dump_body(body: Any) -> bytes:
    """The wire form of a request body: compact JSON, keys sorted (byte-stable through the apiserver)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def error_for_status(status: int, message: str) -> KubeApiError:
    """The :class:`KubeApiError` subclass for an HTTP status (0 = no answer at all).

    404 → KubeNotFound, 409 → KubeConflict, 0/429/5xx → KubeUnavailable, anything else → KubeApiError.
    """
    if status == 404:
        return KubeNotFound(message, status=status)
    if status == 409:
        return KubeConflict(message, status=status)
    if status in (0, 429) or status >= 500:
        return KubeUnavailable(message, status=status)
    return KubeApiError(message, status=status)


_DRA_OFF = (
    "Dynamic Resource Allocation is off or the cluster is older than 1.32 (on 1.32 and 1.33 enable the "
    "DynamicResourceAllocation feature gate and --runtime-config=resource.k8s.io/v1beta1=true)"
)


def pick_resource_version(served: list[str] | tuple[str, ...]) -> str:
    """The newest version nvdra speaks among those served (v1 > v1beta2 > v1beta1).

    Raises:
        KubeNotFound: none of them is served (DRA is off or the cluster is older than 1.32).
    """
    for version in SUPPORTED_VERSIONS:
        if version in served:
            return version
    raise KubeNotFound(
        f"API group {RESOURCE_GROUP} serves {list(served)}; nvdra needs one of {list(SUPPORTED_VERSIONS)}: "
        f"{_DRA_OFF}",
        status=404,
    )


def slice_to_version(body: JsonObject, version: str) -> JsonObject:
    """Convert a v1-shaped ResourceSlice into ``version``'s shape (a new dict; ``body`` is untouched).

    Raises:
        ConfigError: a device carries a field v1beta1 has no place for.
    """
    out = dict(body)
    out["apiVersion"] = f"{RESOURCE_GROUP}/{version}"
    out.setdefault("kind", "ResourceSlice")
    if version != "v1beta1" or "spec" not in body:
        return out
    spec = dict(body["spec"])
    if "devices" in spec:
        converted = []
        for i, device in enumerate(spec["devices"]):
            try:
                converted.append(to_v1beta1_device(device))
            except ValueError as exc:
                raise ConfigError(
                    f"$.spec.devices[{i}]", device.get("name"), "fields v1beta1 can carry", reason=str(exc)
                ) from exc
        spec["devices"] = converted
    out["spec"] = spec
    return out


def slice_from_version(body: JsonObject) -> JsonObject:
    """Convert a ResourceSlice of any supported version into the v1 shape (a new dict)."""
    out = dict(body)
    version = str(body.get("apiVersion", _V1)).rpartition("/")[2]
    out["apiVersion"] = _V1
    out.setdefault("kind", "ResourceSlice")
    if version != "v1beta1" or "spec" not in body:
        return out
    spec = dict(body["spec"])
    if "devices" in spec:
        spec["devices"] = [{"name": d["name"], **d.get("basic", {})} for d in spec["devices"]]
    # v1beta1 has plain (non-pointer) fields: their zero values mean "unset" in v1.
    if spec.get("nodeName") == "":
        del spec["nodeName"]
    if spec.get("allNodes") is False:
        del spec["allNodes"]
    out["spec"] = spec
    return out


def _map_requests(body: JsonObject, convert: Callable[[JsonObject], JsonObject]) -> JsonObject:
    spec = body.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("devices"), dict):
        return body
    devices = dict(spec["devices"])
    devices["requests"] = [convert(r) for r in devices.get("requests", [])]
    return {**body, "spec": {**spec, "devices": devices}}


def _map_template_requests(body: JsonObject, convert: Callable[[JsonObject], JsonObject]) -> JsonObject:
    """Convert the requests of a ResourceClaimTemplate (the claim spec sits at ``spec.spec``)."""
    outer = body.get("spec")
    if not isinstance(outer, dict) or not isinstance(outer.get("spec"), dict):
        return body
    return {**body, "spec": {**outer, "spec": _map_requests(outer, convert)["spec"]}}


def _request_to_v1(request: JsonObject) -> JsonObject:
    if "firstAvailable" in request:
        return {"name": request["name"], "firstAvailable": request["firstAvailable"]}
    exactly = {k: request[k] for k in _EXACT_FIELDS if k in request}
    return {"name": request["name"], "exactly": exactly}


def _request_to_v1beta1(request: JsonObject) -> JsonObject:
    flat = {"name": request["name"]}
    if "firstAvailable" in request:
        flat["firstAvailable"] = request["firstAvailable"]
    flat.update(request.get("exactly", {}))
    return flat


_RequestMapper = Callable[[JsonObject, Callable[[JsonObject], JsonObject]], JsonObject]


def _requests_from_version(body: JsonObject, map_requests: _RequestMapper) -> JsonObject:
    """``body`` as v1: v1beta1's flat requests go under ``exactly``; other versions change apiVersion only."""
    version = str(body.get("apiVersion", _V1)).rpartition("/")[2]
    out = {**body, "apiVersion": _V1}
    return map_requests(out, _request_to_v1) if version == "v1beta1" else out


def _requests_to_version(body: JsonObject, version: str, map_requests: _RequestMapper) -> JsonObject:
    """A v1-shaped ``body`` in ``version``'s shape (a new dict): flat requests for v1beta1."""
    out = {**body, "apiVersion": f"{RESOURCE_GROUP}/{version}"}
    return map_requests(out, _request_to_v1beta1) if version == "v1beta1" else out


def claim_from_version(body: JsonObject) -> JsonObject:
    """Convert a ResourceClaim of any supported version into the v1 shape (requests under ``exactly``).

    The allocation result (``status``) has the same shape in every version and passes unchanged.
    """
    return _requests_from_version(body, _map_requests)


def claim_to_version(body: JsonObject, version: str) -> JsonObject:
    """Convert a v1-shaped ResourceClaim into ``version``'s shape (a new dict)."""
    return _requests_to_version(body, version, _map_requests)


def template_from_version(body: JsonObject) -> JsonObject:
    """Convert a ResourceClaimTemplate of any supported version into the v1 shape."""
    return _requests_from_version(body, _map_template_requests)


def template_to_version(body: JsonObject, version: str) -> JsonObject:
    """Convert a v1-shaped ResourceClaimTemplate into ``version``'s shape (a new dict)."""
    return _requests_to_version(body, version, _map_template_requests)


def resource_to_version(kind: str, body: JsonObject, version: str) -> JsonObject:
    """Convert a v1-shaped ``resource.k8s.io`` object of ``kind`` into ``version``'s shape.

    Kinds whose shape is the same in every version (DeviceClass, DeviceTaintRule) only change
    ``apiVersion``.

    Raises:
        ConfigError: a ResourceSlice device carries a field v1beta1 has no place for.
    """
    if kind == "ResourceSlice":
        return slice_to_version(body, version)
    if kind == "ResourceClaim":
        return claim_to_version(body, version)
    if kind == "ResourceClaimTemplate":
        return template_to_version(body, version)
    return {**body, "apiVersion": f"{RESOURCE_GROUP}/{version}"}


def resource_from_version(kind: str, body: JsonObject) -> JsonObject:
    """Convert a ``resource.k8s.io`` object of ``kind`` in any supported version into the v1 shape."""
    if kind == "ResourceSlice":
        return slice_from_version(body)
    if kind == "ResourceClaim":
        return claim_from_version(body)
    if kind == "ResourceClaimTemplate":
        return template_from_version(body)
    return {**body, "apiVersion": _V1}


def _request_problems(path: str, requests: Any, version: str) -> list[str]:
    problems: list[str] = []
    for i, request in enumerate(requests if isinstance(requests, list) else []):
        if not isinstance(request, dict):
            continue
        if version == "v1beta1":
            unknown = ["exactly"] if "exactly" in request else []
        else:
            unknown = [k for k in _EXACT_FIELDS if k in request]
        problems += [f'unknown field "{path}[{i}].{k}"' for k in unknown]
    return problems


def shape_problems(kind: str, body: JsonObject, version: str) -> list[str]:
    """Fields of ``body`` that ``version`` of ``kind`` does not have (a strict decoder's complaints).

    v1beta1 keeps a device's fields under ``basic`` and a request's fields flat on the request; v1 and
    v1beta2 have no ``basic`` and nest a request's fields under ``exactly``. Only these differences are
    checked: they are what a client speaking the wrong version gets wrong.
    """
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return []
    if kind == "ResourceSlice":
        problems = []
        for i, device in enumerate(spec.get("devices") or []):
            if not isinstance(device, dict):
                continue
            if version == "v1beta1":
                unknown = sorted(k for k in device if k not in ("name", "basic"))
            else:
                unknown = ["basic"] if "basic" in device else []
            problems += [f'unknown field "spec.devices[{i}].{k}"' for k in unknown]
        return problems
    if kind == "ResourceClaim":
        devices = spec.get("devices")
        if isinstance(devices, dict):
            return _request_problems("spec.devices.requests", devices.get("requests"), version)
    if kind == "ResourceClaimTemplate":
        inner = spec.get("spec")
        devices = inner.get("devices") if isinstance(inner, dict) else None
        if isinstance(devices, dict):
            return _request_problems("spec.spec.devices.requests", devices.get("requests"), version)
    return []


def parse_server_version(info: JsonObject) -> tuple[int, int]:
    """``(major, minor)`` of a ``/version`` answer; tolerates managed-cluster minors such as ``"35+"``.

    Raises:
        ConfigError: neither ``gitVersion`` nor ``major``/``minor`` name a version.
    """
    git = re.match(r"^v?(\d+)\.(\d+)", str(info.get("gitVersion", "")))
    if git:
        return int(git.group(1)), int(git.group(2))
    major = re.match(r"^(\d+)", str(info.get("major", "")))
    minor = re.match(r"^(\d+)", str(info.get("minor", "")))
    if major and minor:
        return int(major.group(1)), int(minor.group(1))
    raise ConfigError("/version", info, "a Kubernetes version (gitVersion vX.Y.Z, or major and minor)")


def _load_body(data: bytes) -> Any:
    """A JSON answer as Python values: orjson (~3x the standard library on a ResourceClaim); what it
    refuses (integers beyond 64 bits, NaN) goes to the standard library, so nothing it accepted before
    is refused now.

    Raises:
        ValueError: the bytes are not JSON.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _status_message(status: int, data: bytes, what: str) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else a short excerpt of the body."""
    try:
        decoded = _load_body(data)
        message = decoded.get("message") if isinstance(decoded, dict) else None
    except ValueError:
        message = None
    if not message:
        message = data[:200].decode("utf-8", "replace") or "no body"
    return f"{what}: HTTP {status}: {message}"


@attrs.frozen
class _Route:
    """How requests leave, worked out once: the host's urllib3 pool, or the manager behind a proxy;
    GETs on kept-alive connections of their own where the client is the light one (no proxy)."""

    pool: urllib3.HTTPConnectionPool | None  # the API server's (HTTPS) pool; None behind a proxy
    manager: urllib3.PoolManager  # the client's (used only behind a proxy)
    prefix: str  # the server URL's path (``/k8s/clusters/c-1``), or the whole URL behind a proxy
    retries: urllib3.Retry  # 3, as the PoolManager's default; redirects are not followed
    timeout: urllib3.Timeout  # the adapter's (connect, read)
    gets: Http1Pool | None  # GETs read in full (see _http1); None: through urllib3 as the rest


class KubernetesKubeApi:
    """:class:`~nvdra.kubeletplugin.types.KubeApi` on the ``kubernetes`` client, raw JSON in and out.

    Build it with :meth:`from_kubeconfig`. Thread-safe: the underlying urllib3 pool is shared and sized
    for concurrent claim GETs.
    """

    def __init__(
        self,
        api_client: Any,
        *,
        limiter: TokenBucket | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        component: str | None = None,
    ) -> None:
        """Wrap a configured ``kubernetes.client.ApiClient``.

        Args:
            api_client: the client whose configuration (host, TLS, auth) and REST pool are used.
            limiter: the token bucket for background calls (default: 5 QPS, burst 10).
            timeout: (connect, read) seconds for every request.
            component: the user agent's component (default: the console script, see :func:`user_agent`).
        """
        self._client = api_client
        self._client.user_agent = user_agent(component)
        self._limiter = limiter if limiter is not None else TokenBucket(5.0, 10)
        self._timeout = timeout
        self._version: str | None = None
        self._server_version: tuple[int, int] | None = None
        self._version_lock = threading.Lock()
        self._route_cache: _Route | None = None

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | None,
        *,
        qps: float = 5.0,
        burst: int = 10,
        pool_size: int = 64,
        timeout: tuple[float, float] = (5.0, 30.0),
        limiter: TokenBucket | None = None,
        component: str | None = None,
    ) -> KubernetesKubeApi:
        """Load a kubeconfig file, or the in-cluster service account when ``path`` is None.

        Args:
            path: a kubeconfig path (``--kubeconfig``); None means in-cluster config.
            qps: ``--kube-api-qps`` for background calls; 0 or less disables limiting.
            burst: ``--kube-api-burst``.
            pool_size: connections kept per host (claim GETs of one kubelet call run concurrently).
            timeout: (connect, read) seconds for every request.
            limiter: a ready-made token bucket, used instead of one built from ``qps``/``burst``.
            component: the user agent's component (``cd-controller``; default: the console script).

        Raises:
            ConfigError: the kubeconfig or the in-cluster environment is unusable.
        """
        light = light_client(path, pool_size=pool_size)  # no `kubernetes` import: see _restconfig
        if light is not None:
            bucket = limiter or TokenBucket(qps, burst)
            return cls(light, limiter=bucket, timeout=timeout, component=component)
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            # The client's config loaders carry no annotations.
            if path is None:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError, ValueError) as exc:
            raise ConfigError(
                "--kubeconfig", path, "a readable kubeconfig, or in-cluster service account", reason=str(exc)
            ) from exc
        configuration.connection_pool_maxsize = pool_size
        return cls(
            client.ApiClient(configuration),
            limiter=limiter or TokenBucket(qps, burst),
            timeout=timeout,
            component=component,
        )

    @property
    def limiter(self) -> TokenBucket:
        """The token bucket background calls go through."""
        return self._limiter

    def close(self) -> None:
        """Release the connection pool (a later request opens a new one, as the PoolManager would)."""
        route, self._route_cache = self._route_cache, None
        if route is not None and route.gets is not None:
            route.gets.close()
        self._client.close()

    # --- transport -------------------------------------------------------------------------------

    def _route(self) -> _Route:
        """The pool requests go through, found once (urllib3 is imported on first use, not before)."""
        route = self._route_cache
        if route is None:
            import urllib3

            manager = self._client.rest_client.pool_manager
            base = str(self._client.param_serialize("GET", "", header_params={}, auth_settings=[])[1])
            direct = not isinstance(manager, urllib3.ProxyManager)  # a proxy wants the whole URL
            light = direct and isinstance(self._client, LightApiClient)
            route = _Route(
                pool=manager.connection_from_url(base) if direct else None,
                manager=manager,
                prefix=(urllib3.util.parse_url(base).path or "").rstrip("/") if direct else base,
                retries=urllib3.Retry(3),
                timeout=urllib3.Timeout(connect=self._timeout[0], read=self._timeout[1]),
                gets=self._client.http1_pool(timeout=self._timeout) if light else None,
            )
            self._route_cache = route
        return route

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] | None = None,
        stream: bool = False,
    ) -> Any:
        """Send one request through the client's pool; the urllib3 response (unread when ``stream``).

        The request goes straight to the API server's connection pool, with the Timeout and Retry built
        once: ``PoolManager.request`` would parse the URL, look the pool up and merge the headers again
        for every request (~50 µs of CPU of a ~215 µs claim GET, measured by benchmarks/claim_get.py).
        """
        route = self._route()
        target, headers = self._target(route, method, path, query, None if body is None else content_type)
        if timeout is None:
            timeout_obj = route.timeout
        else:
            import urllib3

            timeout_obj = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        sender = route.manager if route.pool is None else route.pool
        try:
            return sender.urlopen(
                method,
                target,
                body=None if body is None else dump_body(body),
                headers=headers,
                timeout=timeout_obj,
                retries=route.retries,
                redirect=False,
                assert_same_host=False,
                preload_content=not stream,
            )
        except Exception as exc:  # urllib3 connect/read/protocol errors and socket errors
            if not _is_transport_error(exc):
                raise
            raise KubeUnavailable(f"{method} {path}: {exc}", status=0) from exc

    def _target(
        self, route: _Route, method: str, path: str, query: dict[str, str] | None, content_type: str | None
    ) -> tuple[str, dict[str, str]]:
        """The request target (the server URL's path prefixed) and its headers: JSON accepted, the body's
        type when it has one; auth (a token file re-read when due) and the user agent from the client."""
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        req = self._client.param_serialize(method, path, header_params=headers, auth_settings=["BearerToken"])
        return route.prefix + path + ("?" + urlencode(query) if query else ""), req[2]

    def _request(self, method: str, path: str, **options: Any) -> tuple[int, bytes]:
        """One HTTP round trip (``options`` as :meth:`_open` takes them, read in full); returns (status, body
        bytes). Only transport failures raise here. A GET with the adapter's timeout goes through the
        route's kept-alive GET pool where it has one (the claim GET's CPU, see :mod:`._http1`)."""
        route = self._route()
        plain = options.get("body") is None and options.get("timeout") is None and not options.get("stream")
        if method == "GET" and route.gets is not None and plain:
            target, headers = self._target(route, method, path, options.get("query"), None)
            try:
                return route.gets.get(target, headers)
            except OSError as exc:
                raise KubeUnavailable(f"{method} {path}: {exc}", status=0) from exc
        response = self._open(method, path, **options)
        data: bytes = response.data
        return int(response.status), data

    def _json(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: JsonObject | list[JsonObject] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        status, data = self._request(method, path, query=query, body=body, content_type=content_type)
        if not 200 <= status < 300:
            raise error_for_status(status, _status_message(status, data, f"{method} {path}"))
        decoded: JsonObject = _load_body(data) if data else {}
        return decoded

    # --- KubeApi ---------------------------------------------------------------------------------

    def resource_api_version(self) -> str:
        """The served ``resource.k8s.io`` version (discovered on first use, then remembered)."""
        if self._version is None:
            with self._version_lock:
                if self._version is None:
                    try:
                        group = self._json("GET", f"/apis/{RESOURCE_GROUP}")
                    except KubeNotFound as exc:
                        raise KubeNotFound(
                            f"the API server does not serve {RESOURCE_GROUP}: {_DRA_OFF}", status=404
                        ) from exc
                    served = [v.get("version", "") for v in group.get("versions", [])]
                    self._version = pick_resource_version(served)
                    _log.info("the API server serves %s %s; using %s", RESOURCE_GROUP, served, self._version)
        return self._version

    def server_version(self) -> tuple[int, int]:
        """The server's Kubernetes ``(major, minor)`` from ``/version`` (read once, on first use)."""
        if self._server_version is None:
            with self._version_lock:
                if self._server_version is None:
                    info = self._json("GET", "/version")
                    self._server_version = parse_server_version(info)
                    _log.info(
                        "the API server is Kubernetes %s", info.get("gitVersion") or self._server_version
                    )
        return self._server_version

    def _wire_type(self, rt: ResourceType) -> ResourceType:
        """``rt`` at the served version when it belongs to ``resource.k8s.io``, else ``rt`` itself.
        DeviceTaintRules keep theirs: no v1 exists (v1alpha3, then v1beta2), the caller picks one."""
        if rt.group != RESOURCE_GROUP or rt.kind in _OWN_VERSION_KINDS:
            return rt
        return attrs.evolve(rt, version=self.resource_api_version())

    def _to_wire(self, rt: ResourceType, body: JsonObject) -> JsonObject:
        if rt.group != RESOURCE_GROUP or rt.kind in _OWN_VERSION_KINDS:
            return body
        return resource_to_version(rt.kind, {"kind": rt.kind, **body}, self.resource_api_version())

    @staticmethod
    def _from_wire(rt: ResourceType, body: JsonObject) -> JsonObject:
        if rt.group != RESOURCE_GROUP or body.get("kind") == "Status" or rt.kind in _OWN_VERSION_KINDS:
            return body
        return resource_from_version(rt.kind, body)

    def _base(self) -> str:
        return f"/apis/{RESOURCE_GROUP}/{self.resource_api_version()}"

    def get_resource_claim(self, namespace: str, name: str) -> JsonObject:
        """GET a ResourceClaim (v1 shape). Never waits on the background limiter."""
        path = f"{self._base()}/namespaces/{quote(namespace, safe='')}/resourceclaims/{quote(name, safe='')}"
        return claim_from_version(self._json("GET", path))

    def get_node(self, name: str) -> JsonObject:
        """GET a Node. Never waits on the background limiter (it is read once per start)."""
        return self._json("GET", f"/api/v1/nodes/{quote(name, safe='')}")

    def list_resource_slices(self, *, driver: str, node_name: str | None = None) -> list[JsonObject]:
        """LIST this driver's ResourceSlices (and node's), field-selected by the server; v1 shape."""
        selector = f"spec.driver={driver}" + (f",spec.nodeName={node_name}" if node_name else "")
        self._limiter.acquire()
        listed = self._json("GET", f"{self._base()}/resourceslices", query={"fieldSelector": selector})
        return [slice_from_version(item) for item in listed.get("items") or []]

    def create_resource_slice(self, body: JsonObject) -> JsonObject:
        """POST a ResourceSlice given in the v1 shape; returns what the server stored (v1 shape)."""
        wire = slice_to_version(body, self.resource_api_version())
        self._limiter.acquire()
        return slice_from_version(self._json("POST", f"{self._base()}/resourceslices", body=wire))

    def update_resource_slice(self, body: JsonObject) -> JsonObject:
        """PUT a ResourceSlice given in the v1 shape, guarded by its ``metadata.resourceVersion``."""
        name = body["metadata"]["name"]
        wire = slice_to_version(body, self.resource_api_version())
        self._limiter.acquire()
        path = f"{self._base()}/resourceslices/{quote(name, safe='')}"
        return slice_from_version(self._json("PUT", path, body=wire))

    def delete_resource_slice(self, name: str, *, uid: str | None = None) -> None:
        """DELETE a ResourceSlice, with a UID precondition when given; a missing slice is fine."""
        options: JsonObject = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        self._limiter.acquire()
        try:
            self._json("DELETE", f"{self._base()}/resourceslices/{quote(name, safe='')}", body=options)
        except KubeNotFound:
            return

    # --- ObjectApi (every call is background traffic: it goes through the limiter) ---------------
    # Objects of resource.k8s.io go to the served version's path and are converted from and to v1.

    def get_object(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """GET one object."""
        wire = self._wire_type(rt)
        self._limiter.acquire()
        return self._from_wire(rt, self._json("GET", wire.path(namespace, quote(name, safe=""))))

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> list[JsonObject]:
        """LIST objects (all namespaces when ``namespace`` is None), optionally label-/field-selected."""
        return self.list_versioned(rt, namespace, **selectors)[0]

    def create_object(self, rt: ResourceType, body: JsonObject) -> JsonObject:
        """POST an object."""
        wire = self._wire_type(rt)
        sent = self._to_wire(rt, body)
        self._limiter.acquire()
        path = wire.path(body.get("metadata", {}).get("namespace"))
        return self._from_wire(rt, self._json("POST", path, body=sent))

    def update_object(self, rt: ResourceType, body: JsonObject, *, status: bool = False) -> JsonObject:
        """PUT an object (or its status subresource), guarded by its resourceVersion."""
        meta = body["metadata"]
        wire = self._wire_type(rt)
        sent = self._to_wire(rt, body)
        self._limiter.acquire()
        path = wire.path(meta.get("namespace"), quote(meta["name"], safe=""), status=status)
        return self._from_wire(rt, self._json("PUT", path, body=sent))

    def patch_object(
        self,
        rt: ResourceType,
        name: str,
        patch: JsonObject | list[JsonObject],
        namespace: str | None = None,
        *,
        patch_type: str = "merge",
        status: bool = False,
    ) -> JsonObject:
        """PATCH one object (or its status): ``merge`` (RFC 7386), ``json`` (RFC 6902) or ``strategic``.

        The patch (an object; for ``json`` the list of operations) is sent as given: keep it
        version-neutral.
        """
        content_type = PATCH_CONTENT_TYPES.get(patch_type)
        if content_type is None:
            raise ValueError(f"patch_type {patch_type!r}: one of {sorted(PATCH_CONTENT_TYPES)}")
        wire = self._wire_type(rt)
        self._limiter.acquire()
        answer = self._json(
            "PATCH",
            wire.path(namespace, quote(name, safe=""), status=status),
            body=patch,
            content_type=content_type,
        )
        return self._from_wire(rt, answer)

    def list_versioned(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> tuple[list[JsonObject], str]:
        """LIST, with the list's ``metadata.resourceVersion`` (where a watch of the same query resumes)."""
        wire = self._wire_type(rt)
        self._limiter.acquire()
        listed = self._json("GET", wire.path(namespace), query=Query(**selectors).params() or None)
        items: list[JsonObject] = listed.get("items") or []
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", wire.api_version)
            item.setdefault("kind", rt.kind)
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        return [self._from_wire(rt, item) for item in items], version

    def watch_objects(
        self, rt: ResourceType, namespace: str | None = None, **options: Unpack[WatchOptions]
    ) -> WatchStream:
        """``GET …?watch=1``: events read as they arrive (one limiter token to open the watch).

        The server ends the watch after ``timeout_s``; the stream's ``close()`` shuts the connection
        at once, from any thread. Objects of ``resource.k8s.io`` in the events are converted to v1.
        """
        wanted = Query(**options)
        seconds = wanted.timeout_s
        query = {"watch": "1", "timeoutSeconds": str(max(1, int(seconds))), **wanted.params()}
        if wanted.allow_bookmarks:
            query["allowWatchBookmarks"] = "true"
        wire = self._wire_type(rt)
        path = wire.path(namespace)
        self._limiter.acquire()
        # The server ends the watch after timeoutSeconds; the read timeout only catches a dead peer.
        response = self._open(
            "GET", path, query=query, timeout=(self._timeout[0], seconds + 30.0), stream=True
        )
        if not 200 <= response.status < 300:
            data = response.data
            response.release_conn()
            raise error_for_status(response.status, _status_message(response.status, data, f"WATCH {path}"))
        return _HttpWatch(response, f"WATCH {path}", lambda o: self._from_wire(rt, o))

    def delete_object(
        self, rt: ResourceType, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> None:
        """DELETE one object (background propagation), UID-preconditioned when given; missing is fine."""
        options: JsonObject = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        wire = self._wire_type(rt)
        self._limiter.acquire()
        try:
            self._json("DELETE", wire.path(namespace, quote(name, safe="")), body=options)
        except KubeNotFound:
            return


class _HttpWatch:
    """Iterates the JSON lines of a watch response; :meth:`close` (any thread) ends it."""

    def __init__(self, response: Any, what: str, convert: Callable[[JsonObject], JsonObject]) -> None:
        self._response = response
        self._what = what
        self._convert = convert
        self._closed = False
        self._events = self._read()

    def close(self) -> None:
        """Shut the connection: a read blocked in another thread returns at once."""
        if self._closed:
            return
        self._closed = True
        # RuntimeError: the server ended the stream and urllib3 already gave the connection back.
        with contextlib.suppress(OSError, RuntimeError):
            self._response.shutdown()  # urllib3 >= 2.3: unblocks a read blocked in another thread
        self._response.release_conn()

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        return next(self._events)

    def _read(self) -> Iterator[WatchEvent]:
        pending = b""
        try:
            while not self._closed:
                chunk = self._response.read1(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self._decode(line)
        except Exception as exc:
            if self._closed:
                return
            if not _is_transport_error(exc):
                raise
            raise KubeUnavailable(f"{self._what}: {exc}", status=0) from exc
        finally:
            self.close()

    def _decode(self, line: bytes) -> WatchEvent:
        try:
            decoded = _load_body(line)
            kind, obj = str(decoded["type"]), dict(decoded["object"])
        except (ValueError, KeyError, TypeError) as exc:
            raise KubeApiError(f"{self._what}: not a watch event: {line[:200]!r}", status=0) from exc
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = self._convert(obj)
        return WatchEvent(type=kind, object=obj)


def _is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the server could not be reached or the connection broke."""
    import urllib3.exceptions

    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)
