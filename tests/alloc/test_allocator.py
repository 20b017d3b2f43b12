"""The allocator follows the scheduler's documented rules, one rule per test."""

from __future__ import annotations

from typing import Any

from nvdra.alloc import Allocator, allocated_devices, diagnose
from tests.alloc.helpers import DRIVER, NODE, allocation, claim, device, device_class, exactly, picked, slice_

CLASSES = [device_class()]


def alloc(slices: list[dict[str, Any]], classes: list[dict[str, Any]] = CLASSES, **kw: Any) -> Allocator:
    return Allocator(slices, classes, node_name=NODE, **kw)


def four() -> list[dict[str, Any]]:
    return [slice_("s0", [device(f"d{i}", numa=i // 2, model="ab"[i % 2]) for i in range(4)])]


def test_prefers_devices_in_slice_order() -> None:
    """With every device matching, the first ones in slice order are picked."""
    assert picked(alloc(four()).allocate([claim(exactly("r", 2))])) == [("r", "d0"), ("r", "d1")]


def test_skips_allocated_devices() -> None:
    """Devices held by allocated claims are not used again; admin access ignores them."""
    held = {(DRIVER, NODE, "d0")}
    assert picked(alloc(four(), allocated=held).allocate([claim(exactly("r"))])) == [("r", "d1")]
    admin = claim(exactly("r", adminAccess=True))
    result = alloc(four(), allocated=held).allocate([admin])
    assert picked(result) == [("r", "d0")] and allocation(result)["devices"]["results"][0]["adminAccess"]


def test_allocated_devices_ignores_admin_results() -> None:
    """An admin-access result holds no device."""
    c = {
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"driver": DRIVER, "pool": NODE, "device": "d0", "request": "r", "adminAccess": True},
                        {"driver": DRIVER, "pool": NODE, "device": "d1", "request": "r"},
                    ]
                }
            }
        }
    }
    assert allocated_devices([c]) == {(DRIVER, NODE, "d1")}


def test_class_and_request_selectors() -> None:
    """Both the class's and the request's selectors must match."""
    classes = [device_class("b-only", f"device.attributes['{DRIVER}'].model == 'b'")]
    c = claim(exactly("r", 1, f"device.attributes['{DRIVER}'].numa == 1", cls="b-only"))
    assert picked(alloc(four(), classes).allocate([c])) == [("r", "d3")]


def test_newest_generation_only_and_incomplete_pools_skipped() -> None:
    """Only the newest generation counts; an incomplete pool's devices are not used."""
    old = slice_("old", [device("stale")], generation=1)
    new = slice_("new", [device("fresh")], generation=2)
    assert picked(alloc([old, new]).allocate([claim(exactly("r"))])) == [("r", "fresh")]
    partial = slice_("p0", [device("x")], pool="other", count=2)
    outcome = alloc([partial]).allocate([claim(exactly("r"))])
    assert not outcome.ok and not outcome.error
    all_mode = claim({"name": "r", "exactly": {"deviceClassName": "example", "allocationMode": "All"}})
    assert "being updated" in alloc([partial]).allocate([all_mode]).error


def test_other_nodes_slices_are_ignored() -> None:
    """Slices of another node are not candidates; allNodes and matching nodeSelector ones are."""
    other = slice_("o", [device("far")], pool="b", nodeName="node-b")
    every = slice_("e", [device("shared")], pool="c", allNodes=True)
    sel = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]}
    zoned = slice_("z", [device("zoned")], pool="d", nodeSelector=sel)
    a = Allocator([other, every, zoned], CLASSES, node_name=NODE, node_labels={"zone": "z1"})
    outcome = a.allocate([claim(exactly("r", 2))])
    assert picked(outcome) == [("r", "shared"), ("r", "zoned")]
    assert "nodeSelector" in allocation(outcome)
    assert allocation(outcome)["nodeSelector"] == sel | {"nodeSelectorTerms": [sel["nodeSelectorTerms"][0]]}


def test_first_available_tries_subrequests_in_order() -> None:
    """firstAvailable picks the first subrequest that can be satisfied and names it req/sub."""

    def sub(n: str, c: int) -> dict[str, Any]:
        return {"name": n, "deviceClassName": "example", "count": c}

    c = claim({"name": "r", "firstAvailable": [sub("eight", 8), sub("two", 2)]})
    assert picked(alloc(four()).allocate([c])) == [("r/two", "d0"), ("r/two", "d1")]


def test_all_mode_takes_every_matching_device() -> None:
    """allocationMode All needs every matching device, and fails when one is in use."""
    c = claim(
        {
            "name": "r",
            "exactly": {
                "deviceClassName": "example",
                "allocationMode": "All",
                "selectors": [{"cel": {"expression": f"device.attributes['{DRIVER}'].model == 'a'"}}],
            },
        }
    )
    assert picked(alloc(four()).allocate([c])) == [("r", "d0"), ("r", "d2")]
    assert not alloc(four(), allocated={(DRIVER, NODE, "d2")}).allocate([c]).ok


def test_match_attribute_backtracks() -> None:
    """matchAttribute across requests makes the search back out of the first choice."""
    c = claim(
        exactly("x"),
        exactly("y", 1, f"device.attributes['{DRIVER}'].numa == 1"),
        constraints=[{"matchAttribute": f"{DRIVER}/numa"}],
    )
    assert picked(alloc(four()).allocate([c])) == [("x", "d2"), ("y", "d3")]


def test_distinct_attribute() -> None:
    """distinctAttribute needs different values."""
    c = claim(exactly("r", 2), constraints=[{"distinctAttribute": f"{DRIVER}/numa"}])
    assert picked(alloc(four()).allocate([c])) == [("r", "d0"), ("r", "d2")]


def test_taints_and_tolerations() -> None:
    """NoSchedule/NoExecute taints block unless tolerated; other effects do not."""
    taint = {"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}
    devs = [device("t", taints=[taint]), device("n", taints=[{"key": "k", "effect": "None"}]), device("ok")]
    assert picked(alloc([slice_("s", devs)]).allocate([claim(exactly("r"))])) == [("r", "n")]
    tol = [{"key": "gpu.nvidia.com/xid", "operator": "Exists"}]
    outcome = alloc([slice_("s", devs)]).allocate([claim(exactly("r", tolerations=tol))])
    assert (
        picked(outcome) == [("r", "t")] and allocation(outcome)["devices"]["results"][0]["tolerations"] == tol
    )


def test_shared_counters() -> None:
    """Devices consuming a counter set cannot together exceed it (also given existing allocations)."""
    counters = slice_(
        "a-counters", [], count=2, sharedCounters=[{"name": "gpu0", "counters": {"mem": {"value": "8"}}}]
    )

    def use(n: int) -> dict[str, Any]:
        return {"counterSet": "gpu0", "counters": {"mem": {"value": str(n)}}}

    devs = slice_(
        "b-devs",
        [
            device("whole", consumesCounters=[use(8)]),
            device("half0", consumesCounters=[use(4)]),
            device("half1", consumesCounters=[use(4)]),
        ],
        count=2,
    )
    assert picked(alloc([counters, devs]).allocate([claim(exactly("r", 2))])) == [
        ("r", "half0"),
        ("r", "half1"),
    ]
    assert (
        not alloc([counters, devs], allocated={(DRIVER, NODE, "half0")}).allocate([claim(exactly("r", 2))]).ok
    )


def test_configs_class_first_then_claim() -> None:
    """Class configs come first (FromClass), then the claim's (FromClaim); all-request ones drop requests."""
    opaque = {"opaque": {"driver": DRIVER, "parameters": {"k": "class"}}}
    classes = [device_class("example", config=[opaque])]
    claim_cfg = {"requests": ["r"], "opaque": {"driver": DRIVER, "parameters": {"k": "claim"}}}
    out = alloc(four(), classes).allocate([claim(exactly("r"), exactly("s"), config=[claim_cfg])])
    config = allocation(out)["devices"]["config"]
    assert [c["source"] for c in config] == ["FromClass", "FromClaim"]
    assert "requests" not in config[0] and config[1]["requests"] == ["r"]


def test_limits_and_errors_are_reported_not_raised() -> None:
    """Over 32 devices, unknown classes and CEL runtime errors abort with a message."""
    many = [slice_("s", [device(f"d{i}") for i in range(40)])]
    assert "exceeds the claim limit of 32" in alloc(many).allocate([claim(exactly("r", 33))]).error
    assert "not found" in alloc(four()).allocate([claim(exactly("r", cls="nope"))]).error
    bad = claim(exactly("r", 1, f"device.attributes['{DRIVER}'].missing == 1"))
    assert "no such key" in alloc(four()).allocate([bad]).error


def test_two_claims_do_not_share_devices() -> None:
    """Claims allocated together (one pod) get distinct devices."""
    out = alloc(four()).allocate([claim(exactly("r"), name="one"), claim(exactly("r"), name="two")])
    assert picked(out, 0) == [("r", "d0")] and picked(out, 1) == [("r", "d1")]


def test_diagnosis_names_the_failing_selector_and_amount() -> None:
    """The explanation quotes the failing selector and by how much a capacity falls short."""
    c = claim(exactly("r", 1, f"device.capacity['{DRIVER}'].memory.compareTo(quantity('41Gi')) >= 0"))
    diag = diagnose(alloc(four()), [c])
    assert not diag.outcome.ok
    verdict = diag.requests[0].verdicts[0]
    assert verdict.reason == "request selector #0 is false"
    assert any("short by 1Gi" in d for d in verdict.details)


def test_diagnosis_blames_constraints_when_requests_fit_alone() -> None:
    """When each request has enough devices alone, the findings describe the constraint's value split."""
    c = claim(exactly("r", 3), constraints=[{"matchAttribute": f"{DRIVER}/numa"}])
    diag = diagnose(alloc(four()), [c])
    assert not diag.outcome.ok
    assert any("matchAttribute" in f and "0: 2" in f for f in diag.findings)
