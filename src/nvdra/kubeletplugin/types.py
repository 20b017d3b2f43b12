"""The toolkit's contracts: what a driver implements, what the API adapter offers, what gets published.

A DRA driver built on :mod:`nvdra.kubeletplugin` implements :class:`DraDriver`; the toolkit owns the
sockets, registration, claim fetching, serialization and ResourceSlice publishing. The toolkit talks
to the API server only through :class:`KubeApi`, which has an adapter on the ``kubernetes`` client
(:mod:`nvdra.kubeletplugin._kube`) and an in-memory fake (:class:`nvdra.kubeletplugin.FakeKube`).

Everything crossing the API boundary is a plain JSON-shaped ``dict`` (what the API server sends):
no client-library model objects, so the prepare path parses JSON once and nothing more.
"""

from __future__ import annotations

__all__ = [
    "ClaimRef",
    "DraDriver",
    "DriverResources",
    "KubeApi",
    "Pool",
    "PrepareResult",
    "PreparedDevice",
    "Slice",
    "device_status_key",
]

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

JsonObject = dict[str, Any]


def device_status_key(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What identifies a ResourceClaim ``status.devices[]`` entry: driver, pool, device and shareID
    (the list's map keys; a missing shareID is "")."""
    return (
        str(entry.get("driver", "")),
        str(entry.get("pool", "")),
        str(entry.get("device", "")),
        str(entry.get("shareID") or ""),
    )


@attrs.frozen(kw_only=True)
class ClaimRef:
    """A claim as the kubelet names it in NodePrepare/NodeUnprepare requests."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.uid}"


@attrs.frozen(kw_only=True)
class PreparedDevice:
    """One prepared device as returned to the kubelet.

    ``requests`` lists the claim requests this device serves (subrequest suffixes are stripped by the
    toolkit before sending); empty means every request of the claim.
    """

    requests: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...] = ()
    share_id: str | None = None


@attrs.frozen(kw_only=True)
class PrepareResult:
    """The outcome for one claim: either devices, or an error message (the kubelet retries later)."""

    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


class DraDriver(Protocol):
    """What a DRA driver implements. Calls are serialized by the toolkit unless configured otherwise.

    Both methods must answer every claim they are given (a missing entry is reported as an error).
    """

    def prepare_resource_claims(self, claims: Sequence[JsonObject]) -> Mapping[str, PrepareResult]:
        """Prepare allocated claims. Each claim is the full ResourceClaim object (JSON dict) that the
        toolkit fetched, checked for a matching UID and a non-empty ``status.allocation``.
        Returns a result per claim UID."""
        ...

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        """Undo prepares. Returns an error message per claim UID ("" = success). Unknown claims succeed."""
        ...

    def handle_error(self, error: BaseException, message: str) -> None:
        """Report a background error (slice publishing, health monitoring) the driver may act on."""
        ...


class KubeApi(Protocol):
    """The narrow slice of the Kubernetes API the toolkit and the drivers need.

    Errors are :class:`nvdra.core.errors.KubeApiError` subclasses (KubeNotFound, KubeConflict,
    KubeUnavailable). Objects are JSON dicts as the API server sends them.
    """

    def resource_api_version(self) -> str:
        """The newest ``resource.k8s.io`` version the server serves among v1, v1beta2, v1beta1."""
        ...

    def server_version(self) -> tuple[int, int]:
        """The server's Kubernetes ``(major, minor)``: what ResourceSlice layout it accepts depends on it."""
        ...

    def get_resource_claim(self, namespace: str, name: str) -> JsonObject:
        """GET one ResourceClaim. Must not wait behind a client-side limiter meant for background work."""
        ...

    def get_node(self, name: str) -> JsonObject:
        """GET a Node (for its UID and labels)."""
        ...

    def list_resource_slices(self, *, driver: str, node_name: str | None = None) -> list[JsonObject]:
        """LIST ResourceSlices of a driver (and node), field-selected on the server, in the v1 shape."""
        ...

    def create_resource_slice(self, body: JsonObject) -> JsonObject:
        """CREATE a ResourceSlice (``metadata.generateName`` allowed); body in ``body['apiVersion']``."""
        ...

    def update_resource_slice(self, body: JsonObject) -> JsonObject:
        """UPDATE (PUT) a ResourceSlice; ``metadata.resourceVersion`` is the optimistic-concurrency guard."""
        ...

    def delete_resource_slice(self, name: str, *, uid: str | None = None) -> None:
        """DELETE a ResourceSlice, with a UID precondition when given. Not-found is not an error."""
        ...


@attrs.frozen(kw_only=True)
class Slice:
    """Desired content of one ResourceSlice, devices in the v1 shape (``resource.k8s.io/v1``).

    The publisher lays slices out as the server wants them: from Kubernetes 1.35 shared counters go in
    slices of their own; on 1.33 and 1.34 each counter set goes into the slice of the devices that
    consume it (:func:`nvdra.kubeletplugin.publisher.split_pool`).
    """

    devices: tuple[JsonObject, ...] = ()
    shared_counters: tuple[JsonObject, ...] = ()


@attrs.frozen(kw_only=True)
class Pool:
    """Desired slices of one pool. The publisher splits a slice over the per-slice device limit."""

    slices: tuple[Slice, ...]
    generation: int | None = None  # None: the publisher bumps it when the pool's content changes


@attrs.frozen(kw_only=True)
class DriverResources:
    """Everything a driver wants published for its node, keyed by pool name (usually the node name)."""

    pools: Mapping[str, Pool]

    def with_devices(
        self, change: Callable[[tuple[JsonObject, ...]], Iterable[JsonObject]]
    ) -> DriverResources:
        """These pools and slices (generations, counters kept), each slice's devices ``change(devices)``."""
        return DriverResources(
            pools={
                name: attrs.evolve(
                    pool, slices=tuple(attrs.evolve(s, devices=tuple(change(s.devices))) for s in pool.slices)
                )
                for name, pool in self.pools.items()
            }
        )
