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


def mps_share(device: str, n: int, memory: str, **mps: Any) -> dict[str, Any]:
    r = {
        **result(device),
        "shareID": f"66666666-0000-0000-0000-00000000000{n}",
        "consumedCapacity": {"memory": memory},
    }
    sharing = {"strategy": "MPS", "mpsConfig": mps} if mps else {"strategy": "MPS"}
    return allocated_claim([r], config=[opaque(gpu_config(sharing=sharing))])


def test_mps_shares_get_one_daemon_and_their_own_limits(sim: SimNode) -> None:
    """Past upstream: two MPS shares of gpu-3 run under one daemon; each claim's containers are held to
    what the scheduler counted (pinned memory = consumed memory, threads = its part of the memory), a
    claim's own lower limit still applies, and the daemon stays until the last share is unprepared."""
    import yaml

    from nvdra.kubeletplugin.objects import DEPLOYMENTS

    driver = sim.driver("MPSSupport=true")
    driver.shares = True
    uuid = sim.backend.device_identity(3).uuid
    a = mps_share("gpu-3", 1, "20Gi")
    b = mps_share("gpu-3", 2, "40Gi", defaultPinnedDeviceMemoryLimit="30Gi")
    assert [driver.prepare_resource_claims([c])[c["metadata"]["uid"]].error for c in (a, b)] == ["", ""]
    (dep,) = sim.kube.list_objects(DEPLOYMENTS, "nvdra")
    assert dep["metadata"]["name"].startswith("mps-control-daemon-shared-")

    def env(claim: dict[str, Any]) -> list[str]:
        path = sim.config.cdi_root / f"k8s.gpu.nvidia.com-claim_{claim['metadata']['uid']}.yaml"
        return list(yaml.safe_load(path.read_text())["containerEdits"]["env"])

    from nvdra.nvml import discover_inventory

    memory = next(g.memory_bytes for g in discover_inventory(sim.backend).gpus if g.name == "gpu-3")
    assert memory is not None
    memory_mib = memory // 2**20  # 81559 on an H100
    assert f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={uuid}=20480M" in env(a)
    assert f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={-(-100 * 20480 // memory_mib)}" in env(a)
    assert f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={uuid}=30720M" in env(b)  # its own 30Gi beats 40Gi consumed
    assert driver.unprepare_resource_claims([ref_of(a)]) == {ref_of(a).uid: ""}
    assert len(sim.kube.list_objects(DEPLOYMENTS, "nvdra")) == 1  # b still runs under it
    assert driver.unprepare_resource_claims([ref_of(b)]) == {ref_of(b).uid: ""}
    assert sim.kube.list_objects(DEPLOYMENTS, "nvdra") == []
