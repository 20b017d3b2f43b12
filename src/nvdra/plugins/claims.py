"""The claim bookkeeping both kubelet plugins' drivers share, said once.

A driver (GPU or ComputeDomain) reads a claim's reference from the ResourceClaim the kubelet's request
names, records its prepare in the checkpoint as a :class:`~nvdra.core.checkpoint.PreparedClaim`
(``PrepareStarted`` before it changes anything, ``PrepareCompleted`` after), answers the kubelet with
the prepared devices or one error line, and at start removes the CDI specs no checkpoint entry owns.
What differs between the drivers (what a prepare plans and changes on the node) stays in each driver.
"""

from __future__ import annotations

__all__ = [
    "CheckpointedDriver",
    "OwnedSpecs",
    "claim_entry",
    "claim_ref",
    "prepare_failed",
    "prepared_devices",
    "sweep_orphan_specs",
]

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from nvdra.core.checkpoint import Checkpoint, ClaimState, DeviceRecord, PreparedClaim
from nvdra.kubeletplugin.types import ClaimRef, PreparedDevice, PrepareResult

log = logging.getLogger(__name__)


class OwnedSpecs(Protocol):
    """The claim CDI specs a driver writes, by claim UID."""

    def claim_uids(self) -> set[str]:
        """UIDs of the claims that have a spec on disk."""
        ...

    def remove(self, claim_uid: str) -> None:
        """Remove the claim's spec (fine if absent)."""
        ...


def claim_ref(claim: Mapping[str, Any]) -> ClaimRef:
    """The namespace, name and UID of a ResourceClaim (JSON); missing fields are empty."""
    meta = claim.get("metadata") or {}
    return ClaimRef(namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", ""))


def claim_entry(
    ref: ClaimRef,
    state: ClaimState,
    devices: Sequence[DeviceRecord],
    applied: Sequence[Mapping[str, Any]] = (),
) -> PreparedClaim:
    """The checkpoint entry of ``ref`` at ``state``, with its devices and the JSON of its effects."""
    return PreparedClaim(
        uid=ref.uid,
        namespace=ref.namespace,
        name=ref.name,
        state=state,
        devices=tuple(devices),
        applied=tuple(applied),
    )


def prepare_failed(ref: ClaimRef, why: str) -> PrepareResult:
    """The kubelet's answer for a claim that could not be prepared."""
    return PrepareResult(error=f"error preparing devices for claim {ref}: {why}")


def prepared_devices(devices: Sequence[DeviceRecord]) -> tuple[PreparedDevice, ...]:
    """The kubelet's answer for a prepared claim: its devices as recorded."""
    return tuple(
        PreparedDevice(
            requests=d.requests,
            pool_name=d.pool_name,
            device_name=d.device_name,
            cdi_device_ids=d.cdi_device_ids,
            share_id=d.share_id,
        )
        for d in devices
    )


def sweep_orphan_specs(specs: OwnedSpecs, checkpoint: Checkpoint) -> list[str]:
    """Remove the CDI specs of claims the checkpoint does not hold (a crash between the two writes);
    the UIDs removed, in order."""
    orphans = sorted(specs.claim_uids() - set(checkpoint.claims))
    for uid in orphans:
        log.warning("removing CDI spec of claim %s that no checkpoint entry owns", uid)
        specs.remove(uid)
    return orphans


class CheckpointedDriver:
    """The part of a driver both plugins do the same way: answer with its checkpoint, log background
    errors, and the bookkeeping steps of this module (as ``self._claim_entry``, ``self._failed``,
    ``self._prepared``, ``self._sweep_specs``).

    A subclass keeps its current :class:`~nvdra.core.checkpoint.Checkpoint` in ``_checkpoint``.
    """

    _checkpoint: Checkpoint

    def checkpoint(self) -> Checkpoint:
        """The current checkpoint (a snapshot)."""
        return self._checkpoint

    def handle_error(self, error: BaseException, message: str) -> None:
        """Background errors (slice publishing) are logged; the publisher retries on its own."""
        log.error("%s: %s", message, error)

    # the shared steps of the subclasses' prepare and unprepare
    _claim_entry = staticmethod(claim_entry)
    _failed = staticmethod(prepare_failed)
    _prepared = staticmethod(prepared_devices)
    _sweep_specs = staticmethod(sweep_orphan_specs)
