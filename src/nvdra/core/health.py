"""Device health policy: NVML health events → device taints, and the rule that clears them again.

Pure code: no NVML, no clock, no API. The NVML event monitor (``nvdra.nvml.health``) produces
:class:`HealthEvent` records; :class:`HealthState` folds them into one set of taints per published
device; the GPU plugin renders the taints into its ResourceSlice and the DRA health stream.

Taints (upstream-driver §3.6, gate ``NVMLDeviceHealthCheck``):

============================== ============ ============================================
condition                      key          effect
============================== ============ ============================================
XID not in the ignore list     ``…/xid``    ``NoSchedule`` (value: the XID number)
XID in the ignore list         ``…/xid``    ``None`` (informational)
GPU lost (GPU_IS_LOST)         ``…/gpu-lost`` ``NoSchedule``, on every device
cannot monitor a GPU           ``…/unmonitored`` ``None``
============================== ============ ============================================

Invariants owned here:
- at most one taint per key per device; a newer event with the same key replaces the value and the
  time, and never *lowers* the effect while the taint stands (an ignored XID 43 right after a fatal
  XID 48 must not make the GPU schedulable again; upstream overwrites, which does);
- recovery, which upstream lacks: an ``xid`` taint is removed once ``quiet_period`` seconds pass
  without another XID on that device; ``gpu-lost`` and ``unmonitored`` are removed when the GPU
  answers health queries again (a :attr:`EventKind.RESPONSIVE` event);
- single- and double-bit ECC events are recorded by the monitor but, as upstream, do not taint: the
  XID that follows a fatal ECC error (48) does;
- bad input changes nothing: :func:`parse_xids` skips malformed entries and reports them.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_IGNORED_XIDS",
    "TAINT_GPU_LOST",
    "TAINT_UNMONITORED",
    "TAINT_XID",
    "EventKind",
    "HealthEvent",
    "HealthPolicy",
    "HealthState",
    "Taint",
    "TaintEffect",
    "parse_xids",
]

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

TAINT_XID = "gpu.nvidia.com/xid"
TAINT_GPU_LOST = "gpu.nvidia.com/gpu-lost"
TAINT_UNMONITORED = "gpu.nvidia.com/unmonitored"

DEFAULT_IGNORED_XIDS: frozenset[int] = frozenset({13, 31, 43, 45, 68, 109})
"""Application-caused XIDs upstream ignores: graphics/compute faults, MMU faults of a user's kernel,
stopped or preempted channels (45 follows other errors), video processor exceptions, NVLink-C2C
user-induced errors."""

TaintEffect = Literal["None", "NoSchedule", "NoExecute"]
_SEVERITY: dict[str, int] = {"None": 0, "NoSchedule": 1, "NoExecute": 2}


class EventKind(enum.StrEnum):
    """What the monitor observed."""

    XID = "xid"
    SINGLE_BIT_ECC = "single-bit-ecc"
    DOUBLE_BIT_ECC = "double-bit-ecc"
    GPU_LOST = "gpu-lost"
    UNMONITORED = "unmonitored"
    RESPONSIVE = "responsive"


@attrs.frozen(kw_only=True)
class HealthEvent:
    """One observation about a GPU (``gpu_uuid`` None = every GPU of the node, e.g. a lost GPU that
    cannot be identified). ``gi_id``/``ci_id`` name a MIG device; None = the whole GPU. ``at`` is the
    monotonic-or-wall time the caller uses consistently (seconds)."""

    kind: EventKind
    gpu_uuid: str | None
    at: float
    xid: int = 0
    gi_id: int | None = None
    ci_id: int | None = None
    detail: str = ""


@attrs.frozen(kw_only=True)
class Taint:
    """A device taint; ``since`` is when the event that set it arrived (kept out of the API object:
    the API server stamps ``timeAdded`` itself when a taint appears or changes)."""

    key: str
    value: str = ""
    effect: TaintEffect = "NoSchedule"
    since: float = 0.0

    def to_api(self) -> dict[str, Any]:
        """The ResourceSlice ``DeviceTaint`` object."""
        out: dict[str, Any] = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out

    @property
    def blocking(self) -> bool:
        """True when the taint keeps new pods away (``NoSchedule`` or ``NoExecute``)."""
        return _SEVERITY[self.effect] > 0


def parse_xids(text: str) -> tuple[frozenset[int], tuple[str, ...]]:
    """Parse ``--additional-xids-to-ignore`` (comma list): (valid XIDs, malformed entries skipped).

    >>> parse_xids("48, 79,x,,-1")
    (frozenset({48, 79}), ('x', '-1'))
    """
    valid: set[int] = set()
    bad: list[str] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        if item.isdigit():
            valid.add(int(item))
        else:
            bad.append(item)
    return frozenset(valid), tuple(bad)


@attrs.frozen(kw_only=True)
class HealthPolicy:
    """Which XIDs are informational, and how long an XID taint stands without a repeat.

    ``quiet_period`` None disables time-based recovery (upstream's behaviour: taints stay until restart).
    """

    ignored_xids: frozenset[int] = DEFAULT_IGNORED_XIDS
    quiet_period: float | None = 300.0

    @classmethod
    def from_flags(cls, additional_xids: str = "", quiet_period: float | None = 300.0) -> HealthPolicy:
        """Upstream's ignore list plus ``--additional-xids-to-ignore`` (malformed entries skipped)."""
        extra, _ = parse_xids(additional_xids)
        return cls(ignored_xids=DEFAULT_IGNORED_XIDS | extra, quiet_period=quiet_period)

    def taint_for(self, event: HealthEvent) -> Taint | None:
        """The taint an event sets, or None for events that set none (ECC, RESPONSIVE)."""
        if event.kind is EventKind.XID:
            effect: TaintEffect = "None" if event.xid in self.ignored_xids else "NoSchedule"
            return Taint(key=TAINT_XID, value=str(event.xid), effect=effect, since=event.at)
        if event.kind is EventKind.GPU_LOST:
            return Taint(key=TAINT_GPU_LOST, effect="NoSchedule", since=event.at)
        if event.kind is EventKind.UNMONITORED:
            return Taint(key=TAINT_UNMONITORED, effect="None", since=event.at)
        return None


_CLEARED_BY_RESPONSE = frozenset({TAINT_GPU_LOST, TAINT_UNMONITORED})


@attrs.frozen(kw_only=True)
class HealthState:
    """Taints per device name (only devices with taints appear), each tuple sorted by key."""

    taints: Mapping[str, tuple[Taint, ...]] = attrs.field(factory=dict)

    def of(self, device: str) -> tuple[Taint, ...]:
        """The device's taints (empty when healthy)."""
        return self.taints.get(device, ())

    def healthy(self, device: str) -> bool:
        """No taint keeps pods away from the device."""
        return not any(t.blocking for t in self.of(device))

    def message(self, device: str) -> str:
        """A one-line reason for the health stream, e.g. ``gpu.nvidia.com/xid=48:NoSchedule``."""
        return ", ".join(
            f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in self.of(device)
        )

    def apply(self, event: HealthEvent, devices: Iterable[str], policy: HealthPolicy) -> HealthState:
        """Fold one event into the taints of ``devices`` (the devices the event concerns)."""
        targets = list(devices)
        if event.kind is EventKind.RESPONSIVE:
            return self._without(targets, lambda t: t.key in _CLEARED_BY_RESPONSE)
        taint = policy.taint_for(event)
        if taint is None or not targets:
            return self
        out = dict(self.taints)
        for device in targets:
            current = {t.key: t for t in out.get(device, ())}
            old = current.get(taint.key)
            new = taint
            if old is not None and _SEVERITY[old.effect] > _SEVERITY[taint.effect]:
                new = attrs.evolve(taint, effect=old.effect)
            current[taint.key] = new
            out[device] = tuple(current[k] for k in sorted(current))
        return HealthState(taints=out)

    def recover(self, now: float, policy: HealthPolicy) -> HealthState:
        """Drop XID taints older than the quiet period (nothing when the period is None)."""
        if policy.quiet_period is None:
            return self
        period = policy.quiet_period
        return self._without(list(self.taints), lambda t: t.key == TAINT_XID and now - t.since >= period)

    def next_expiry(self, policy: HealthPolicy) -> float | None:
        """When the next XID taint expires (None: none will)."""
        if policy.quiet_period is None:
            return None
        times = [t.since for ts in self.taints.values() for t in ts if t.key == TAINT_XID]
        return min(times) + policy.quiet_period if times else None

    def _without(self, devices: Sequence[str], drop: Any) -> HealthState:
        out = dict(self.taints)
        changed = False
        for device in devices:
            kept = tuple(t for t in out.get(device, ()) if not drop(t))
            if len(kept) != len(out.get(device, ())):
                changed = True
                if kept:
                    out[device] = kept
                else:
                    del out[device]
        return HealthState(taints=out) if changed else self

    def decorate(self, devices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Copies of rendered ResourceSlice devices with their ``taints`` set (others untouched)."""
        out = []
        for device in devices:
            taints = self.of(str(device.get("name", "")))
            copy = dict(device)
            if taints:
                copy["taints"] = [t.to_api() for t in taints]
            out.append(copy)
        return out
