"""Typed bridge between the generated protobuf stubs and the toolkit's records.

The generated ``_pb2`` modules are untyped for mypy, so every protobuf message the toolkit builds or
reads passes through a function here that has a typed signature. Invariants owned here:

* the DRA API table: ``v1`` and ``v1beta1`` share every message except ``Device.share_id``, which
  only ``v1`` carries (and only when the driver set it: it is a proto3 ``optional`` field);
* subrequest suffixes are stripped from request names on the way out (``req/sub`` → ``req``), as
  the Go helper does, because the kubelet matches container requests by the parent name;
* the registration tokens (``v1.DRAPlugin`` ...) are ``<proto package last segment>.<service>``.
"""

from __future__ import annotations

__all__ = [
    "DRA_APIS",
    "DraApi",
    "PluginRpcError",
    "api_for_token",
    "claims_from_pb",
    "claims_to_pb",
    "prepare_response_from_pb",
    "prepare_response_to_pb",
    "strip_subrequest",
    "unprepare_response_from_pb",
    "unprepare_response_to_pb",
]

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from nvdra.core import errors
from nvdra.kubeletplugin._proto import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from nvdra.kubeletplugin.types import ClaimRef, PreparedDevice, PrepareResult


class PluginRpcError(errors.SystemError_):
    """A gRPC call between the kubelet side and a plugin failed (``code`` is the gRPC status name)."""

    def __init__(self, message: str, *, code: str = "UNKNOWN") -> None:
        self.code = code
        super().__init__(message)


@attrs.frozen(kw_only=True)
class DraApi:
    """One served version of the DRA kubelet plugin API."""

    name: str  # "v1" / "v1beta1"
    token: str  # what PluginInfo.supported_versions announces
    pb2: Any  # generated message module
    pb2_grpc: Any  # generated service module
    has_share_id: bool

    def add_to_server(self, servicer: object, server: object) -> None:
        """Register a servicer (an object with NodePrepareResources/NodeUnprepareResources)."""
        self.pb2_grpc.add_DRAPluginServicer_to_server(servicer, server)

    def stub(self, channel: object) -> Any:
        """A client stub for this version on ``channel``."""
        return self.pb2_grpc.DRAPluginStub(channel)


DRA_APIS: Mapping[str, DraApi] = {
    "v1": DraApi(
        name="v1", token="v1.DRAPlugin", pb2=dra_v1_pb2, pb2_grpc=dra_v1_pb2_grpc, has_share_id=True
    ),
    "v1beta1": DraApi(
        name="v1beta1",
        token="v1beta1.DRAPlugin",
        pb2=dra_v1beta1_pb2,
        pb2_grpc=dra_v1beta1_pb2_grpc,
        has_share_id=False,
    ),
}
"""Served DRA versions, most preferred first (kubelets ≥ 1.34 pick the first entry they know)."""


def api_for_token(token: str) -> DraApi | None:
    """The DRA API announced by a ``supported_versions`` token, or None for other services."""
    for api in DRA_APIS.values():
        if api.token == token:
            return api
    return None


def strip_subrequest(request_name: str) -> str:
    """``"gpu/large"`` → ``"gpu"``: the kubelet knows only the parent request of a subrequest."""
    return request_name.split("/", 1)[0]


def claims_from_pb(request: Any) -> list[ClaimRef]:
    """The claims of a NodePrepare/NodeUnprepare request, in request order, duplicates dropped."""
    seen: set[str] = set()
    claims: list[ClaimRef] = []
    for claim in request.claims:
        uid = str(claim.uid)
        if uid in seen:
            continue
        seen.add(uid)
        claims.append(ClaimRef(namespace=str(claim.namespace), name=str(claim.name), uid=uid))
    return claims


def claims_to_pb(api: DraApi, claims: Iterable[ClaimRef], *, unprepare: bool = False) -> Any:
    """Build a NodePrepareResourcesRequest (or NodeUnprepareResourcesRequest) for ``claims``."""
    cls = api.pb2.NodeUnprepareResourcesRequest if unprepare else api.pb2.NodePrepareResourcesRequest
    return cls(claims=[api.pb2.Claim(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims])


def _device_to_pb(api: DraApi, device: PreparedDevice) -> Any:
    names: list[str] = []
    for request in device.requests:
        parent = strip_subrequest(request)
        if parent not in names:
            names.append(parent)
    message = api.pb2.Device(
        request_names=names,
        pool_name=device.pool_name,
        device_name=device.device_name,
        cdi_device_ids=list(device.cdi_device_ids),
    )
    if api.has_share_id and device.share_id is not None:
        message.share_id = device.share_id
    return message


def prepare_response_to_pb(api: DraApi, results: Mapping[str, PrepareResult]) -> Any:
    """Build a NodePrepareResourcesResponse; a failed claim carries its error and no devices."""
    response = api.pb2.NodePrepareResourcesResponse()
    for uid, result in results.items():
        entry = response.claims[uid]
        if result.error:
            entry.error = result.error
        else:
            entry.devices.extend(_device_to_pb(api, d) for d in result.devices)
    return response


def prepare_response_from_pb(api: DraApi, response: Any) -> dict[str, PrepareResult]:
    """Decode a NodePrepareResourcesResponse into results keyed by claim UID."""
    results: dict[str, PrepareResult] = {}
    for uid, entry in response.claims.items():
        devices = tuple(
            PreparedDevice(
                requests=tuple(str(r) for r in d.request_names),
                pool_name=str(d.pool_name),
                device_name=str(d.device_name),
                cdi_device_ids=tuple(str(c) for c in d.cdi_device_ids),
                share_id=str(d.share_id) if api.has_share_id and d.HasField("share_id") else None,
            )
            for d in entry.devices
        )
        results[str(uid)] = PrepareResult(devices=devices, error=str(entry.error))
    return results


def unprepare_response_to_pb(api: DraApi, results: Mapping[str, str]) -> Any:
    """Build a NodeUnprepareResourcesResponse; every UID gets an entry, "" meaning success."""
    response = api.pb2.NodeUnprepareResourcesResponse()
    for uid, error in results.items():
        response.claims[uid].error = error
    return response


def unprepare_response_from_pb(response: Any) -> dict[str, str]:
    """Decode a NodeUnprepareResourcesResponse into error messages keyed by claim UID."""
    return {str(uid): str(entry.error) for uid, entry in response.claims.items()}
