"""The in-memory store's object copies: a JSON round trip (orjson; the standard library for the rest)."""

from __future__ import annotations

import datetime
import enum
from typing import Any

import pytest

from nvdra.kubeletplugin.store.state import clone


class _Color(enum.StrEnum):
    RED = "red"


def test_copy_is_independent_and_canonical() -> None:
    original: dict[str, Any] = {
        "spec": {"devices": [{"name": "gpu-0", "attrs": {"a": {"int": 1}}}]},
        "t": (1, 2),
    }
    copied = clone(original)
    assert copied == {"spec": {"devices": [{"name": "gpu-0", "attrs": {"a": {"int": 1}}}]}, "t": [1, 2]}
    copied["spec"]["devices"][0]["attrs"]["a"]["int"] = 2
    assert original["spec"]["devices"][0]["attrs"]["a"]["int"] == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"k": _Color.RED}, {"k": "red"}),  # a str subclass: the standard library's round trip
        ({1: "x"}, {"1": "x"}),  # non-string keys: converted as json converts them
        ({"k": 2**70}, {"k": 2**70}),  # beyond 64 bits
        ({"k": "\ud800"}, {"k": "\ud800"}),  # a lone surrogate
    ],
)
def test_values_orjson_refuses_go_through_json(value: dict[Any, Any], expected: dict[str, Any]) -> None:
    copied = clone(value)
    assert copied == expected
    assert type(next(iter(copied.values()))) is type(next(iter(expected.values())))


@pytest.mark.parametrize("value", [{"k": datetime.datetime(2026, 1, 1)}, {"k": b"x"}, {"k": {1}}])
def test_non_json_values_raise(value: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        clone(value)
