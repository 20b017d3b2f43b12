"""Dynamic MIG in the GPU driver: plan ``mig.create`` records, apply them through the MIG executor.

A dynamic MIG device exists only as a published name until a claim that got it is prepared. The planner
turns each such allocated device into a :class:`MigCreate` record (JSON ``{"kind": "mig.create",
"device", "parent", "profileId", "start"}``); the executor creates the device at exactly that
placement, refreshes the capability files where the node is simulated, and returns the new device's
CDI edits (parent node plus the GI and CI capability nodes, as for static MIG). Undo destroys it (CI,
then GI) and turns MIG mode off again when the GPU is empty and that is reset-less.

Crash safety comes from the driver's intent log: the record is durable before the create, so a restart
rolls a half-made device back through ``undo``; :func:`sweep_unknown_mig` then destroys every live MIG
device that no completed claim owns (upstream's start-up sweep).
"""

from __future__ import annotations

__all__ = [
    "MIG_CREATE_KIND",
    "DynamicMigExecutor",
    "DynamicMigPlanner",
    "MigCreate",
    "dynamic_mig_resources",
    "sweep_unknown_mig",
]

import logging
from collections.abc import Callable
from typing import ClassVar

import attrs

from nvdra.cdi import DriverRoot, mig_edits
from nvdra.core.checkpoint import Checkpoint, ClaimState
from nvdra.core.devices import Inventory
from nvdra.core.effects import EffectCodec, EffectRecord
from nvdra.core.errors import ClaimError, NvmlError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.sharing import render_dynamic_mig
from nvdra.kubeletplugin.types import DriverResources, Pool, Slice
from nvdra.nvml import NvmlBackend
from nvdra.nvml.executor import MigExecutor, MigKey
from nvdra.plugins.gpu.effects import Applied, ClaimContext, expect

log = logging.getLogger(__name__)

MIG_CREATE_KIND = "mig.create"


@attrs.frozen(kw_only=True)
class MigCreate(EffectRecord):
    """Create MIG device ``device`` on GPU ``parent`` with this profile at this placement."""

    KIND: ClassVar[str] = MIG_CREATE_KIND
    device: str
    parent: str  # the parent GPU's UUID
    profile_id: int
    start: int

    @property
    def key(self) -> MigKey:
        """The MIG executor's key of this device."""
        return MigKey(parent_uuid=self.parent, profile_id=self.profile_id, start=self.start)


class DynamicMigPlanner:
    """Plans the creation of every on-demand MIG device of a claim."""

    def plan(self, ctx: ClaimContext) -> list[MigCreate]:
        """One ``mig.create`` per dynamic MIG device, in allocation order."""
        records = []
        for device in ctx.devices:
            if device.type != "mig" or device.mig is not None:
                continue
            if device.profile is None or device.placement is None:
                raise ClaimError(f"MIG device {device.name!r} has neither a live device nor a placement")
            records.append(
                MigCreate(
                    device=device.name,
                    parent=device.gpu.uuid,
                    profile_id=device.profile.id,
                    start=device.placement.start,
                )
            )
        return records


class DynamicMigExecutor:
    """Creates and destroys dynamic MIG devices; contributes their CDI edits."""

    records: tuple[type[EffectRecord], ...] = (MigCreate,)

    def __init__(
        self,
        executor: MigExecutor,
        driver_root: DriverRoot,
        *,
        minors: dict[str, int],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.executor = executor
        self.driver_root = driver_root
        self.minors = minors  # parent UUID -> minor number (for the device node and capability paths)
        self.on_change = on_change  # e.g. refresh a simulated driver root's capability files

    def apply(self, record: EffectRecord) -> Applied:
        """Create the device; its CDI edits replace the (non-existent) default ones."""
        plan = expect(record, MigCreate)
        key = plan.key
        try:
            created = self.executor.create(key)
        except NvmlError as exc:
            raise NvmlError(f"cannot create MIG device {plan.device}: {exc}") from exc
        if self.on_change is not None:
            self.on_change()
        minor = self.minors[key.parent_uuid]
        caps = self.driver_root.mig_caps(minor, created.gi_id, created.ci_id)
        return Applied(device_edits={plan.device: mig_edits(self.driver_root.installation(), minor, caps)})

    def undo(self, record: EffectRecord) -> None:
        """Destroy the device (fine if it was never made)."""
        self.executor.destroy(expect(record, MigCreate).key)
        if self.on_change is not None:
            self.on_change()


def sweep_unknown_mig(backend: NvmlBackend, gates: FeatureGates, checkpoint: Checkpoint) -> list[MigKey]:
    """At start (DynamicMIG): destroy live MIG devices no completed claim owns; disable MIG where safe."""
    if not gates.enabled(Gate.DYNAMIC_MIG):
        return []
    keep = [
        EffectCodec.read(record, MigCreate, f"claims[{claim.uid}].applied").key
        for claim in checkpoint.claims.values()
        if claim.state is ClaimState.PREPARE_COMPLETED
        for record in claim.applied
        if record.get("kind") == MIG_CREATE_KIND
    ]
    return MigExecutor(backend).sweep(keep)


def dynamic_mig_resources(
    inventory: Inventory, *, node_name: str, gates: FeatureGates, separate_counters: bool = True
) -> DriverResources | None:
    """The partitionable-device layout to publish under DynamicMIG; None when the classic one applies.

    ``separate_counters`` picks the Kubernetes >= 1.35 layout (counter sets in a slice of their own).
    """
    if not gates.enabled(Gate.DYNAMIC_MIG):
        return None
    layout = render_dynamic_mig(inventory)
    if layout is None:
        log.info("DynamicMIG is on but no GPU qualifies; publishing the classic device model")
        return None
    slices = tuple(
        Slice(devices=devices, shared_counters=counters)
        for devices, counters in layout.slices(separate_counters=separate_counters)
    )
    return DriverResources(pools={node_name: Pool(slices=slices)})
