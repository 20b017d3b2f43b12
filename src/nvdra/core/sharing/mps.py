"""MPS plans (gate ``MPSSupport``): one control daemon per config group, with its limits.

Invariants owned here (upstream-driver §5.2):
- the daemon id is ``<claimUID>-<first 5 hex digits of sha256(sorted device UUIDs joined by ",")>``, so
  a retried prepare names the same daemon;
- pinned-memory limits are MiB per device UUID (default, overridden per device, keys being UUIDs or
  indices into the sorted UUIDs) and must not exceed the device's memory; the record's JSON (and the
  daemon's ``MPS_PINNED_MEMORY_LIMITS``) writes each as ``"<MiB>M"``, as upstream does;
- compute mode EXCLUSIVE_PROCESS is set on the group's full GPUs only (a MIG device has no compute mode);
- MPS on a MIG device created on demand (DynamicMIG) is refused, as upstream ("not yet supported");
- consumable shares (nvdra, past upstream): claims sharing a GPU share one daemon, named after the GPUs
  alone (``shared-<5 hex digits>``), and each claim's processes are held to what the scheduler counted
  by MPS's client-side limits: its consumed ``memory`` as ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` and its
  share as ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (:func:`share_limits`).
"""

from __future__ import annotations

__all__ = ["MPS_KIND", "MpsDevice", "MpsPlan", "ShareLimits", "mps_daemon_id", "plan_mps", "share_limits"]

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from nvdra.core.config import MpsConfig, resolve_pinned_memory_limits
from nvdra.core.effects import EffectRecord, effect_field
from nvdra.core.errors import ConfigError

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
    shared: bool = effect_field(omit_default=True, default=False)
    """A daemon of GPUs that consumable-share claims share: kept while another share holds them."""
    client_pinned_mib: Mapping[str, int] = effect_field(
        json="clientPinnedMemoryLimits",
        omit_default=True,
        encode=_mib_to_json,
        decode=_mib_from_json,
        factory=dict,
    )
    client_thread_percentage: int | None = effect_field(omit_default=True, default=None)

    def client_env(self) -> tuple[str, ...]:
        """The claim's own MPS client limits (a shared daemon): environment of its containers."""
        env = []
        if self.client_pinned_mib:
            limits = ",".join(f"{u}={m}M" for u, m in sorted(self.client_pinned_mib.items()))
            env.append(f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={limits}")
        if self.client_thread_percentage is not None:
            env.append(f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={self.client_thread_percentage}")
        return tuple(env)

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


@attrs.frozen(kw_only=True)
class ShareLimits:
    """What consumable-share claims consumed of a device: ``memory`` bytes, and shares of a total."""

    memory_bytes: int | None = None
    shares: int | None = None
    total_shares: int | None = None


def share_limits(device: MpsDevice, share: ShareLimits) -> tuple[int | None, int | None]:
    """(pinned MiB, active-thread percentage) a share's processes get on ``device``.

    Memory: what the share consumed, in whole MiB (the scheduler counted that much; 0 consumed, as with
    ``unlimited``, sets no limit). Threads: the share's part of N shares, else its part of the memory,
    rounded up to a whole percent, at least 1 (MPS takes 1..100); None when neither is known.
    """
    mib = share.memory_bytes // _MIB if share.memory_bytes else None
    pct: int | None = None
    if share.shares and share.total_shares:
        pct = max(1, min(100, -(-100 * share.shares // share.total_shares)))
    elif share.memory_bytes and device.memory_bytes:
        pct = max(1, min(100, -(-100 * share.memory_bytes // device.memory_bytes)))
    return (mib or None), pct


def plan_mps(
    claim_uid: str,
    config: MpsConfig,
    devices: Sequence[MpsDevice],
    *,
    path: str = "$.sharing.mpsConfig",
    shares: Mapping[str, ShareLimits] | None = None,
) -> MpsPlan:
    """The MPS record of one config group.

    ``shares``: the group's devices are consumable shares (UUID → what the claim consumed): the daemon
    is the GPUs' shared one, the claim's limits are client-side (its config's own limits still cap them).

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
    if shares:
        client: dict[str, int] = {}
        pcts: list[int] = []
        for device in devices:
            mib, pct = share_limits(device, shares.get(device.uuid, ShareLimits()))
            own = limits.get(device.uuid)
            capped = min(x for x in (mib, own) if x is not None) if (mib or own) else None
            if capped is not None:
                client[device.uuid] = capped
            if pct is not None:
                pcts.append(pct)
        own_pct = config.default_active_thread_percentage
        pct = min([*pcts, *([own_pct] if own_pct is not None else [])], default=None)
        return MpsPlan(
            id=mps_daemon_id("shared", uuids),
            uuids=tuple(sorted(uuids)),
            compute_mode_gpus=tuple(sorted(d.uuid for d in devices if d.full_gpu)),
            shared=True,
            client_pinned_mib=dict(sorted(client.items())),
            client_thread_percentage=pct,
        )
    return MpsPlan(
        id=mps_daemon_id(claim_uid, uuids),
        uuids=tuple(sorted(uuids)),
        compute_mode_gpus=tuple(sorted(d.uuid for d in devices if d.full_gpu)),
        active_thread_percentage=config.default_active_thread_percentage,
        pinned_memory_mib=dict(sorted(limits.items())),
    )
