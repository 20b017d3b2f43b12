"""Typed effect records and their JSON form, the checkpoint's ``applied`` entries (pure).

An effect record names one change a prepare makes on the node (a GPU's time slice, an MPS daemon, a
MIG device, a vfio-pci bind, ...): planners return records, executors apply and undo them, and the
checkpoint stores them as JSON objects ``{"kind": "<kind>", ...}``. The checkpoint is the one place a
record is untyped; this module is that boundary.

Invariants owned here:
- a record is a frozen attrs subclass of :class:`EffectRecord` with a class-level ``KIND``; a field's
  JSON name is the camelCase of its attribute name unless :func:`effect_field` gives one;
- :func:`effect_to_json` writes the keys nvdra wrote before records were typed: every field, ``None``
  as ``null``, except a field marked ``omit_default`` while it holds its default;
- ``EffectCodec(types).from_json(effect_to_json(r)) == r`` for every record of a registered type;
- decoding ignores unknown keys (a newer nvdra's), fills absent fields that have defaults (an older
  nvdra's), checks JSON types without coercion, and raises one :class:`CheckpointError` naming the kind,
  the field and the value otherwise.
"""

from __future__ import annotations

__all__ = ["EffectCodec", "EffectRecord", "effect_field", "effect_to_json"]

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from cattrs.gen import override

from nvdra.core.errors import CheckpointError, ConfigError
from nvdra.core.serde import make_structure_fn, make_unstructure_fn

R = TypeVar("R", bound="EffectRecord")

_JSON = "nvdra.effect.json"
_OMIT = "nvdra.effect.omit"
_ENCODE = "nvdra.effect.encode"
_DECODE = "nvdra.effect.decode"


@attrs.frozen(kw_only=True)
class EffectRecord:
    """Base of every effect record; a subclass sets ``KIND`` (the executor it goes to)."""

    KIND: ClassVar[str] = ""

    @property
    def kind(self) -> str:
        """The record's kind, as written under ``"kind"`` in the checkpoint."""
        return self.KIND


def effect_field(
    *,
    json: str | None = None,
    omit_default: bool = False,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """An attrs field of a record: its JSON name, whether it is left out at its default, and how its
    value is written and read when that is not the plain JSON of its type (``kwargs`` go to attrs)."""
    meta: dict[str, Any] = {_OMIT: omit_default}
    if json is not None:
        meta[_JSON] = json
    if encode is not None:
        meta[_ENCODE] = encode
    if decode is not None:
        meta[_DECODE] = decode
    return attrs.field(metadata=meta, **kwargs)


def _json_name(a: attrs.Attribute[Any]) -> str:
    if _JSON in a.metadata:
        return str(a.metadata[_JSON])
    head, *rest = a.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class _Problem(ValueError):
    """A value of the wrong JSON type (raised by the strict primitive hooks)."""


def _strict(typ: type, what: str) -> Callable[[Any, type], Any]:
    def hook(obj: Any, _t: type) -> Any:
        if isinstance(obj, bool) is not (typ is bool) or not isinstance(obj, typ):
            raise _Problem(f"expected {what}, got {obj!r}")
        return obj

    return hook


def _structure_float(obj: Any, _t: type) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise _Problem(f"expected a number, got {obj!r}")
    return float(obj)


def _structure_enum(obj: Any, cls: type[enum.Enum]) -> enum.Enum:
    values = [m.value for m in cls]
    if isinstance(obj, str) and obj in values:
        return cls(obj)
    raise _Problem(f"expected one of {', '.join(map(str, values))}, got {obj!r}")


def _decoder(decode: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(obj: Any, _t: Any) -> Any:
        return None if obj is None else decode(obj)

    return hook


def _structure_fn(conv: cattrs.Converter, cls: type) -> Callable[[Any, type], Any]:
    overrides = {
        a.name: override(
            rename=_json_name(a),
            struct_hook=_decoder(a.metadata[_DECODE]) if _DECODE in a.metadata else None,
        )
        for a in attrs.fields(cls)
    }
    inner = make_structure_fn(cls, conv, **overrides)

    def structure(obj: Any, _t: type) -> Any:
        if not isinstance(obj, Mapping):
            raise _Problem(f"expected an object, got {obj!r}")
        return inner(obj, cls)

    return structure


def _unstructure_fn(conv: cattrs.Converter, cls: type) -> Callable[[Any], dict[str, Any]]:
    overrides = {
        a.name: override(
            rename=_json_name(a),
            omit_if_default=bool(a.metadata.get(_OMIT)),
            unstruct_hook=a.metadata.get(_ENCODE),
        )
        for a in attrs.fields(cls)
    }
    return make_unstructure_fn(cls, conv, **overrides)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True, unstruct_collection_overrides={tuple: list})
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(float, _structure_float)
    # a StrEnum's MRO has StrEnum before str: these beat the str hooks for enum fields
    for base in (enum.Enum, enum.StrEnum):
        conv.register_structure_hook(base, _structure_enum)
        conv.register_unstructure_hook(base, lambda e: e.value)
    conv.register_structure_hook_factory(attrs.has, lambda cls: _structure_fn(conv, cls))
    conv.register_unstructure_hook_factory(attrs.has, lambda cls: _unstructure_fn(conv, cls))
    return conv


_CONVERTER = _make_converter()  # built once here and never given another hook


def effect_to_json(record: EffectRecord) -> dict[str, Any]:
    """The record's checkpoint form: ``{"kind": KIND, <fields by JSON name>}``."""
    out: dict[str, Any] = {"kind": record.KIND}
    out.update(_CONVERTER.unstructure(record))
    return out


def _first_problem(exc: BaseException, path: str) -> tuple[str, BaseException]:
    """The path and the innermost error of a cattrs validation error."""
    if isinstance(exc, ClassValidationError):
        names = {a.name: _json_name(a) for a in attrs.fields(exc.cl)}
        with_notes, without = exc.group_exceptions()
        if with_notes:
            sub, note = with_notes[0]
            return _first_problem(sub, f"{path}.{names.get(note.name, note.name)}")
        return _first_problem(without[0], path)
    if isinstance(exc, IterableValidationError):
        items, rest = exc.group_exceptions()
        if items:
            sub, item = items[0]
            return _first_problem(sub, f"{path}[{item.index}]")
        return _first_problem(rest[0], path)
    return path, exc


class EffectCodec:
    """Reads records of the registered types back from their checkpoint form."""

    def __init__(self, types: Iterable[type[EffectRecord]] = ()) -> None:
        self._types: dict[str, type[EffectRecord]] = {}
        for cls in types:
            if not cls.KIND:
                raise ConfigError("effect.kind", cls.__name__, "a record class with a KIND")
            if self._types.get(cls.KIND, cls) is not cls:
                raise ConfigError(
                    "effect.kind", cls.KIND, "one record type per kind", reason="duplicate kind"
                )
            self._types[cls.KIND] = cls

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds this codec reads."""
        return frozenset(self._types)

    def from_json(self, obj: Mapping[str, Any], where: str = "record") -> EffectRecord:
        """The typed record of a checkpoint entry.

        Raises:
            CheckpointError: an unregistered kind, a missing field, or a value of the wrong type.
        """
        kind = obj.get("kind")
        cls = self._types.get(kind) if isinstance(kind, str) else None
        if cls is None:
            known = ", ".join(sorted(self._types)) or "none registered"
            raise CheckpointError(f"checkpoint {where}.kind: unknown effect kind {kind!r} (known: {known})")
        return self.read(obj, cls, where)

    @staticmethod
    def read(obj: Mapping[str, Any], cls: type[R], where: str = "record") -> R:
        """``obj`` (whatever its ``kind`` says) as a record of ``cls``.

        Raises:
            CheckpointError: a missing field or a value of the wrong type.
        """
        try:
            record: R = _CONVERTER.structure({k: v for k, v in obj.items() if k != "kind"}, cls)
        except (ClassValidationError, IterableValidationError, _Problem, ValueError, TypeError) as exc:
            path, inner = _first_problem(exc, where)
            what = "missing field" if isinstance(inner, KeyError) else str(inner)
            raise CheckpointError(f"checkpoint {path} ({cls.KIND} record): {what}") from exc
        return record
