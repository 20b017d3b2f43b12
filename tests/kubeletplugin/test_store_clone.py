"""The in-memory store's object copies: a JSON round trip, fast, and the collector left as it was."""

from __future__ import annotations

import datetime
import enum
import gc
import threading
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


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_state_is_restored(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        clone({"a": [1, 2, {"b": 3}]})
        assert gc.isenabled() is enabled
        with pytest.raises(TypeError):
            clone({"k": object()})
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_concurrent_copies_leave_the_collector_on() -> None:
    assert gc.isenabled()
    body = {"items": [{"name": f"d{i}", "v": {"x": i}} for i in range(2000)]}
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        for _ in range(20):
            assert clone(body) == body

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gc.isenabled()
