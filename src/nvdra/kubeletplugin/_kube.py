"""The :class:`~nvdra.kubeletplugin.types.KubeApi` adapter on the ``kubernetes`` client (its only importer).

What it owns:
- the ``kubernetes`` package is imported lazily, inside functions, so importing this module (for the
  shape conversions and the error mapping, which the test API server shares) never loads it;
- requests go out through the client's configured REST layer (TLS, auth, token refresh, proxies) and
  answers are read as raw JSON: no pydantic models are built or parsed (ARCHITECTURE.md §8);
- the ``resource.k8s.io`` version is discovered once (v1, else v1beta2, else v1beta1) and ResourceSlice
  and ResourceClaim bodies are converted at this boundary, so callers always send and see the v1 shape
  (``apiVersion: resource.k8s.io/v1``) whatever the server speaks;
- every failure leaves as a :class:`~nvdra.core.errors.KubeApiError` subclass carrying the HTTP status;
- background calls (ResourceSlice list/create/update/delete) take a token from a
  :class:`~nvdra.kubeletplugin.ratelimit.TokenBucket`; claim and node GETs never wait on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from nvdra.core.errors import ConfigError, KubeApiError, KubeConflict, KubeNotFound, KubeUnavailable
from nvdra.core.resourceslice import to_v1beta1_device
from nvdra.kubeletplugin.objects import ResourceType
from nvdra.kubeletplugin.ratelimit import TokenBucket

__all__ = [
    "RESOURCE_GROUP",
    "SUPPORTED_VERSIONS",
    "KubernetesKubeApi",
    "claim_from_version",
    "claim_to_version",
    "error_for_status",
    "pick_resource_version",
    "slice_from_version",
    "slice_to_version",
]

JsonObject = dict[str, Any]
RESOURCE_GROUP = "resource.k8s.io"
SUPPORTED_VERSIONS = ("v1", "v1beta2", "v1beta1")  # preference order
_V1 = f"{RESOURCE_GROUP}/v1"
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


def pick_resource_version(served: list[str] | tuple[str, ...]) -> str:
    """The newest version nvdra speaks among those served (v1 > v1beta2 > v1beta1).

    Raises:
        KubeNotFound: none of them is served (DRA is off or the cluster is older than 1.32).
    """
    for version in SUPPORTED_VERSIONS:
        if version in served:
            return version
    raise KubeNotFound(
        f"API group {RESOURCE_GROUP} serves {list(served)}; nvdra needs one of {list(SUPPORTED_VERSIONS)}",
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


def claim_from_version(body: JsonObject) -> JsonObject:
    """Convert a ResourceClaim of any supported version into the v1 shape (requests under ``exactly``).

    The allocation result (``status``) has the same shape in every version and passes unchanged.
    """
    version = str(body.get("apiVersion", _V1)).rpartition("/")[2]
    out = {**body, "apiVersion": _V1}
    return _map_requests(out, _request_to_v1) if version == "v1beta1" else out


def claim_to_version(body: JsonObject, version: str) -> JsonObject:
    """Convert a v1-shaped ResourceClaim into ``version``'s shape (a new dict)."""
    out = {**body, "apiVersion": f"{RESOURCE_GROUP}/{version}"}
    return _map_requests(out, _request_to_v1beta1) if version == "v1beta1" else out


def _status_message(status: int, data: bytes, what: str) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else a short excerpt of the body."""
    try:
        decoded = json.loads(data)
        message = decoded.get("message") if isinstance(decoded, dict) else None
    except ValueError:
        message = None
    if not message:
        message = data[:200].decode("utf-8", "replace") or "no body"
    return f"{what}: HTTP {status}: {message}"


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
    ) -> None:
        """Wrap a configured ``kubernetes.client.ApiClient``.

        Args:
            api_client: the client whose configuration (host, TLS, auth) and REST pool are used.
            limiter: the token bucket for background calls (default: 5 QPS, burst 10).
            timeout: (connect, read) seconds for every request.
        """
        self._client = api_client
        self._limiter = limiter if limiter is not None else TokenBucket(5.0, 10)
        self._timeout = timeout
        self._version: str | None = None
        self._version_lock = threading.Lock()

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
    ) -> KubernetesKubeApi:
        """Load a kubeconfig file, or the in-cluster service account when ``path`` is None.

        Args:
            path: a kubeconfig path (``--kubeconfig``); None means in-cluster config.
            qps: ``--kube-api-qps`` for background calls; 0 or less disables limiting.
            burst: ``--kube-api-burst``.
            pool_size: connections kept per host (claim GETs of one kubelet call run concurrently).
            timeout: (connect, read) seconds for every request.
            limiter: a ready-made token bucket, used instead of one built from ``qps``/``burst``.

        Raises:
            ConfigError: the kubeconfig or the in-cluster environment is unusable.
        """
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
            client.ApiClient(configuration), limiter=limiter or TokenBucket(qps, burst), timeout=timeout
        )

    @property
    def limiter(self) -> TokenBucket:
        """The token bucket background calls go through."""
        return self._limiter

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    # --- transport -------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: JsonObject | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """One HTTP round trip; returns (status, body bytes). Only transport failures raise here."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        # param_serialize adds auth (refreshing tokens) and the host; the body is left for the REST
        # layer to json.dumps, which skips the client's model sanitizing walk.
        req = self._client.param_serialize(method, path, header_params=headers, auth_settings=["BearerToken"])
        url = req[1] + ("?" + urlencode(query) if query else "")
        try:
            response = self._client.call_api(
                method, url, header_params=req[2], body=body, _request_timeout=self._timeout
            )
            data: bytes = response.read()
        except ApiException as exc:
            raise error_for_status(exc.status or 0, f"{method} {path}: {exc.reason}") from exc
        except Exception as exc:  # urllib3 connect/read/protocol errors and socket errors
            if not _is_transport_error(exc):
                raise
            raise KubeUnavailable(f"{method} {path}: {exc}", status=0) from exc
        return int(response.status), data

    def _json(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: JsonObject | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        status, data = self._request(method, path, query=query, body=body, content_type=content_type)
        if not 200 <= status < 300:
            raise error_for_status(status, _status_message(status, data, f"{method} {path}"))
        decoded: JsonObject = json.loads(data) if data else {}
        return decoded

    # --- KubeApi ---------------------------------------------------------------------------------

    def resource_api_version(self) -> str:
        """The served ``resource.k8s.io`` version (discovered on first use, then remembered)."""
        if self._version is None:
            with self._version_lock:
                if self._version is None:
                    group = self._json("GET", f"/apis/{RESOURCE_GROUP}")
                    served = [v.get("version", "") for v in group.get("versions", [])]
                    self._version = pick_resource_version(served)
        return self._version

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

    def get_object(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """GET one object."""
        self._limiter.acquire()
        return self._json("GET", rt.path(namespace, quote(name, safe="")))

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, *, label_selector: str = ""
    ) -> list[JsonObject]:
        """LIST objects (all namespaces when ``namespace`` is None), optionally label-selected."""
        self._limiter.acquire()
        query = {"labelSelector": label_selector} if label_selector else None
        items: list[JsonObject] = self._json("GET", rt.path(namespace), query=query).get("items") or []
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", rt.api_version)
            item.setdefault("kind", rt.kind)
        return items

    def create_object(self, rt: ResourceType, body: JsonObject) -> JsonObject:
        """POST an object."""
        self._limiter.acquire()
        return self._json("POST", rt.path(body.get("metadata", {}).get("namespace")), body=body)

    def update_object(self, rt: ResourceType, body: JsonObject, *, status: bool = False) -> JsonObject:
        """PUT an object (or its status subresource), guarded by its resourceVersion."""
        meta = body["metadata"]
        self._limiter.acquire()
        path = rt.path(meta.get("namespace"), quote(meta["name"], safe=""), status=status)
        return self._json("PUT", path, body=body)

    def patch_object(
        self, rt: ResourceType, name: str, patch: JsonObject, namespace: str | None = None
    ) -> JsonObject:
        """JSON merge patch of one object."""
        self._limiter.acquire()
        return self._json(
            "PATCH",
            rt.path(namespace, quote(name, safe="")),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def delete_object(
        self, rt: ResourceType, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> None:
        """DELETE one object (background propagation), UID-preconditioned when given; missing is fine."""
        options: JsonObject = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        self._limiter.acquire()
        try:
            self._json("DELETE", rt.path(namespace, quote(name, safe="")), body=options)
        except KubeNotFound:
            return


def _is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the server could not be reached or the connection broke."""
    import urllib3.exceptions

    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)
