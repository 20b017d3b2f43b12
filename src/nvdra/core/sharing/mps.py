"""MPS plans (gate ``MPSSupport``): one control daemon per config group, with its limits.

Invariants owned here (upstream-driver §5.2):
- the daemon id is ``<claimUID>-<first 5 hex digits of sha256(sorted device UUIDs joined by ",")>``, so
  a retried prepare names the same daemon;
- pinned-memory limits are MiB per device UUID (default, overridden per device, keys being UUIDs or
  indices into the sorted UUIDs) and must not exceed the device's memory; the record's JSON (and the
  daemon's ``MPS_PINNED_MEMORY_LIMITS``) writes each as ``"<MiB>M"``, as upstream does;
- compute mode EXCLUSIVE_PROCESS is set on the group's full GPUs only (a MIG device has no compute mode);
- MPS on a MIG device created on demand (DynamicMIG) is refused, as upstream ("not yet supported").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from nvdra.core.config import MpsConfig, resolve_pinned_memory_limits
from nvdra.core.effects import EffectRecord, effect_field
from nvdra.core.errors import ConfigError

__all__ = ["MPS_KIND", "MpsDevice", "MpsPlan", "mps_daemon_id", "plan_mps"]

MPS_KIND = "mps"
_MIB = 1024 * 1024


def _mib_to_json(limits: Mapping[str, int]) -> dict[str, str]:
    return {uuid: f"{mib}M" for uuid, mib in sorted(limits.items())}


def _mib_from_json(obj: Any) -> dict[str, int]:
    if not isinstance(obj, Mapping):
        raise ValueError(f'expected an object of UUID to "<MiB>M", got {obj!r}')
    out: dict[str, int] = {}
    for uuid, text in obj.items():
        if not isinstance(text, str) or not text.endswith("M") or not text[:-1].isdigit():
            raise ValueError(f'limit of {uuid}: expected "<MiB>M" (e.g. "1024M"), got {text!r}')
        out[str(uuid)] = int(text[:-1])
    return out


@attrs.frozen(kw_only=True)
class MpsPlan(EffectRecord):
    """One MPS control daemon: its id, the devices it serves, and their limits (MiB as integers)."""

    KIND: ClassVar[str] = MPS_KIND
    id: str
    uuids: tuple[str, ...]
    compute_mode_gpus: tuple[str, ...]  # the full GPUs, set to EXCLUSIVE_PROCESS
    active_thread_percentage: int | None = None
    pinned_memory_mib: Mapping[str, int] = effect_field(
        json="pinnedMemoryLimits", encode=_mib_to_json, decode=_mib_from_json, factory=dict
    )

    def pinned_memory_limits(self) -> dict[str, str]:
        """UUID → ``"<MiB>M"``, as the control daemon reads them."""
        return _mib_to_json(self.pinned_memory_mib)


@attrs.frozen(kw_only=True)
class MpsDevice:
    """A device served by an MPS daemon: its UUID (GPU-… or MIG-…), memory, and whether it is a full GPU."""

    uuid: str
    memory_bytes: int | None
    full_gpu: bool


def mps_daemon_id(claim_uid: str, uuids: Sequence[str]) -> str:
    """``<claimUID>-<5 hex digits>`` (see the module docstring)."""
    digest = hashlib.sha256(",".join(sorted(uuids)).encode()).hexdigest()
    return f"{claim_uid}-{digest[:5]}"


def plan_mps(
    claim_uid: str, config: MpsConfig, devices: Sequence[MpsDevice], *, path: str = "$.sharing.mpsConfig"
) -> MpsPlan:
    """The MPS record of one config group.

    Raises:
        ConfigError: a limit is too low, names an unknown device, or exceeds the device's memory.
    """
    uuids = [d.uuid for d in devices]
    limits = {u: int(v[:-1]) for u, v in resolve_pinned_memory_limits(config, uuids, path=path).items()}
    for device in devices:
        limit = limits.get(device.uuid)
        if limit is None or device.memory_bytes is None:
            continue
        total_mib = device.memory_bytes // _MIB
        if limit > total_mib:
            raise ConfigError(
                path,
                f"{limit}M",
                f"at most the device's memory ({total_mib}M)",
                reason=f"pinned memory limit for device {device.uuid} exceeds its memory:",
            )
    return MpsPlan(
        id=mps_daemon_id(claim_uid, uuids),
        uuids=tuple(sorted(uuids)),
        compute_mode_gpus=tuple(sorted(d.uuid for d in devices if d.full_gpu)),
        active_thread_percentage=config.default_active_thread_percentage,
        pinned_memory_mib=dict(sorted(limits.items())),
    )
