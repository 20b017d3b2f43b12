"""Field helpers for the CDI JSON boundary: Go-style ``omitempty`` output and strict, typed input.

Decoding is strict the way the CDI loader is: an unknown key or a wrongly typed value raises
:class:`CdiError` naming its JSON path; absent optional fields decode to their empty value.
"""

from __future__ import annotations

__all__ = [
    "JsonDict",
    "annotations_field",
    "int_field",
    "list_field",
    "list_of",
    "obj",
    "put",
    "str_field",
    "strs_field",
]

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from nvdra.core.errors import CdiError

JsonDict = dict[str, Any]
_T = TypeVar("_T")


def put(out: JsonDict, key: str, value: Any) -> None:
    """Set ``key`` unless ``value`` is empty/zero/false, like Go's ``omitempty``."""
    if value:
        out[key] = value


def obj(raw: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    """``raw`` as a mapping whose keys are all in ``allowed``."""
    if not isinstance(raw, Mapping):
        raise CdiError(f"{where}: expected an object, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise CdiError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return raw


def str_field(d: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    """A string field; ``""`` when absent (an error when ``required``)."""
    value = d.get(key)
    if value is None:
        if required:
            raise CdiError(f"{where}.{key}: required field missing")
        return ""
    if not isinstance(value, str):
        raise CdiError(f"{where}.{key}: expected a string, got {value!r}")
    return value


def int_field(d: Mapping[str, Any], key: str, where: str) -> int | None:
    """An integer field (booleans refused); None when absent."""
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise CdiError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def list_field(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """A list field; empty when absent."""
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise CdiError(f"{where}.{key}: expected a list, got {type(value).__name__}")
    return value


def list_of(decode: Callable[[Any, str], _T], d: Mapping[str, Any], key: str, where: str) -> tuple[_T, ...]:
    """A list of objects, each decoded with ``decode(item, json_path)``; empty when absent."""
    return tuple(decode(x, f"{where}.{key}[{i}]") for i, x in enumerate(list_field(d, key, where)))


def strs_field(d: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A list-of-strings field as a tuple; empty when absent."""
    items = list_field(d, key, where)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise CdiError(f"{where}.{key}[{i}]: expected a string, got {item!r}")
    return tuple(items)


def annotations_field(d: Mapping[str, Any], where: str) -> dict[str, str]:
    """The ``annotations`` map of strings; empty when absent."""
    raw = d.get("annotations")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise CdiError(f"{where}.annotations: expected a map of strings to strings")
    return dict(raw)
