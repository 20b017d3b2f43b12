"""MPS settings of a sharing config, and the upstream rules that turn its memory limits into daemon input.

Invariants owned here:
- ``defaultActiveThreadPercentage`` is 0..100 inclusive (upstream's messages: "must not be negative",
  "must not be greater than 100");
- a pinned-memory limit becomes ``"<N>M"`` with N = bytes // 1024 // 1024 (upstream truncates, so
  ``10M`` → ``9M`` and ``1G`` → ``953M``); N must be positive;
- a per-device key is a device UUID of the group, or a decimal index into the group's *sorted* UUIDs;
  anything else is an invalid device.
"""

from __future__ import annotations

__all__ = [
    "MpsConfig",
    "Quantity",
    "decode_quantity",
    "decode_quantity_map",
    "encode_quantity_map",
    "normalize_memory_limit",
    "resolve_pinned_memory_limits",
]

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from nvdra.core.config._base import FieldProblem, child_path, json_name, raise_problems
from nvdra.core.errors import ConfigError
from nvdra.core.quantity import parse_quantity

_QUANTITY_ALLOWED = "a Kubernetes quantity such as 2Gi, 512Mi or 10G"
_INDEX = re.compile(r"^[+-]?\d+$")


_MAX_QUANTITY = 2**63  # Kubernetes' Quantity.Value() is an int64


def _check_quantity(_inst: object, _attr: object, text: str) -> None:
    if abs(parse_quantity(text)) >= _MAX_QUANTITY:
        raise ValueError(f"quantity {text!r} is out of range (magnitude must be below 2**63)")


@attrs.frozen
class Quantity:
    """A Kubernetes resource quantity, kept as written (``2Gi``) so that it encodes back unchanged."""

    text: str = attrs.field(validator=_check_quantity)

    @property
    def bytes(self) -> int:
        """The value as a whole number, rounded up as Kubernetes' ``Quantity.Value()`` does."""
        return math.ceil(parse_quantity(self.text))

    def __str__(self) -> str:
        return self.text


def decode_quantity(raw: Any) -> Quantity:
    """Decode a JSON string or number into a :class:`Quantity` (raises :class:`FieldProblem`)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise FieldProblem(raw, _QUANTITY_ALLOWED, reason="expected a quantity, got")
    text = raw if isinstance(raw, str) else str(raw)
    try:
        return Quantity(text)
    except ValueError as exc:
        raise FieldProblem(raw, _QUANTITY_ALLOWED, reason="not a quantity") from exc


def decode_quantity_map(raw: Any) -> dict[str, Quantity]:
    """Decode a JSON object of quantities, reporting every bad entry under its key."""
    if not isinstance(raw, Mapping):
        raise FieldProblem(
            raw,
            "a JSON object mapping device UUIDs or indices to quantities",
            reason="expected an object, got",
        )
    out: dict[str, Quantity] = {}
    problems: list[FieldProblem] = []
    for key, value in raw.items():
        suffix = child_path("", str(key))
        if not isinstance(key, str):
            problems.append(FieldProblem(key, "string keys", reason="invalid key", suffix=suffix))
            continue
        try:
            out[key] = decode_quantity(value)
        except FieldProblem as exc:
            problems.extend(
                FieldProblem(p.value, p.allowed, reason=p.reason, suffix=suffix) for p in exc.all()
            )
    if problems:
        raise FieldProblem(
            problems[0].value,
            problems[0].allowed,
            reason=problems[0].reason,
            suffix=problems[0].suffix,
            others=problems[1:],
        )
    return out


def encode_quantity_map(value: dict[str, Quantity] | None) -> dict[str, str] | None:
    """Encode the per-device limits as JSON (None stays None so the field is omitted)."""
    if value is None:
        return None
    return {k: v.text for k, v in value.items()}


@attrs.frozen(kw_only=True)
class MpsConfig:
    """Per-group MPS control-daemon settings (``sharing.mpsConfig``)."""

    default_active_thread_percentage: int | None = attrs.field(
        default=None, metadata=json_name("defaultActiveThreadPercentage")
    )
    default_pinned_device_memory_limit: Quantity | None = attrs.field(
        default=None, metadata=json_name("defaultPinnedDeviceMemoryLimit")
    )
    default_per_device_pinned_memory_limit: dict[str, Quantity] | None = attrs.field(
        default=None,
        # the dict is never mutated after decoding; hash by items so the frozen model stays hashable
        hash=False,
        metadata=json_name(
            "defaultPerDevicePinnedMemoryLimit", decode=decode_quantity_map, encode=encode_quantity_map
        ),
    )

    def problems(self, path: str) -> list[ConfigError]:
        """Everything wrong with these settings, each located under ``path``."""
        out: list[ConfigError] = []
        pct = self.default_active_thread_percentage
        pct_path = child_path(path, "defaultActiveThreadPercentage")
        if pct is not None and pct < 0:
            out.append(ConfigError(pct_path, pct, "0..100", reason="must not be negative:"))
        if pct is not None and pct > 100:
            out.append(ConfigError(pct_path, pct, "0..100", reason="must not be greater than 100:"))
        if self.default_pinned_device_memory_limit is not None:
            out += _limit_problems(
                child_path(path, "defaultPinnedDeviceMemoryLimit"), self.default_pinned_device_memory_limit
            )
        per_device_path = child_path(path, "defaultPerDevicePinnedMemoryLimit")
        for key, limit in (self.default_per_device_pinned_memory_limit or {}).items():
            out += _limit_problems(child_path(per_device_path, key), limit)
        return out


def normalize_memory_limit(limit: Quantity, *, path: str = "$") -> str:
    """Render a pinned-memory limit the way ``nvidia-cuda-mps-control`` takes it: ``"<MiB>M"``.

    Raises:
        ConfigError: the limit is below 1 MiB (upstream: "value set too low").
    """
    mib = limit.bytes // 1024 // 1024
    if mib <= 0:
        raise ConfigError(path, limit.text, "at least 1Mi", reason="invalid limit: value set too low:")
    return f"{mib}M"


def _limit_problems(path: str, limit: Quantity) -> list[ConfigError]:
    try:
        normalize_memory_limit(limit, path=path)
    except ConfigError as err:
        return [err]
    return []


def resolve_pinned_memory_limits(
    config: MpsConfig, uuids: Sequence[str], *, path: str = "$.sharing.mpsConfig"
) -> dict[str, str]:
    """The per-device pinned-memory limits of one MPS group, as upstream computes them at prepare time.

    Args:
        config: the group's (normalized) MPS settings.
        uuids: the UUIDs of the group's devices (any order; indices refer to the sorted list).
        path: where ``config`` sits, for error paths.

    Returns:
        UUID → ``"<N>M"``: the default limit for every device, overridden per device.

    Raises:
        ConfigError: a limit is too low, or a key is neither a UUID of the group nor an index into it
            (all problems reported together).
    """
    ordered = sorted(uuids)
    limits: dict[str, str] = {}
    problems: list[ConfigError] = []
    if config.default_pinned_device_memory_limit is not None:
        default_path = child_path(path, "defaultPinnedDeviceMemoryLimit")
        try:
            value = normalize_memory_limit(config.default_pinned_device_memory_limit, path=default_path)
            limits = dict.fromkeys(ordered, value)
        except ConfigError as err:
            problems.append(err)
    per_device_path = child_path(path, "defaultPerDevicePinnedMemoryLimit")
    for key, limit in (config.default_per_device_pinned_memory_limit or {}).items():
        key_path = child_path(per_device_path, key)
        uuid = _device_for_key(key, ordered)
        if uuid is None:
            allowed = f"a device UUID of this group or an index 0..{len(ordered) - 1}" if ordered else "none"
            problems.append(ConfigError(key_path, key, allowed, reason="invalid device"))
            continue
        try:
            limits[uuid] = normalize_memory_limit(limit, path=key_path)
        except ConfigError as err:
            problems.append(err)
    raise_problems(problems)
    return limits


def _device_for_key(key: str, ordered: Sequence[str]) -> str | None:
    if _INDEX.match(key):
        index = int(key)
        return ordered[index] if 0 <= index < len(ordered) else None
    return key if key in ordered else None
