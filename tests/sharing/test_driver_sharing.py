"""TimeSlicing and MPS through the real GpuDriver on a simulated dgx-h100: GPU state and API read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nvdra.kubeletplugin.objects import DEPLOYMENTS
from nvdra.plugins.gpu.fake_mps_control import install_fake_mps_control
from tests.plugins.conftest import allocated_claim, gpu_config, opaque, ref_of, result, uid_of
from tests.sharing.conftest import SimNode, mig_config

TS_GATES = "TimeSlicingSettings=true"
MPS_GATES = "MPSSupport=true"


def _spec(sim: SimNode, uid: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(
        (sim.config.cdi_root / f"k8s.gpu.nvidia.com-claim_{uid}.yaml").read_text()
    )
    return spec


def _uuid(sim: SimNode, index: int) -> str:
    return sim.backend.device_identity(index).uuid


def test_time_slice_and_compute_mode_are_set_on_prepare_and_reset_on_unprepare(sim: SimNode) -> None:
    """TimeSlicing Long sets compute mode DEFAULT and time slice 3 on each full GPU; unprepare resets to 0."""
    sim.backend.set_compute_mode(1, 3)  # something else left it EXCLUSIVE_PROCESS
    driver = sim.driver(TS_GATES)
    sharing = {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}
    claim = allocated_claim([result("gpu-0"), result("gpu-1")], config=[opaque(gpu_config(sharing=sharing))])
    assert driver.prepare_resource_claims([claim])[uid_of(claim)].error == ""
    state = sim.backend.snapshot()
    for i in (0, 1):
        assert state.gpus[i].compute_mode == 0
        assert sim.runner.timeslice(_uuid(sim, i)) == 3
    assert sim.runner.timeslice(_uuid(sim, 2)) == 0
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert [sim.runner.timeslice(_uuid(sim, i)) for i in (0, 1)] == [0, 0]
    assert (
        "nvidia-smi",
        "compute-policy",
        "-i",
        _uuid(sim, 0),
        "--set-timeslice",
        "3",
    ) in sim.runner.commands


def test_time_slicing_without_its_gate_touches_nothing(sim: SimNode) -> None:
    """With TimeSlicingSettings off a claim prepares without any nvidia-smi call."""
    driver = sim.driver("")
    claim = allocated_claim([result("gpu-0")])
    assert driver.prepare_resource_claims([claim])[uid_of(claim)].error == ""
    assert sim.runner.commands == []


def test_default_config_time_slices_with_interval_default(sim: SimNode) -> None:
    """With the gate on, a claim without config gets TimeSlicing Default (time slice 0, mode DEFAULT)."""
    driver = sim.driver(TS_GATES)
    claim = allocated_claim([result("gpu-2")])
    assert driver.prepare_resource_claims([claim])[uid_of(claim)].error == ""
    assert (
        "nvidia-smi",
        "compute-policy",
        "-i",
        _uuid(sim, 2),
        "--set-timeslice",
        "0",
    ) in sim.runner.commands


def _mps_claim(**mps: object) -> dict[str, Any]:
    sharing = {"strategy": "MPS", "mpsConfig": mps}
    return allocated_claim([result("gpu-3")], config=[opaque(gpu_config(sharing=sharing))])


def test_mps_daemon_deployment_is_created_and_removed(sim: SimNode) -> None:
    """MPS prepare: EXCLUSIVE_PROCESS, a node-pinned Deployment, pipe/shm mounts; unprepare removes all."""
    driver = sim.driver(MPS_GATES)
    claim = _mps_claim(defaultActiveThreadPercentage=50, defaultPinnedDeviceMemoryLimit="10Gi")
    assert driver.prepare_resource_claims([claim])[uid_of(claim)].error == ""
    assert sim.backend.snapshot().gpus[3].compute_mode == 3
    (dep,) = sim.kube.list_objects(DEPLOYMENTS, "nvdra")
    name = dep["metadata"]["name"]
    assert name.startswith(f"mps-control-daemon-{uid_of(claim)}-")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeName"] == "n1"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["CUDA_VISIBLE_DEVICES"] == _uuid(sim, 3)
    assert env["MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert env["MPS_PINNED_MEMORY_LIMITS"] == f"{_uuid(sim, 3)}=10240M"
    daemon_dir = sim.config.plugin_dir / "mps" / name.removeprefix("mps-control-daemon-")
    assert (daemon_dir / "pipe").is_dir()
    spec = _spec(sim, uid_of(claim))
    assert "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps" in spec["containerEdits"]["env"]
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    assert mounts["/tmp/nvidia-mps"] == str(daemon_dir / "pipe")
    assert mounts["/dev/shm"] == str(daemon_dir / "shm")
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert sim.kube.list_objects(DEPLOYMENTS, "nvdra") == []
    assert not daemon_dir.exists()
    assert sim.backend.snapshot().gpus[3].compute_mode == 0


def test_mps_daemon_that_never_gets_ready_fails_the_claim_and_is_rolled_back(sim: SimNode) -> None:
    """Readiness is retried a bounded number of times; then the prepare fails and leaves nothing behind."""
    sim.ready_after_checks = 99
    driver = sim.driver(MPS_GATES)
    claim = _mps_claim()
    error = driver.prepare_resource_claims([claim])[uid_of(claim)].error
    assert "not ready after 5 checks" in error
    assert sim.kube.list_objects(DEPLOYMENTS, "nvdra") == []
    assert sim.backend.snapshot().gpus[3].compute_mode == 0
    assert uid_of(claim) not in driver.checkpoint().claims


def test_mps_limit_above_device_memory_is_refused_before_any_change(sim: SimNode) -> None:
    """A pinned-memory limit larger than the GPU is a config error; nothing is created."""
    driver = sim.driver(MPS_GATES)
    claim = _mps_claim(defaultPinnedDeviceMemoryLimit="100Gi")
    error = driver.prepare_resource_claims([claim])[uid_of(claim)].error
    assert "exceeds its memory" in error
    assert sim.kube.list_objects(DEPLOYMENTS, "nvdra") == []
    assert sim.runner.commands == []


def test_mps_on_a_static_mig_device_serves_the_mig_uuid(tmp_path: Path) -> None:
    """Static MIG (a100-mig): MigDeviceConfig with MPS starts a daemon for the MIG device, no compute mode."""
    sim = SimNode(tmp_path, "a100-mig")
    try:
        driver = sim.driver(MPS_GATES)
        name = "gpu-0-mig-1g5gb-19-0"
        mig_uuid = next(r.uuid for r in sim.backend.mig_devices(0) if r.placement.start == 0)
        cfg = mig_config(sharing={"strategy": "MPS"})
        claim = allocated_claim([result(name, request="mig")], config=[opaque(cfg)])
        assert driver.prepare_resource_claims([claim])[uid_of(claim)].error == ""
        (dep,) = sim.kube.list_objects(DEPLOYMENTS, "nvdra")
        env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CUDA_VISIBLE_DEVICES"] == mig_uuid
        assert not [c for c in sim.runner.commands if "-c" in c]
        spec = _spec(sim, uid_of(claim))
        paths = [n["path"] for d in spec["devices"] for n in d["containerEdits"]["deviceNodes"]]
        assert any(p.startswith("/dev/nvidia-caps/nvidia-cap") for p in paths)
    finally:
        sim.close()


def test_fake_mps_control_is_installed_into_the_simulated_driver_root(sim: SimNode) -> None:
    """The simulated node's nvidia-cuda-mps-control is the fake program, not an exit-0 stub."""
    sim.driver(MPS_GATES)
    text = (sim.root / "usr/bin/nvidia-cuda-mps-control").read_text()
    assert "fake_mps_control" in text
    assert install_fake_mps_control(sim.root) == sim.root / "usr/bin/nvidia-cuda-mps-control"
