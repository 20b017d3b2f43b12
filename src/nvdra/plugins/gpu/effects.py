"""Side effects of a prepare as intent records: planned purely, logged first, applied, undone in reverse.

A claim's prepare may change the node: set a GPU's time slice, start an MPS daemon, create a MIG
device, activate a Fabric Manager partition, bind a GPU to vfio-pci. Each such change is an *effect*,
described by a typed record (an attrs subclass of :class:`~nvdra.core.effects.EffectRecord`) that names
what to do (never a handle); the checkpoint holds its JSON form ``{"kind": "<kind>", ...}``.

Rules the driver keeps, and that executors rely on:

1. Planners are pure: ``plan(ctx)`` returns records or raises a ``UserError`` to refuse the claim, and
   refusing changes nothing.
2. Every planned record is written into the claim's ``PrepareStarted`` checkpoint entry (``applied``)
   *before* the first one is applied. A crash at any point therefore leaves a record of every change
   that may have been made.
3. Records are applied in plan order. If one fails, every record of the claim is undone in reverse —
   including the failed one and those never reached — so ``undo`` must be idempotent and must accept
   a record whose change never happened (e.g. destroying a MIG device that was never created).
4. Unprepare, and the rollback of ``PrepareStarted`` claims at start, call ``undo`` in reverse order.

``apply`` returns :class:`Applied`: container edits the effect contributes to the claim's CDI spec,
per device (replacing that device's default edits, e.g. a newly created MIG device's capability nodes)
and for the whole claim (e.g. the MPS pipe directory mount).
"""

from __future__ import annotations

__all__ = ["Applied", "ClaimContext", "EffectExecutor", "EffectPlanner", "Effects", "expect"]

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs

from nvdra.cdi import ContainerEdits
from nvdra.core.config import ConfigGroup
from nvdra.core.effects import EffectCodec, EffectRecord, effect_to_json
from nvdra.core.errors import ConfigError
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.gpu.devices import AllocatableDevice

R = TypeVar("R", bound=EffectRecord)


def expect(record: EffectRecord, cls: type[R]) -> R:
    """``record`` as a ``cls``; a record of another type reaching an executor is a bug (ConfigError)."""
    if not isinstance(record, cls):
        raise ConfigError("effect.kind", record.kind, cls.KIND, reason="record handed to the wrong executor:")
    return record


@attrs.frozen(kw_only=True)
class ClaimContext:
    """What a planner sees of one claim: its devices (in allocation order) and its config groups."""

    ref: ClaimRef
    devices: tuple[AllocatableDevice, ...]
    groups: tuple[ConfigGroup, ...]
    results: tuple[Mapping[str, Any], ...]  # this driver's allocation results, same order as devices

    def group_devices(self, group: ConfigGroup) -> tuple[AllocatableDevice, ...]:
        """The allocated devices a config group applies to."""
        names = {d.device for d in group.devices}
        return tuple(d for d in self.devices if d.name in names)


@attrs.frozen(kw_only=True)
class Applied:
    """CDI edits an applied effect contributes."""

    device_edits: Mapping[str, ContainerEdits] = attrs.field(factory=dict)
    claim_edits: ContainerEdits = attrs.field(factory=ContainerEdits)


class EffectPlanner(Protocol):
    """Turns a claim into effect records (pure)."""

    def plan(self, ctx: ClaimContext) -> Sequence[EffectRecord]:
        """Records to apply for this claim, in order; raise a UserError to refuse the claim."""
        ...


class EffectExecutor(Protocol):
    """Performs and undoes the effects of some record types."""

    @property
    def records(self) -> tuple[type[EffectRecord], ...]:
        """The record types this executor applies and undoes."""
        ...

    def apply(self, record: EffectRecord) -> Applied:
        """Make the change; raise an NvdraError on failure."""
        ...

    def undo(self, record: EffectRecord) -> None:
        """Revert the change; idempotent, and fine if the change never happened."""
        ...


class Effects:
    """The planners (run in order) and executors (by kind) the GPU driver uses."""

    def __init__(
        self, planners: Sequence[EffectPlanner] = (), executors: Sequence[EffectExecutor] = ()
    ) -> None:
        self.planners = tuple(planners)
        self._executors: dict[str, EffectExecutor] = {}
        for executor in executors:
            for cls in executor.records:
                if cls.KIND in self._executors:
                    raise ConfigError(
                        "effects", cls.KIND, "one executor per effect kind", reason="duplicate kind"
                    )
                self._executors[cls.KIND] = executor
        self._codec = EffectCodec(cls for executor in executors for cls in executor.records)

    def plan(self, ctx: ClaimContext) -> tuple[EffectRecord, ...]:
        """All planners' records for a claim, in planner order."""
        records: list[EffectRecord] = []
        for planner in self.planners:
            records.extend(planner.plan(ctx))
        for record in records:
            self._executor(
                record.kind
            )  # an unknown kind is a bug in a planner: refuse before changing anything
        return tuple(records)

    def apply(self, record: EffectRecord) -> Applied:
        """Apply one record through its executor."""
        return self._executor(record.kind).apply(record)

    def undo(self, record: EffectRecord) -> None:
        """Undo one record through its executor."""
        self._executor(record.kind).undo(record)

    @staticmethod
    def to_json(record: EffectRecord) -> dict[str, Any]:
        """A record's checkpoint form."""
        return effect_to_json(record)

    def from_json(self, obj: Mapping[str, Any], where: str = "record") -> EffectRecord:
        """A checkpoint entry's record (CheckpointError when its kind has no executor or it is malformed)."""
        return self._codec.from_json(obj, where)

    def executor(self, kind: str) -> EffectExecutor:
        """The executor registered for ``kind`` (ConfigError when none is): for tools that read state back."""
        return self._executor(kind)

    def _executor(self, kind: str) -> EffectExecutor:
        executor = self._executors.get(kind)
        if executor is None:
            raise ConfigError("effect.kind", kind, ", ".join(sorted(self._executors)) or "none registered")
        return executor
