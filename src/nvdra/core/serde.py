"""cattrs converters for the project's JSON records, and one translation of their decoding errors.

Two families of records go through here: the opaque config API (:mod:`nvdra.core.config`) and the CDI
spec (:mod:`nvdra.cdi.spec`). A :class:`Codec` is built from :class:`WireRules`, which say what differs
between them: a field's default JSON name, whether ``null`` decodes to a field's default, how a type is
described to a user, and which exception carries the problems.

Invariants owned here:
- converters are explicit instances (never cattrs' global one) with ``detailed_validation``, so every
  problem of a document is collected, and ``forbid_extra_keys`` in strict mode;
- JSON primitives are checked as Go's ``encoding/json`` would: no string→number or number→string
  coercion, no bool for a number; integers are accepted for float fields, floats not for integer ones;
  a tuple field takes a JSON array only and a mapping field a JSON object only (cattrs alone would
  iterate any iterable);
- a field's wire name is its :func:`field_meta` ``name``, else the rules' default name; error paths use
  the same names;
- encoding writes fields in declaration order, tuples as lists, and omits a field equal to its default
  (Go's ``omitempty``: defaults are zero values) unless :func:`field_meta` says it is ``required`` on the
  wire; a type without a rule is refused with :class:`TypeError` naming it, never passed through;
- every decoding failure becomes :class:`Problem` s, each naming a JSONPath, handed to the rules'
  ``error``; nothing else escapes :meth:`Codec.structure`.
"""

from __future__ import annotations

__all__ = [
    "MISSING",
    "Codec",
    "FieldProblem",
    "Problem",
    "WireRules",
    "child_path",
    "field_meta",
    "make_structure_fn",
    "make_unstructure_fn",
    "mapping_or_problem",
]

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, is_mapping, mapping_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

T = TypeVar("T")

NAME_KEY = "nvdra.json"
"""attrs metadata key holding a field's JSON name."""
DECODE_KEY = "nvdra.decode"
"""attrs metadata key holding a field-specific decoder ``(raw) -> value`` (raises :class:`FieldProblem`)."""
ENCODE_KEY = "nvdra.encode"
"""attrs metadata key holding a field-specific encoder ``(value) -> JSON``."""
REQUIRED_KEY = "nvdra.required"
"""attrs metadata key marking a field with a Python default that must still be present in JSON."""

make_structure_fn: Callable[..., Callable[[Any, type], Any]] = make_dict_structure_fn
"""cattrs' generator of an attrs class's structure function, typed: it takes per-attribute overrides as
``**kwargs``, which its stubs cannot type (every cattrs codec of nvdra uses this name)."""
make_unstructure_fn: Callable[..., Callable[[Any], dict[str, Any]]] = make_dict_unstructure_fn
"""The same for the unstructure function."""


class _Missing(enum.Enum):
    MISSING = "missing"

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing.MISSING
"""The :attr:`Problem.value` of a required field that is absent."""


def field_meta(
    name: str | None = None,
    *,
    required: bool = False,
    decode: Callable[[Any], Any] | None = None,
    encode: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """attrs ``metadata`` for a field: its JSON ``name`` (when not the rules' default), ``required`` for
    a field with a Python default that JSON must still give, and the field's own decode/encode hooks."""
    meta: dict[str, Any] = {}
    if name is not None:
        meta[NAME_KEY] = name
    if required:
        meta[REQUIRED_KEY] = True
    if decode is not None:
        meta[DECODE_KEY] = decode
    if encode is not None:
        meta[ENCODE_KEY] = encode
    return meta


def child_path(path: str, key: object) -> str:
    """Extend a JSONPath by an object member (``.name``), a list index (``[3]``) or a map key (``['k']``)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if not isinstance(key, str):
        key = str(key)
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


@attrs.frozen
class Problem:
    """One thing wrong in a decoded document: where, the value found (:data:`MISSING` when absent),
    what is allowed there and why the value is refused."""

    path: str
    value: Any
    allowed: str
    reason: str

    def __str__(self) -> str:
        found = "" if self.value is MISSING else f" {self.value!r}"
        return f"{self.path}: {self.reason}{found}; allowed: {self.allowed}"


class FieldProblem(ValueError):
    """Raised by decode hooks: what is wrong with one value, relative to the field being decoded.

    ``suffix`` extends the field's path (an element index, a map key) when the problem sits inside it.
    Problems found in several elements at once travel as ``others``.
    """

    def __init__(
        self,
        value: Any,
        allowed: str,
        *,
        reason: str = "invalid value",
        suffix: str = "",
        others: Sequence[FieldProblem] = (),
    ) -> None:
        self.value = value
        self.allowed = allowed
        self.reason = reason
        self.suffix = suffix
        self.others = tuple(others)
        super().__init__(f"{reason} {value!r}; allowed: {allowed}")

    def all(self) -> tuple[FieldProblem, ...]:
        """This problem followed by the ones found beside it."""
        return (self, *self.others)

    def at(self, path: str) -> list[Problem]:
        """The problems rooted at the field's ``path``."""
        return [Problem(path + p.suffix, p.value, p.allowed, p.reason) for p in self.all()]


def mapping_or_problem(obj: Any, what: str) -> Mapping[str, Any]:
    """Return ``obj`` if it is a JSON object, else raise a :class:`FieldProblem` naming ``what``."""
    if not isinstance(obj, Mapping):
        raise FieldProblem(obj, f"a JSON object ({what})", reason="expected an object, got")
    return obj


@attrs.frozen
class WireRules:
    """What differs between two families of records on the wire.

    Attributes:
        is_record: which types are records (attrs classes encoded as JSON objects field by field).
        default_name: a field's JSON name from its attribute name, when its metadata names none.
        describe: what a value of a type may be, as a problem's ``allowed`` (a missing field, a
            value that is not a list or not an object).
        error: the exception that carries a document's problems (raised by :meth:`Codec.structure`).
        null_is_default: ``null`` for a field with a default decodes to that default, as Go leaves a
            field at its zero value; otherwise ``null`` is decoded by the field's type (an optional type
            takes it).
    """

    is_record: Callable[[Any], bool]
    default_name: Callable[[str], str]
    describe: Callable[[Any], str]
    error: Callable[[Sequence[Problem]], Exception]
    null_is_default: bool = False


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


def _refuse_type(t: Any) -> NoReturn:
    raise TypeError(f"no JSON codec for a field of type {t!r}")


def _is_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _own_decoder(decode: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(obj: Any, _t: Any) -> Any:
        return None if obj is None else decode(obj)

    return hook


def _null_to_default(hook: Callable[[Any, Any], Any], default: Any) -> Callable[[Any, Any], Any]:
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory: Callable[[], Any] = default.factory

        def from_factory(obj: Any, t: Any) -> Any:
            return factory() if obj is None else hook(obj, t)

        return from_factory

    def from_value(obj: Any, t: Any) -> Any:
        return default if obj is None else hook(obj, t)

    return from_value


def _required(a: attrs.Attribute[Any]) -> bool:
    return a.default is attrs.NOTHING or bool(a.metadata.get(REQUIRED_KEY))


class Codec:
    """A cattrs converter built from :class:`WireRules`, and the translation of its decoding errors.

    Args:
        rules: what this family of records does differently.
        strict: reject unknown fields (user input); ``False`` drops them (re-reading stored documents
            written by another version).
    """

    def __init__(self, rules: WireRules, *, strict: bool) -> None:
        self.rules = rules
        self._names: dict[type, dict[str, str]] = {}
        conv = cattrs.Converter(
            forbid_extra_keys=strict,
            detailed_validation=True,
            unstruct_collection_overrides={tuple: list},
            unstructure_fallback_factory=_refuse_type,
            structure_fallback_factory=_refuse_type,
        )
        for t, hook in (
            (str, _structure_str),
            (int, _structure_int),
            (bool, _structure_bool),
            (float, _structure_float),
        ):
            conv.register_structure_hook(t, hook)
            conv.register_unstructure_hook(t, identity)  # cattrs' own: its generated code inlines it
        conv.register_unstructure_hook(type(None), identity)
        conv.register_structure_hook_factory(
            _is_tuple,
            lambda t: self._checked(
                t, homogenous_tuple_structure_factory(t, conv), list, "expected a list, got"
            ),
        )
        conv.register_structure_hook_factory(
            is_mapping,
            lambda t: self._checked(
                t, mapping_structure_factory(t, conv), Mapping, "expected an object, got"
            ),
        )
        conv.register_structure_hook_factory(rules.is_record, self._structure_record)
        conv.register_unstructure_hook_factory(rules.is_record, self._unstructure_record)
        self.converter = conv

    def wire_names(self, cls: type) -> dict[str, str]:
        """Python attribute name → JSON name, for a record."""
        names = self._names.get(cls)
        if names is None:
            names = self._names[cls] = {a.name: self._name(a) for a in attrs.fields(cls)}
        return names

    def structure(self, obj: Any, cls: type[T], path: str) -> T:
        """Decode a JSON value found at JSONPath ``path`` into ``cls``.

        Raises:
            Exception: the rules' ``error``, carrying every problem found.
        """
        try:
            out: T = self.converter.structure(obj, cls)
        except (ClassValidationError, IterableValidationError, FieldProblem) as exc:
            raise self.rules.error(self._problems(exc, path)) from None
        return out

    def unstructure(self, obj: Any) -> Any:
        """Encode a record (or any value of a supported type) as JSON data."""
        return self.converter.unstructure(obj)

    def _name(self, a: attrs.Attribute[Any]) -> str:
        name: str = a.metadata.get(NAME_KEY) or self.rules.default_name(a.name)
        return name

    def _checked(
        self, t: Any, inner: Callable[[Any, Any], Any], json_type: type, reason: str
    ) -> Callable[[Any, Any], Any]:
        """``inner``, the hook cattrs made for ``t``, after a check that the value is of ``json_type``
        (cattrs' own would take any iterable for a list, fail obscurely on a non-mapping for a map)."""
        allowed = self.rules.describe(t)

        def structure_checked(obj: Any, _t: Any) -> Any:
            if not isinstance(obj, json_type):
                raise FieldProblem(obj, allowed, reason=reason)
            return inner(obj, t)

        return structure_checked

    def _structure_record(self, cls: type) -> Callable[[Any, type], Any]:
        fields = attrs.fields(attrs.resolve_types(cls))
        conv, null_is_default = self.converter, self.rules.null_is_default
        overrides = {}
        for a in fields:
            hook = None
            if DECODE_KEY in a.metadata:
                hook = _own_decoder(a.metadata[DECODE_KEY])
            elif null_is_default and not _required(a):
                hook = _null_to_default(conv.get_structure_hook(a.type), a.default)
            overrides[a.name] = override(rename=self._name(a), struct_hook=hook)
        inner = make_structure_fn(cls, conv, **overrides)
        # present on the wire although Python has a default: cattrs' generated code cannot say so
        demanded = [
            (self._name(a), a.type) for a in fields if a.default is not attrs.NOTHING and _required(a)
        ]
        describe = self.rules.describe

        def structure_record(obj: Any, _t: type) -> Any:
            # guard first: the generated function would index into a string or list and fail obscurely
            raw = mapping_or_problem(obj, cls.__name__)
            absent = [
                FieldProblem(MISSING, describe(t), reason="missing required field", suffix=f".{key}")
                for key, t in demanded
                if key not in raw
            ]
            if absent:
                raise FieldProblem(
                    MISSING,
                    absent[0].allowed,
                    reason=absent[0].reason,
                    suffix=absent[0].suffix,
                    others=absent[1:],
                )
            return inner(raw, cls)

        return structure_record

    def _unstructure_record(self, cls: type) -> Callable[[Any], dict[str, Any]]:
        fields = attrs.fields(attrs.resolve_types(cls))
        overrides = {
            a.name: override(
                rename=self._name(a),
                omit_if_default=False if _required(a) else None,
                unstruct_hook=a.metadata.get(ENCODE_KEY),
            )
            for a in fields
        }
        inner = make_unstructure_fn(cls, self.converter, _cattrs_omit_if_default=True, **overrides)
        # cattrs writes the fields it always writes first, then the omissible ones: where a required field
        # follows an omissible one, the declaration order is restored
        order = [_required(a) for a in fields]
        if order == sorted(order, reverse=True):
            return inner
        keys = [self._name(a) for a in fields]

        def unstructure_in_order(obj: Any) -> dict[str, Any]:
            out = inner(obj)
            return {k: out[k] for k in keys if k in out}

        return unstructure_in_order

    def _problems(self, exc: BaseException, path: str, field_type: Any = None) -> list[Problem]:
        if isinstance(exc, FieldProblem):
            return exc.at(path)
        if isinstance(exc, ClassValidationError):
            return self._record_problems(exc, path)
        if isinstance(exc, IterableValidationError):
            with_notes, without = exc.group_exceptions()
            out = [
                p
                for sub, note in with_notes
                for p in self._problems(sub, child_path(path, note.index), note.type)
            ]
            return out + [p for sub in without for p in self._problems(sub, path)]
        describe = self.rules.describe(field_type)
        if isinstance(exc, KeyError):
            return [Problem(path, MISSING, describe, "missing required field")]
        return [Problem(path, None, describe, f"invalid value ({exc}):")]

    def _record_problems(self, exc: ClassValidationError, path: str) -> list[Problem]:
        names = self.wire_names(exc.cl)
        with_notes, without = exc.group_exceptions()
        out: list[Problem] = []
        for sub, note in with_notes:
            out += self._problems(sub, child_path(path, names.get(note.name, note.name)), note.type)
        for sub in without:
            if isinstance(sub, ForbiddenExtraKeysError):
                known = ", ".join(names.values())
                out += [
                    Problem(child_path(path, key), key, f"known fields: {known}", "unknown field")
                    for key in sorted(sub.extra_fields, key=str)
                ]
            else:
                out += self._problems(sub, path)
        return out
