"""Properties: the allocator's answer is exactly the first feasible choice of a brute-force search.

The scheduler tries devices in slice order, request after request, and keeps the first complete
solution. On small random inputs a brute force enumerates, in that same order, every combination
per request and their product across requests, and checks every rule from scratch; the first
feasible one must be what the allocator returns (and "none" must agree). That covers soundness
(every returned allocation obeys selectors, in-use, taints, counters and constraints), completeness
(it finds one whenever one exists) and the preference for slice order. Determinism is checked too.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nvdra.alloc import Allocator
from tests.alloc.helpers import DRIVER, NODE, allocation, claim, device, device_class, exactly, slice_

SELECTORS = {
    "any": None,
    "model-a": f"device.attributes['{DRIVER}'].model == 'a'",
    "numa-1": f"device.attributes['{DRIVER}'].numa == 1",
}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    devs = [
        {
            "model": draw(st.sampled_from("ab")),
            "numa": draw(st.integers(0, 1)),
            "tainted": draw(st.booleans()),
            "cost": draw(st.sampled_from([0, 1, 2, 4])),
        }
        for _ in range(n)
    ]
    requests = [
        {
            "count": draw(st.integers(1, 3)),
            "selector": draw(st.sampled_from(sorted(SELECTORS))),
            "tolerate": draw(st.booleans()),
        }
        for _ in range(draw(st.integers(1, 2)))
    ]
    return {
        "devices": devs,
        "requests": requests,
        "held": draw(st.sets(st.integers(0, n - 1), max_size=2)),
        "budget": draw(st.integers(2, 8)),
        "constraint": draw(st.sampled_from([None, "match-numa", "distinct-model"])),
    }


def objects(sc: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], set[tuple[str, str, str]]]:
    devs = []
    for i, d in enumerate(sc["devices"]):
        extra: dict[str, Any] = {}
        if d["tainted"]:
            extra["taints"] = [{"key": "broken", "effect": "NoSchedule"}]
        if d["cost"]:
            extra["consumesCounters"] = [{"counterSet": "cs", "counters": {"mem": {"value": str(d["cost"])}}}]
        devs.append(device(f"d{i}", model=d["model"], numa=d["numa"], **extra))
    counters = [{"name": "cs", "counters": {"mem": {"value": str(sc["budget"])}}}]
    slices = [slice_("a", [], count=2, sharedCounters=counters), slice_("b", devs, count=2)]
    reqs = []
    for j, r in enumerate(sc["requests"]):
        sel = SELECTORS[r["selector"]]
        tol: dict[str, Any] = (
            {"tolerations": [{"key": "broken", "operator": "Exists"}]} if r["tolerate"] else {}
        )
        reqs.append(exactly(f"r{j}", r["count"], *([sel] if sel else []), **tol))
    constraints = []
    if sc["constraint"] == "match-numa":
        constraints = [{"matchAttribute": f"{DRIVER}/numa"}]
    elif sc["constraint"] == "distinct-model":
        constraints = [{"distinctAttribute": f"{DRIVER}/model"}]
    held = {(DRIVER, NODE, f"d{i}") for i in sc["held"]}
    return slices, claim(*reqs, constraints=constraints), held


def feasible(sc: dict[str, Any], choice: tuple[tuple[int, ...], ...]) -> bool:
    devs = sc["devices"]
    flat = [i for combo in choice for i in combo]
    if len(set(flat)) != len(flat) or set(flat) & sc["held"]:
        return False
    for combo, req in zip(choice, sc["requests"], strict=True):
        for i in combo:
            d = devs[i]
            if req["selector"] == "model-a" and d["model"] != "a":
                return False
            if req["selector"] == "numa-1" and d["numa"] != 1:
                return False
            if d["tainted"] and not req["tolerate"]:
                return False
    left = sc["budget"] - sum(devs[i]["cost"] for i in sc["held"])
    if sum(devs[i]["cost"] for i in flat) > left and any(devs[i]["cost"] for i in flat):
        return False
    if sc["constraint"] == "match-numa" and len({devs[i]["numa"] for i in flat}) > 1:
        return False
    return not (sc["constraint"] == "distinct-model" and len({devs[i]["model"] for i in flat}) != len(flat))


def brute_force(sc: dict[str, Any]) -> list[tuple[str, str]] | None:
    n = len(sc["devices"])
    per_request = [itertools.combinations(range(n), r["count"]) for r in sc["requests"]]
    for choice in itertools.product(*(list(c) for c in per_request)):
        if feasible(sc, choice):
            return [(f"r{j}", f"d{i}") for j, combo in enumerate(choice) for i in combo]
    return None


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_matches_brute_force_first_solution(sc: dict[str, Any]) -> None:
    """The allocation is the first feasible combination in slice order, or none when none exists."""
    slices, c, held = objects(sc)
    outcome = Allocator(slices, [device_class()], node_name=NODE, allocated=held).allocate([c])
    assert not outcome.error
    got = (
        [(r["request"], r["device"]) for r in allocation(outcome)["devices"]["results"]]
        if outcome.ok
        else None
    )
    assert got == brute_force(sc)


@settings(max_examples=50, deadline=None)
@given(scenarios())
def test_deterministic(sc: dict[str, Any]) -> None:
    """The same inputs give the same answer, on a fresh allocator and on a reused one."""
    slices, c, held = objects(sc)
    a = Allocator(slices, [device_class()], node_name=NODE, allocated=held)
    first = a.allocate([c])
    assert a.allocate([c]) == first
    assert Allocator(slices, [device_class()], node_name=NODE, allocated=held).allocate([c]) == first
