"""The config API's codec: :mod:`nvdra.core.serde` with the config's rules, and its errors as ConfigErrors.

Invariants owned here (the rest, shared with the CDI records, are :mod:`nvdra.core.serde`'s):
- every field's wire name comes from its :func:`~nvdra.core.config._base.json_name` metadata, and so do
  error paths; ``None`` fields are omitted when encoding (Go's ``omitempty``);
- ``null`` is decoded by the field's type (an optional field takes it, a field's own decoder is not
  called on it);
- enums decode from their values only, quantities through :func:`~nvdra.core.config.mps.decode_quantity`;
- every decoding failure becomes a :class:`~nvdra.core.errors.ConfigError` naming a JSONPath (several at
  once: a :class:`~nvdra.core.config._base.ConfigErrors`); nothing else escapes :func:`structure`.
"""

from __future__ import annotations

__all__ = ["json_names", "structure", "unstructure"]

import enum
import functools
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import attrs

from nvdra.core.config._base import ConfigErrors, FieldProblem, allowed_names
from nvdra.core.config.mps import Quantity, decode_quantity
from nvdra.core.config.sharing import SharingStrategy
from nvdra.core.errors import ConfigError
from nvdra.core.serde import MISSING, Codec, Problem, WireRules

T = TypeVar("T")

_ENUM_REASONS: dict[type[enum.Enum], str] = {SharingStrategy: "unknown GPU sharing strategy"}


def json_names(cls: type) -> dict[str, str]:
    """Python attribute name → JSON name, for an attrs model of the config API."""
    return _codec(True).wire_names(cls)


def _structure_quantity(obj: Any, _t: type) -> Quantity:
    return decode_quantity(obj)


def _structure_enum(obj: Any, cls: type[enum.StrEnum]) -> enum.StrEnum:
    values = [str(m.value) for m in cls]
    if isinstance(obj, str) and obj in values:
        return cls(obj)
    raise FieldProblem(obj, allowed_names(values), reason=_ENUM_REASONS.get(cls, f"unknown {cls.__name__}"))


def _is_enum(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and attrs.has(t) and t is not Quantity


def _describe(t: Any) -> str:
    if _is_enum(t):
        return allowed_names(str(m.value) for m in t)
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _same_name(name: str) -> str:
    return name


def _config_error(p: Problem) -> ConfigError:
    if p.value is MISSING:
        return ConfigError(p.path, None, p.allowed, reason=f"{p.reason}, got")
    return ConfigError(p.path, p.value, p.allowed, reason=p.reason)


def _config_errors(problems: Sequence[Problem]) -> ConfigError:
    errors = [_config_error(p) for p in problems]
    return errors[0] if len(errors) == 1 else ConfigErrors(errors)


_RULES = WireRules(is_record=_is_model, default_name=_same_name, describe=_describe, error=_config_errors)


def _make_codec(strict: bool) -> Codec:
    """``strict``: reject unknown fields (user input); ``False`` drops them (re-reading stored configs
    written by another version)."""
    codec = Codec(_RULES, strict=strict)
    conv = codec.converter
    # class-based hooks: StrEnum precedes str in every member's MRO, so the enum hooks (not the str
    # ones) decode and encode enum fields
    conv.register_structure_hook(enum.StrEnum, _structure_enum)
    conv.register_structure_hook(Quantity, _structure_quantity)
    conv.register_unstructure_hook(Quantity, lambda q: q.text)
    conv.register_unstructure_hook(enum.StrEnum, lambda e: str(e.value))
    return codec


@functools.cache
def _codec(strict: bool) -> Codec:
    # Built once per mode and never mutated afterwards: private, so no caller can register hooks on it.
    return _make_codec(strict)


def structure(obj: Mapping[str, Any], cls: type[T], *, strict: bool, path: str = "$") -> T:
    """Decode a JSON object into model ``cls``.

    Raises:
        ConfigError: every problem found, as one error or a :class:`ConfigErrors` group.
    """
    return _codec(strict).structure(obj, cls, path)


def unstructure(model: Any) -> dict[str, Any]:
    """Encode a model as a JSON object (camelCase names, unset fields omitted)."""
    out: dict[str, Any] = _codec(True).unstructure(model)
    return out
