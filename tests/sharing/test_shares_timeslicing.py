"""Consumable shares with time-slicing on a simulated dgx-h100: a shared GPU has one time slice, kept
until the last share is unprepared; a share asking for another one is refused (as upstream)."""

from __future__ import annotations

from typing import Any

from tests.plugins.conftest import allocated_claim, gpu_config, opaque, ref_of, result
from tests.sharing.conftest import SimNode

TS_GATES = "TimeSlicingSettings=true"


def share(device: str, n: int, interval: str) -> dict[str, Any]:
    r = {**result(device), "shareID": f"55555555-0000-0000-0000-00000000000{n}"}
    sharing = {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": interval}}
    return allocated_claim([r], config=[opaque(gpu_config(sharing=sharing))])


def test_time_slice_stays_until_the_last_share_goes(sim: SimNode) -> None:
    driver = sim.driver(TS_GATES)
    driver.shares = True
    uuid = sim.backend.device_identity(0).uuid
    a, b = share("gpu-0", 1, "Long"), share("gpu-0", 2, "Long")
    assert [driver.prepare_resource_claims([c])[c["metadata"]["uid"]].error for c in (a, b)] == ["", ""]
    assert sim.runner.timeslice(uuid) == 3
    assert driver.unprepare_resource_claims([ref_of(a)]) == {ref_of(a).uid: ""}
    assert sim.runner.timeslice(uuid) == 3  # b still shares the GPU
    assert driver.unprepare_resource_claims([ref_of(b)]) == {ref_of(b).uid: ""}
    assert sim.runner.timeslice(uuid) == 0


def test_a_share_with_another_time_slice_is_refused(sim: SimNode) -> None:
    driver = sim.driver(TS_GATES)
    driver.shares = True
    a, b = share("gpu-1", 1, "Long"), share("gpu-1", 2, "Short")
    assert driver.prepare_resource_claims([a])[a["metadata"]["uid"]].error == ""
    refused = driver.prepare_resource_claims([b])[b["metadata"]["uid"]].error
    assert "conflicts with claim" in refused and "time slice 1" in refused
