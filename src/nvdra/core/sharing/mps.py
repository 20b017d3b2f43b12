"""MPS plans (gate ``MPSSupport``): one control daemon per config group, with its limits.

Invariants owned here (upstream-driver §5.2):
- the daemon id is ``<claimUID>-<first 5 hex digits of sha256(sorted device UUIDs joined by ",")>``, so
  a retried prepare names the same daemon;
- pinned-memory limits are ``"<MiB>M"`` per device UUID (default, overridden per device, keys being UUIDs
  or indices into the sorted UUIDs) and must not exceed the device's memory;
- compute mode EXCLUSIVE_PROCESS is set on the group's full GPUs only (a MIG device has no compute mode);
- MPS on a MIG device created on demand (DynamicMIG) is refused, as upstream ("not yet supported").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import attrs

from nvdra.core.config import MpsConfig, resolve_pinned_memory_limits
from nvdra.core.errors import ConfigError

__all__ = ["MPS_KIND", "MpsDevice", "mps_daemon_id", "plan_mps"]

MPS_KIND = "mps"
_MIB = 1024 * 1024


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
) -> dict[str, Any]:
    """The MPS record of one config group.

    Raises:
        ConfigError: a limit is too low, names an unknown device, or exceeds the device's memory.
    """
    uuids = [d.uuid for d in devices]
    limits = resolve_pinned_memory_limits(config, uuids, path=path)
    for device in devices:
        limit = limits.get(device.uuid)
        if limit is None or device.memory_bytes is None:
            continue
        total_mib = device.memory_bytes // _MIB
        if int(limit[:-1]) > total_mib:
            raise ConfigError(
                path,
                limit,
                f"at most the device's memory ({total_mib}M)",
                reason=f"pinned memory limit for device {device.uuid} exceeds its memory:",
            )
    return {
        "kind": MPS_KIND,
        "id": mps_daemon_id(claim_uid, uuids),
        "uuids": sorted(uuids),
        "computeModeGpus": sorted(d.uuid for d in devices if d.full_gpu),
        "activeThreadPercentage": config.default_active_thread_percentage,
        "pinnedMemoryLimits": dict(sorted(limits.items())),
    }
