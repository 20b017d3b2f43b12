"""Consumable capacity (KEP-5075): the allocator rounds, defaults and sums capacity as the scheduler does.

The devices are made shareable by :func:`nvdra.core.shares.apply_consumable_shares`, the very function
the GPU plugin publishes with, so these tests also pin what each ``--consumable-shares`` mode lets the
scheduler do.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from nvdra.alloc import Allocator, allocated_devices, capacity_consumption, consumed_capacity, diagnose
from nvdra.core.shares import SharesOption, apply_consumable_shares, parse_consumable_shares
from tests.alloc.helpers import DRIVER, NODE, claim, device, device_class, exactly, picked, slice_

GI = 1024**3
CLASSES = [device_class()]


def gpu(name: str, mem: str = "40Gi") -> dict[str, Any]:
    d = device(name, mem=mem)
    d["attributes"]["type"] = {"string": "gpu"}
    return d


def shared(option: SharesOption, *devices: dict[str, Any]) -> list[dict[str, Any]]:
    return [slice_("s0", apply_consumable_shares(list(devices), option))]


def asking(name: str = "c", **requests: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"capacity": {"requests": requests}} if requests else {}
    return claim(exactly("r", **extra), name=name)


def results(outcome: Any, index: int = 0) -> list[dict[str, Any]]:
    assert outcome.ok, outcome
    return outcome.allocations[index]["devices"]["results"]  # type: ignore[no-any-return]


def fill(slices: list[dict[str, Any]], claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Allocate claims one scheduling cycle each, as the scheduler does pod after pod."""
    done: list[dict[str, Any]] = []
    for c in claims:
        a = Allocator(
            slices,
            CLASSES,
            node_name=NODE,
            allocated=allocated_devices(done),
            consumed=consumed_capacity(done),
        )
        outcome = a.allocate([c])
        if not outcome.ok:
            break
        done.append({**c, "status": {"allocation": outcome.allocations[0]}})  # type: ignore[index]
    return done


def test_memory_mode_default_takes_the_whole_device() -> None:
    """``memory``: a claim asking nothing consumes all memory, so a second one needs another GPU."""
    slices = shared(SharesOption("memory"), gpu("g0"), gpu("g1"))
    done = fill(slices, [asking(f"c{i}") for i in range(3)])
    assert [r["device"] for c in done for r in c["status"]["allocation"]["devices"]["results"]] == [
        "g0",
        "g1",
    ]
    first = done[0]["status"]["allocation"]["devices"]["results"][0]
    assert first["consumedCapacity"] == {"memory": "40Gi"} and first["shareID"]


def test_memory_mode_packs_requests_until_memory_runs_out() -> None:
    """``memory``: 10Gi claims pack four to a 40Gi GPU; the fifth goes to the next GPU."""
    slices = shared(SharesOption("memory"), gpu("g0"), gpu("g1"))
    done = fill(slices, [asking(f"c{i}", memory="10Gi") for i in range(6)])
    devices = [c["status"]["allocation"]["devices"]["results"][0]["device"] for c in done]
    assert devices == ["g0"] * 4 + ["g1"] * 2


def test_unlimited_claims_asking_nothing_never_run_out() -> None:
    """``unlimited``: default 0, so any number of claims without requests share one GPU."""
    slices = shared(SharesOption("unlimited"), gpu("g0"))
    done = fill(slices, [asking(f"c{i}") for i in range(20)])
    assert len(done) == 20
    assert {
        c["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"]["memory"] for c in done
    } == {"0"}


def test_count_mode_caps_claims_per_device() -> None:
    """N=3: each claim takes one share by default; the fourth claim finds no share left."""
    slices = shared(SharesOption("count", 3), gpu("g0"))
    done = fill(slices, [asking(f"c{i}") for i in range(5)])
    assert len(done) == 3
    assert done[0]["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"] == {
        "memory": "0",
        "shares": "1",
    }
    a = Allocator(slices, CLASSES, node_name=NODE, consumed=consumed_capacity(done))
    why = diagnose(a, [asking("late")]).requests[0].verdicts[0].reason
    assert why == "capacity: capacity shares: needs 1, 0 of 3 left"


def test_request_is_rounded_up_to_the_step() -> None:
    """A request between steps consumes the next step (1Mi): 1.5Mi → 2Mi."""
    slices = shared(SharesOption("memory"), gpu("g0"))
    out = Allocator(slices, CLASSES, node_name=NODE).allocate([asking(memory="1536Ki")])
    assert results(out)[0]["consumedCapacity"] == {"memory": "2Mi"}


def test_request_below_min_consumes_min() -> None:
    """``memory`` mode's range starts at 1Mi: asking 1 byte consumes 1Mi."""
    slices = shared(SharesOption("memory"), gpu("g0"))
    out = Allocator(slices, CLASSES, node_name=NODE).allocate([asking(memory="1")])
    assert results(out)[0]["consumedCapacity"] == {"memory": "1Mi"}


def test_request_above_max_violates_the_policy() -> None:
    """Asking more than the range's max rules the device out, with the policy named."""
    slices = shared(SharesOption("memory"), gpu("g0"))
    a = Allocator(slices, CLASSES, node_name=NODE)
    assert not a.allocate([asking(memory="41Gi")]).ok
    why = diagnose(a, [asking(memory="41Gi")]).requests[0].verdicts[0].reason
    assert why == "capacity: capacity memory: consuming 41Gi is above the policy's max 40Gi"


def test_valid_values_round_up_to_the_next_listed_value() -> None:
    """``validValues``: a request takes the first listed value at or above it; above all is refused."""
    d = device("d0", mem="8Gi", allowMultipleAllocations=True)
    d["capacity"]["memory"]["requestPolicy"] = {"default": "2Gi", "validValues": ["2Gi", "4Gi", "8Gi"]}
    assert capacity_consumption(d, {"memory": "3Gi"}) == ({"memory": Decimal(4 * GI)}, "")
    assert capacity_consumption(d, {})[0] == {"memory": Decimal(2 * GI)}
    assert capacity_consumption(d, {"memory": "9Gi"})[0] is None


def test_capacity_the_device_lacks_rules_it_out() -> None:
    """Asking for a capacity the device does not publish skips it (another device may have it)."""
    slices = shared(SharesOption("memory"), gpu("g0"))
    a = Allocator(slices, CLASSES, node_name=NODE)
    assert not a.allocate([asking(shares="1")]).ok
    why = diagnose(a, [asking(shares="1")]).requests[0].verdicts[0].reason
    assert "does not publish" in why


def test_exclusive_device_checks_capacity_but_records_nothing() -> None:
    """Without allowMultipleAllocations the request is only a minimum; no shareID, no consumedCapacity."""
    slices = [slice_("s0", [gpu("g0", mem="40Gi"), gpu("g1", mem="80Gi")])]
    out = Allocator(slices, CLASSES, node_name=NODE).allocate([asking(memory="60Gi")])
    (r,) = results(out)
    assert r["device"] == "g1" and "shareID" not in r and "consumedCapacity" not in r


def test_two_requests_of_one_claim_share_a_device_within_capacity() -> None:
    """The run's own placements count: two 30Gi requests cannot both land on one 40Gi GPU."""
    slices = shared(SharesOption("memory"), gpu("g0"), gpu("g1"))
    c = claim(
        exactly("a", capacity={"requests": {"memory": "30Gi"}}),
        exactly("b", capacity={"requests": {"memory": "30Gi"}}),
    )
    assert picked(Allocator(slices, CLASSES, node_name=NODE).allocate([c])) == [("a", "g0"), ("b", "g1")]
    small = claim(
        exactly("a", capacity={"requests": {"memory": "20Gi"}}),
        exactly("b", capacity={"requests": {"memory": "20Gi"}}),
    )
    out = Allocator(slices, CLASSES, node_name=NODE).allocate([small])
    assert picked(out) == [("a", "g0"), ("b", "g0")]
    ids = {r["shareID"] for r in results(out)}
    assert len(ids) == 2


def test_admin_access_consumes_nothing() -> None:
    """An admin-access request on a full shared device is allocated and records no consumption."""
    slices = shared(SharesOption("memory"), gpu("g0"))
    done = fill(slices, [asking("c0")])
    admin = claim(exactly("r", adminAccess=True))
    a = Allocator(slices, CLASSES, node_name=NODE, consumed=consumed_capacity(done))
    (r,) = results(a.allocate([admin]))
    assert r["adminAccess"] and "consumedCapacity" not in r


def test_shared_results_hold_no_device_exclusively() -> None:
    """A result with a shareID is a share: the device is not in the exclusive set, its capacity is summed."""
    c = {
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"driver": DRIVER, "pool": NODE, "device": "g0", "request": "r", "shareID": "u1",
                         "consumedCapacity": {"memory": "10Gi"}},
                        {"driver": DRIVER, "pool": NODE, "device": "g0", "request": "s", "shareID": "u2",
                         "consumedCapacity": {"memory": "5Gi"}},
                    ]
                }
            }
        }
    }  # fmt: skip
    assert allocated_devices([c]) == set()
    assert consumed_capacity([c]) == {(DRIVER, NODE, "g0"): {"memory": Decimal(15 * GI)}}


def test_published_memory_is_rounded_down_to_whole_mebibytes() -> None:
    """The API requires max and default on the step grid: 81559.5Mi is published as 81559Mi."""
    raw = str(81559 * 1024 * 1024 + 512 * 1024)
    (d,) = apply_consumable_shares([gpu("g0", mem=raw)], SharesOption("memory"))
    assert d["capacity"]["memory"] == {
        "value": "81559Mi",
        "requestPolicy": {
            "default": "81559Mi",
            "validRange": {"min": "1Mi", "max": "81559Mi", "step": "1Mi"},
        },
    }
    assert d["allowMultipleAllocations"] is True


@pytest.mark.parametrize(
    ("text", "gate", "expected"),
    [
        ("disabled", False, "disabled"),
        ("", False, "disabled"),
        ("memory", True, "memory"),
        (" unlimited ", True, "unlimited"),
        ("4", True, "4"),
    ],
)
def test_consumable_shares_values(text: str, gate: bool, expected: str) -> None:
    assert str(parse_consumable_shares(text, gate_enabled=gate)) == expected


@pytest.mark.parametrize(("text", "gate"), [("0", True), ("-2", True), ("lots", True), ("memory", False)])
def test_consumable_shares_refusals(text: str, gate: bool) -> None:
    """A bad value, or any sharing with the gate off, is refused with the flag and what is allowed."""
    with pytest.raises(ValueError, match="--consumable-shares"):
        parse_consumable_shares(text, gate_enabled=gate)
