"""The CDI JSON codec: one encoder and one strict decoder for every record of :mod:`nvdra.cdi.spec`.

A record subclasses :class:`JsonRecord`; its attrs fields say everything the codec needs. The JSON name
is the attribute name in camelCase unless :func:`wire` metadata names it; the field's type picks the
value's codec; a field without a default is required. Fields are written in declaration order (so a
record declares its fields in the order of the CDI Go type), empty ones omitted the way Go's
``omitempty`` does: a field whose default is ``None`` is written unless ``None``; any other optional
field unless its JSON value is empty, zero or false; a required field always.

Decoding is strict the way the CDI loader is: an unknown key or a wrongly typed value raises
:class:`CdiError` naming its JSON path; absent optional fields decode to their default.
"""

from __future__ import annotations

__all__ = ["JsonDict", "JsonRecord", "wire"]

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar, get_args, get_origin

import attrs

from nvdra.core.errors import CdiError

JsonDict = dict[str, Any]
_T = TypeVar("_T")
_NAME = "nvdra.cdi.json_name"
_REQUIRED = "nvdra.cdi.required"

_Decode = Callable[[Mapping[str, Any], str, str], Any]  # (object, JSON name, JSON path of the object)


def wire(name: str | None = None, *, required: bool = False) -> dict[str, Any]:
    """Field metadata: the JSON ``name`` when it is not the camelCase attribute name; ``required`` for a
    field that has a Python default but must be present in JSON."""
    meta: dict[str, Any] = {_REQUIRED: required}
    if name is not None:
        meta[_NAME] = name
    return meta


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _obj(raw: Any, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    """``raw`` as a mapping whose keys are all in ``allowed``."""
    if not isinstance(raw, Mapping):
        raise CdiError(f"{where}: expected an object, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise CdiError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return raw


def _str(d: Mapping[str, Any], key: str, where: str, *, required: bool) -> str:
    value = d.get(key)
    if value is None:
        if required:
            raise CdiError(f"{where}.{key}: required field missing")
        return ""
    if not isinstance(value, str):
        raise CdiError(f"{where}.{key}: expected a string, got {value!r}")
    return value


def _opt_int(d: Mapping[str, Any], key: str, where: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise CdiError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def _int(d: Mapping[str, Any], key: str, where: str) -> int:
    return _opt_int(d, key, where) or 0


def _bool(d: Mapping[str, Any], key: str, where: str) -> bool:
    value = d.get(key, False)
    if not isinstance(value, bool):
        raise CdiError(f"{where}.{key}: expected a boolean, got {value!r}")
    return value


def _list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise CdiError(f"{where}.{key}: expected a list, got {type(value).__name__}")
    return value


def _items(kind: type, noun: str) -> _Decode:
    def decode(d: Mapping[str, Any], key: str, where: str) -> tuple[Any, ...]:
        items = _list(d, key, where)
        for i, item in enumerate(items):
            if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
                raise CdiError(f"{where}.{key}[{i}]: expected {noun}, got {item!r}")
        return tuple(items)

    return decode


def _string_map(d: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    raw = d.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise CdiError(f"{where}.{key}: expected a map of strings to strings")
    return dict(raw)


def _records(cls: type[JsonRecord], *, required: bool) -> _Decode:
    def decode(d: Mapping[str, Any], key: str, where: str) -> tuple[JsonRecord, ...]:
        if required and key not in d:
            raise CdiError(f"{where}.{key}: required field missing")
        return tuple(cls.from_dict(x, f"{where}.{key}[{i}]") for i, x in enumerate(_list(d, key, where)))

    return decode


def _record(cls: type[JsonRecord], *, required: bool, default: Any) -> _Decode:
    def decode(d: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in d:
            if required:
                raise CdiError(f"{where}.{key}: required field missing")
            return default
        value = d[key]
        if value is None and not required:
            return default
        return cls.from_dict(value, f"{where}.{key}")

    return decode


def _same(value: _T) -> _T:
    return value


def _to_list(value: tuple[Any, ...]) -> list[Any]:
    return list(value)


def _to_dicts(value: tuple[JsonRecord, ...]) -> list[JsonDict]:
    return [x.to_dict() for x in value]


def _to_dict(value: JsonRecord | None) -> JsonDict | None:
    return None if value is None else value.to_dict()


def _record_type(t: Any) -> type[JsonRecord] | None:
    return t if isinstance(t, type) and issubclass(t, JsonRecord) else None


def _codec(t: Any, *, required: bool, default: Any) -> tuple[Callable[[Any], Any], _Decode]:
    """The encoder and decoder of a field of type ``t`` (a record-typed field's ``default`` is a value,
    not a factory: an absent or null optional record decodes to it)."""
    args = get_args(t)
    if t is str:
        return _same, functools.partial(_str, required=required)
    if t is int:
        return _same, _int
    if t is bool:
        return _same, _bool
    if get_origin(t) is Mapping and args == (str, str):
        return dict, _string_map
    if get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis:
        if args[0] is str:
            return _to_list, _items(str, "a string")
        if args[0] is int:
            return _to_list, _items(int, "an integer")
        if (item := _record_type(args[0])) is not None:
            return _to_dicts, _records(item, required=required)
    if isinstance(t, types.UnionType) and len(args) == 2 and args[1] is type(None):
        if args[0] is int:
            return _same, _opt_int
        if (item := _record_type(args[0])) is not None:
            return _to_dict, _record(item, required=required, default=default)
    if (rec := _record_type(t)) is not None:
        return _to_dict, _record(rec, required=required, default=default)
    raise TypeError(f"no CDI JSON codec for a field of type {t!r}")


@attrs.frozen
class _Slot:
    name: str  # the attribute
    key: str  # the JSON name
    always: bool  # written even when empty
    if_set: bool  # written unless None (the default is None)
    encode: Callable[[Any], Any]
    decode: _Decode


@attrs.frozen
class _Plan:
    where: str  # the JSON path of a top-level object of this type
    keys: frozenset[str]
    slots: tuple[_Slot, ...]


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type[JsonRecord]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _make_plan(cls)
    return plan


def _make_plan(cls: type[JsonRecord]) -> _Plan:
    slots = []
    for a in attrs.fields(attrs.resolve_types(cls)):
        required = a.default is attrs.NOTHING or bool(a.metadata.get(_REQUIRED))
        encode, decode = _codec(a.type, required=required, default=a.default)
        key = a.metadata.get(_NAME, _camel(a.name))
        slots.append(_Slot(a.name, key, required, a.default is None, encode, decode))
    name = cls.__name__
    return _Plan(name[0].lower() + name[1:], frozenset(s.key for s in slots), tuple(slots))


class JsonRecord:
    """Base of the CDI records: :meth:`to_dict` and :meth:`from_dict` from the record's attrs fields."""

    __slots__ = ()
    __attrs_attrs__: ClassVar[Any]  # set by attrs on each record class

    def to_dict(self) -> JsonDict:
        """The CDI JSON object in field order, empty fields omitted (Go ``omitempty``)."""
        out: JsonDict = {}
        for s in _plan(type(self)).slots:
            value = s.encode(getattr(self, s.name))
            if s.always or (value is not None if s.if_set else value):
                out[s.key] = value
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str | None = None) -> Self:
        """Decode a JSON object found at path ``where`` (by default the record's name in camelCase).

        Raises:
            CdiError: unknown field, a missing required field or a wrongly typed value (the message has
                the JSON path).
        """
        plan = _plan(cls)
        path = plan.where if where is None else where
        d = _obj(raw, path, plan.keys)
        build: Callable[..., Self] = cls
        return build(**{s.name: s.decode(d, s.key, path) for s in plan.slots})
