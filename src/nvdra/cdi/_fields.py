"""The CDI JSON codec: :mod:`nvdra.core.serde` with the CDI rules, for every record of :mod:`nvdra.cdi.spec`.

A record subclasses :class:`JsonRecord`; its attrs fields say everything the codec needs. The JSON name
is the attribute name in camelCase unless :func:`wire` metadata names it; the field's type picks the
value's codec; a field without a default is required. Fields are written in declaration order (so a
record declares its fields in the order of the CDI Go type), a field equal to its default omitted the
way Go's ``omitempty`` does (every default is its type's zero value: ``""``, ``0``, ``False``, ``()``,
``{}``, ``None`` or empty edits); a required field always.

Decoding is strict the way the CDI loader is: an unknown key, a wrongly typed value or a missing
required field raises :class:`CdiError` naming its JSON path and what is allowed there; an absent or
``null`` optional field decodes to its default.
"""

from __future__ import annotations

__all__ = ["JsonDict", "JsonRecord", "wire"]

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self, get_args, get_origin

from nvdra.core.errors import CdiError
from nvdra.core.serde import Codec, Problem, WireRules, field_meta

JsonDict = dict[str, Any]


def wire(name: str | None = None, *, required: bool = False) -> dict[str, Any]:
    """Field metadata: the JSON ``name`` when it is not the camelCase attribute name; ``required`` for a
    field that has a Python default but must be present in JSON."""
    return field_meta(name, required=required)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_WORDS = {str: "a string", int: "an integer", bool: "true or false"}


def _describe(t: Any) -> str:
    """What a value of type ``t`` is in JSON, as a user reads it."""
    args = get_args(t)
    if t in _WORDS:
        return _WORDS[t]
    if _is_record(t):
        return f"an object ({t.__name__})"
    if get_origin(t) is tuple:
        return f"a list, each {_describe(args[0])}"
    if get_origin(t) is Mapping:
        return f"an object, each value {_describe(args[1])}"
    return " or ".join(_describe(a) for a in args if a is not type(None)) or str(t)


def _error(problems: Sequence[Problem]) -> CdiError:
    if len(problems) == 1:
        return CdiError(str(problems[0]))
    return CdiError(
        f"{len(problems)} problems: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
    )


def _is_record(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, JsonRecord)


_CODEC = Codec(
    WireRules(
        is_record=_is_record, default_name=_camel, describe=_describe, error=_error, null_is_default=True
    ),
    strict=True,
)
_ENCODERS: dict[type, Callable[[Any], JsonDict]] = {}


class JsonRecord:
    """Base of the CDI records: :meth:`to_dict` and :meth:`from_dict` from the record's attrs fields."""

    __slots__ = ()
    __attrs_attrs__: ClassVar[Any]  # set by attrs on each record class

    def to_dict(self) -> JsonDict:
        """The CDI JSON object in field order, empty fields omitted (Go ``omitempty``)."""
        cls = type(self)
        encode = _ENCODERS.get(cls)
        if encode is None:
            encode = _ENCODERS[cls] = _CODEC.converter.get_unstructure_hook(cls)
        return encode(self)

    @classmethod
    def from_dict(cls, raw: Any, where: str | None = None) -> Self:
        """Decode a JSON object found at path ``where`` (by default the record's name in camelCase).

        Raises:
            CdiError: unknown field, a missing required field or a wrongly typed value (the message has
                the JSON path and what is allowed there).
        """
        return _CODEC.structure(raw, cls, _camel_class(cls) if where is None else where)


def _camel_class(cls: type) -> str:
    return cls.__name__[0].lower() + cls.__name__[1:]
