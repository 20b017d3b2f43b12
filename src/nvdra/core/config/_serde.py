"""The cattrs converter of the config API, and the translation of its errors into ConfigErrors.

Invariants owned here:
- converters are explicit instances built by :func:`make_converter` (never cattrs' global one), with
  ``detailed_validation`` so that every problem of a document is collected, and ``forbid_extra_keys``
  in strict mode;
- JSON primitives are checked as Go's ``encoding/json`` would: no string→number or number→string
  coercion, no bool for a number; integers are accepted for float fields (the API server stores
  ``600.0`` as ``600``), floats are not accepted for integer fields;
- field names on the wire come from each field's :func:`~nvdra.core.config._base.json_name` metadata,
  and so do error paths; ``None`` fields are omitted when encoding (Go's ``omitempty``);
- every decoding failure becomes a :class:`~nvdra.core.errors.ConfigError` naming a JSONPath; nothing
  else escapes :func:`structure`.
"""

from __future__ import annotations

__all__ = ["json_names", "make_converter", "structure", "unstructure"]

import enum
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from nvdra.core.config._base import (
    DECODE_KEY,
    ENCODE_KEY,
    JSON_KEY,
    FieldProblem,
    allowed_names,
    child_path,
    mapping_or_problem,
    raise_problems,
)
from nvdra.core.config.mps import Quantity, decode_quantity
from nvdra.core.config.sharing import SharingStrategy
from nvdra.core.errors import ConfigError

T = TypeVar("T")

# the generators take per-attribute overrides as **kwargs, which their stubs cannot type
_make_structure_fn: Callable[..., Callable[[Any, type], Any]] = make_dict_structure_fn
_make_unstructure_fn: Callable[..., Callable[[Any], dict[str, Any]]] = make_dict_unstructure_fn

_ENUM_REASONS: dict[type[enum.Enum], str] = {SharingStrategy: "unknown GPU sharing strategy"}


def json_names(cls: type) -> dict[str, str]:
    """Python attribute name → JSON name, for an attrs model of the config API."""
    return {a.name: a.metadata.get(JSON_KEY, a.name) for a in attrs.fields(cls)}


def _structure_str(obj: Any, _t: type) -> str:
    if not isinstance(obj, str):
        raise FieldProblem(obj, "a string", reason="expected a string, got")
    return obj


def _structure_int(obj: Any, _t: type) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise FieldProblem(obj, "an integer", reason="expected an integer, got")
    return obj


def _structure_float(obj: Any, _t: type) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise FieldProblem(obj, "a number", reason="expected a number, got")
    if isinstance(obj, float) and not math.isfinite(obj):
        raise FieldProblem(obj, "a finite number", reason="expected a finite number, got")
    return float(obj)


def _structure_bool(obj: Any, _t: type) -> bool:
    if not isinstance(obj, bool):
        raise FieldProblem(obj, "true or false", reason="expected a boolean, got")
    return obj


def _structure_quantity(obj: Any, _t: type) -> Quantity:
    return decode_quantity(obj)


def _structure_enum(obj: Any, cls: type[enum.StrEnum]) -> enum.StrEnum:
    values = [str(m.value) for m in cls]
    if isinstance(obj, str) and obj in values:
        return cls(obj)
    raise FieldProblem(obj, allowed_names(values), reason=_ENUM_REASONS.get(cls, f"unknown {cls.__name__}"))


def _field_decoder(decode: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(obj: Any, _t: Any) -> Any:
        return None if obj is None else decode(obj)

    return hook


def _field_encoder(encode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return encode


def _class_structure_hook(conv: cattrs.Converter, cls: type) -> Callable[[Any, type], Any]:
    overrides = {
        a.name: override(
            rename=a.metadata.get(JSON_KEY, a.name),
            struct_hook=_field_decoder(a.metadata[DECODE_KEY]) if DECODE_KEY in a.metadata else None,
        )
        for a in attrs.fields(cls)
    }
    inner = _make_structure_fn(cls, conv, **overrides)

    def structure_model(obj: Any, _t: type) -> Any:
        # guard first: the generated function would index into a string or list and fail obscurely
        return inner(mapping_or_problem(obj, cls.__name__), cls)

    return structure_model


def _class_unstructure_hook(conv: cattrs.Converter, cls: type) -> Callable[[Any], dict[str, Any]]:
    overrides = {
        a.name: override(
            rename=a.metadata.get(JSON_KEY, a.name),
            unstruct_hook=_field_encoder(a.metadata[ENCODE_KEY]) if ENCODE_KEY in a.metadata else None,
        )
        for a in attrs.fields(cls)
    }
    hook: Callable[[Any], dict[str, Any]] = _make_unstructure_fn(
        cls, conv, _cattrs_omit_if_default=True, **overrides
    )
    return hook


def _is_enum(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and attrs.has(t) and t is not Quantity


def make_converter(*, strict: bool) -> cattrs.Converter:
    """Build the config API's converter.

    Args:
        strict: reject unknown fields (user input); ``False`` drops them (re-reading stored configs
            written by another version).
    """
    conv = cattrs.Converter(forbid_extra_keys=strict, detailed_validation=True)
    # class-based hooks: cattrs dispatches on classes before predicates, and StrEnum precedes str in
    # every member's MRO, so the enum hook (not the str one) decodes enum fields
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(enum.StrEnum, _structure_enum)
    conv.register_structure_hook(Quantity, _structure_quantity)
    conv.register_unstructure_hook(Quantity, lambda q: q.text)
    # StrEnum precedes str in every member's MRO, so this beats the str passthrough
    conv.register_unstructure_hook(enum.StrEnum, lambda e: str(e.value))
    conv.register_structure_hook_factory(_is_model, lambda cls: _class_structure_hook(conv, cls))
    conv.register_unstructure_hook_factory(_is_model, lambda cls: _class_unstructure_hook(conv, cls))
    return conv


@functools.cache
def _converter(strict: bool) -> cattrs.Converter:
    # Built once per mode and never mutated afterwards: private, so no caller can register hooks on it.
    return make_converter(strict=strict)


def structure(obj: Mapping[str, Any], cls: type[T], *, strict: bool, path: str = "$") -> T:
    """Decode a JSON object into model ``cls``.

    Raises:
        ConfigError: every problem found, as one error or a :class:`ConfigErrors` group.
    """
    try:
        return _converter(strict).structure(obj, cls)
    except (ClassValidationError, IterableValidationError, FieldProblem) as exc:
        raise_problems(_errors(exc, path))
        raise  # pragma: no cover - _errors always yields at least one error


def unstructure(model: Any) -> dict[str, Any]:
    """Encode a model as a JSON object (camelCase names, unset fields omitted)."""
    out: dict[str, Any] = _converter(True).unstructure(model)
    return out


def _describe(t: Any) -> str:
    if _is_enum(t):
        return allowed_names(str(m.value) for m in t)
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _errors(exc: BaseException, path: str, field_type: Any = None) -> list[ConfigError]:
    if isinstance(exc, FieldProblem):
        return exc.at(path)
    if isinstance(exc, ClassValidationError):
        return _class_errors(exc, path)
    if isinstance(exc, IterableValidationError):
        with_notes, without = exc.group_exceptions()
        out = [e for sub, note in with_notes for e in _errors(sub, child_path(path, note.index), note.type)]
        return out + [e for sub in without for e in _errors(sub, path)]
    if isinstance(exc, KeyError):
        return [ConfigError(path, None, _describe(field_type), reason="missing required field, got")]
    return [ConfigError(path, None, _describe(field_type), reason=f"invalid value ({exc}):")]


def _class_errors(exc: ClassValidationError, path: str) -> list[ConfigError]:
    names = json_names(exc.cl)
    with_notes, without = exc.group_exceptions()
    out: list[ConfigError] = []
    for sub, note in with_notes:
        out += _errors(sub, child_path(path, names.get(note.name, note.name)), note.type)
    for sub in without:
        if isinstance(sub, ForbiddenExtraKeysError):
            known = ", ".join(names.values())
            out += [
                ConfigError(child_path(path, key), key, f"known fields: {known}", reason="unknown field")
                for key in sorted(sub.extra_fields, key=str)
            ]
        else:
            out += _errors(sub, path)
    return out
