"""Consumable shares (upstream's ``ConsumableShares`` gate, ``--consumable-shares``; KEP-5075).

With the gate on and ``--consumable-shares`` set, every full GPU and MIG device is published with
``allowMultipleAllocations: true`` so the scheduler itself packs several claims onto one device, each
consuming part of its ``memory`` capacity (and, for a number N, one or more of N ``shares``):

==============  ==========================================================================
option          what each device publishes
==============  ==========================================================================
``disabled``    nothing extra (the default; an empty value means the same)
``unlimited``   ``memory`` policy: default 0, range 0..memory, step 1Mi (claims that ask
                nothing consume nothing, so any number of them fit)
``memory``      ``memory`` policy: default = all of it, range 1Mi..memory, step 1Mi
N (> 0)         ``memory`` as for ``unlimited``, and ``shares: N`` with default 1, range
                1..N, step 1 (at most N claims)
==============  ==========================================================================

The published ``memory`` is rounded down to a whole MiB: the API server requires the range's max and
default to be multiples of its step. Upstream's names and values; VFIO and partition devices are
never shared. Pure: the functions take and return device dicts (v1 shape).
"""

from __future__ import annotations

__all__ = [
    "CONSUMABLE_SHARES_ENV",
    "CONSUMABLE_SHARES_FLAG",
    "MIB",
    "SHARED_DEVICE_TYPES",
    "SharesOption",
    "apply_consumable_shares",
    "parse_consumable_shares",
]

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from nvdra.core.errors import ConfigError
from nvdra.core.quantity import format_bytes, parse_quantity

CONSUMABLE_SHARES_FLAG = "--consumable-shares"
CONSUMABLE_SHARES_ENV = "CONSUMABLE_SHARES"
MIB = 1024 * 1024
SHARED_DEVICE_TYPES = frozenset({"gpu", "mig"})
"""Values of the ``type`` attribute of devices that may be shared (upstream: GPUs and MIG devices)."""

_ALLOWED = "'disabled', 'memory', 'unlimited', or a positive integer"


@attrs.frozen
class SharesOption:
    """A parsed ``--consumable-shares`` value: ``mode`` is disabled, unlimited, memory or count."""

    mode: str
    count: int = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def __str__(self) -> str:
        return str(self.count) if self.mode == "count" else self.mode


def parse_consumable_shares(text: str, *, gate_enabled: bool) -> SharesOption:
    """Parse ``--consumable-shares`` as upstream does, checking the ``ConsumableShares`` gate.

    Raises:
        ConfigError: an unknown value, or a value other than ``disabled`` with the gate off.
    """
    value = text.strip()
    if value in ("", "disabled"):
        return SharesOption("disabled")
    if value in ("unlimited", "memory"):
        option = SharesOption(value)
    else:
        try:
            count = int(value, 10)
        except ValueError:
            count = 0
        if count <= 0 or not value.lstrip("+").isdigit():
            raise ConfigError(f"{CONSUMABLE_SHARES_FLAG} ({CONSUMABLE_SHARES_ENV})", text, _ALLOWED)
        option = SharesOption("count", count)
    if not gate_enabled:
        raise ConfigError(
            CONSUMABLE_SHARES_FLAG,
            value,
            "'disabled' while the gate is off (--feature-gates ConsumableShares=true)",
            reason="needs the ConsumableShares feature gate:",
        )
    return option


def _range(minimum: str, maximum: str, step: str) -> dict[str, str]:
    return {"min": minimum, "max": maximum, "step": step}


def _shared(device: Mapping[str, Any], option: SharesOption) -> dict[str, Any]:
    out = dict(device)
    out["allowMultipleAllocations"] = True
    capacity = dict(out.get("capacity") or {})
    memory = capacity.get("memory")
    if memory is None:  # NVML reported no memory: shareable, nothing to divide (as upstream)
        out["capacity"] = capacity
        return out
    whole = int(parse_quantity(memory["value"]))
    top = format_bytes(whole - whole % MIB)
    step = format_bytes(MIB)
    if option.mode == "memory":
        policy = {"default": top, "validRange": _range(step, top, step)}
    else:
        policy = {"default": "0", "validRange": _range("0", top, step)}
    capacity["memory"] = {"value": top, "requestPolicy": policy}
    if option.mode == "count":
        n = str(option.count)
        capacity["shares"] = {
            "value": n,
            "requestPolicy": {"default": "1", "validRange": _range("1", n, "1")},
        }
    out["capacity"] = dict(sorted(capacity.items()))
    return out


def apply_consumable_shares(
    devices: Sequence[Mapping[str, Any]], option: SharesOption
) -> list[dict[str, Any]]:
    """The devices with GPUs and MIG devices made shareable per ``option`` (others unchanged)."""
    if not option.enabled:
        return [dict(d) for d in devices]
    out = []
    for device in devices:
        kind = ((device.get("attributes") or {}).get("type") or {}).get("string")
        out.append(_shared(device, option) if kind in SHARED_DEVICE_TYPES else dict(device))
    return out
