"""Consumable capacity (KEP-5075, feature DRAConsumableCapacity) as the scheduler applies it.

For every capacity a candidate device publishes, the scheduler works out what the request consumes:

- not asked for: the policy's ``default``, else the whole capacity;
- asked for, no ``requestPolicy``: what was asked;
- ``validRange`` (with ``min``): below ``min`` → ``min``; else, with a ``step``, rounded up to
  ``min + n·step``; ``validValues``: the first listed value at or above the request (else the request).

The consumption then must not violate the policy (equal to ``default`` always passes; else above
``max`` or off the step grid fails; with ``validValues`` it must be one of them), and what the device's
earlier allocations consumed, plus what this allocation run already placed on it, plus this, must not
exceed the capacity's value. Asking for a capacity the device does not publish rules the device out.
Only a device with ``allowMultipleAllocations`` records consumption (``consumedCapacity`` and a
``shareID`` in the allocation result); the check itself runs for every device.

Pure functions over API-shaped dicts and exact :class:`~decimal.Decimal` quantities.
"""

from __future__ import annotations

__all__ = [
    "Consumption",
    "capacity_consumption",
    "consumed_capacity",
    "format_capacity",
    "shares_device",
]

from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

from nvdra.alloc.model import AllocationInputError, DeviceId
from nvdra.alloc.values import readable_quantity
from nvdra.core.quantity import format_bytes, parse_quantity

Consumption = dict[str, Decimal]
"""Capacity name → quantity consumed (one allocation, or a device's sum)."""


def shares_device(device: Mapping[str, Any]) -> bool:
    """Whether the device allows multiple allocations (consumable capacity, shared by claims)."""
    return device.get("allowMultipleAllocations") is True


def format_capacity(value: Decimal) -> str:
    """A quantity as the API spells it: whole numbers in canonical binary form, else plain decimal."""
    if value == value.to_integral_value() and value >= 0:
        return format_bytes(int(value))
    return format(value.normalize(), "f")


def _q(raw: Any, where: str) -> Decimal:
    try:
        return parse_quantity(raw)
    except ValueError as exc:
        raise AllocationInputError(f"{where}: {exc}") from exc


def _round_up(asked: Decimal, policy: Mapping[str, Any], where: str) -> Decimal:
    rng = policy.get("validRange")
    if rng is not None and rng.get("min") is not None:
        low = _q(rng["min"], f"{where}.validRange.min")
        if asked < low:
            return low
        if rng.get("step") is None:
            return asked
        step = _q(rng["step"], f"{where}.validRange.step")
        n = ((asked - low) / step).to_integral_value(rounding=ROUND_CEILING)
        return low + n * step
    values = policy.get("validValues")
    if values is not None:
        for i, raw in enumerate(values):
            v = _q(raw, f"{where}.validValues[{i}]")
            if asked <= v:
                return v
    return asked


def _violation(value: Decimal, policy: Mapping[str, Any] | None, where: str) -> str:
    if policy is None:
        return ""
    default = policy.get("default")
    if default is not None and value == _q(default, f"{where}.default"):
        return ""
    rng = policy.get("validRange")
    if rng is not None:
        if rng.get("max") is not None and value > _q(rng["max"], f"{where}.validRange.max"):
            return f"above the policy's max {rng['max']}"
        if rng.get("step") is not None:
            low = _q(rng.get("min", 0), f"{where}.validRange.min")
            step = _q(rng["step"], f"{where}.validRange.step")
            if (value - low) % step != 0:
                return f"not min {rng.get('min')} plus a multiple of step {rng['step']}"
        return ""
    values = policy.get("validValues") or []
    if values and all(value != _q(v, f"{where}.validValues") for v in values):
        return f"not one of the policy's validValues {', '.join(str(v) for v in values)}"
    return ""


def capacity_consumption(
    device: Mapping[str, Any],
    requests: Mapping[str, Any],
    already: Mapping[str, Decimal] | None = None,
) -> tuple[Consumption | None, str]:
    """What allocating ``device`` for a request with ``capacity.requests`` = ``requests`` consumes.

    ``already``: what the device's earlier allocations and this run's placements consumed, summed.
    Returns ``(consumption, "")`` when the device can take the request, else ``(None, why)``.

    Raises:
        AllocationInputError: a quantity in the device or the request does not parse.
    """
    capacity = device.get("capacity") or {}
    missing = sorted(set(requests) - set(capacity))
    if missing:
        return None, f"the request asks for capacity {', '.join(missing)}, which the device does not publish"
    used = already or {}
    out: Consumption = {}
    for name in sorted(capacity):
        cap = capacity[name] or {}
        where = f"device {device.get('name')} capacity {name}"
        total = _q(cap.get("value", 0), f"{where}.value")
        policy = cap.get("requestPolicy")
        if name in requests:
            asked = _q(requests[name], f"capacity.requests[{name}]")
            value = _round_up(asked, policy, f"{where}.requestPolicy") if policy else asked
        elif policy is not None and policy.get("default") is not None:
            value = _q(policy["default"], f"{where}.requestPolicy.default")
        else:
            value = total
        bad = _violation(value, policy, f"{where}.requestPolicy")
        if bad:
            return None, f"capacity {name}: consuming {readable_quantity(value)} is {bad}"
        before = used.get(name, Decimal(0))
        if before + value > total:
            return None, (
                f"capacity {name}: needs {readable_quantity(value)}, "
                f"{readable_quantity(max(total - before, Decimal(0)))} of {readable_quantity(total)} left"
            )
        out[name] = value
    return out, ""


def consumed_capacity(claims: Iterable[Mapping[str, Any]]) -> dict[DeviceId, Consumption]:
    """Per device, what allocated claims' results consumed (``consumedCapacity``), summed.

    Raises:
        AllocationInputError: a consumed quantity does not parse.
    """
    out: dict[DeviceId, Consumption] = {}
    for claim in claims:
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for i, r in enumerate((allocation.get("devices") or {}).get("results") or []):
            consumed = r.get("consumedCapacity") or {}
            if not consumed:
                continue
            key = (str(r["driver"]), str(r["pool"]), str(r["device"]))
            total = out.setdefault(key, {})
            for name, raw in consumed.items():
                where = f"status.allocation.devices.results[{i}].consumedCapacity[{name}]"
                total[name] = total.get(name, Decimal(0)) + _q(raw, where)
    return out
