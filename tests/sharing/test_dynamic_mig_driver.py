"""Dynamic MIG through the real GpuDriver: create at the placement, destroy, failures, crash repair."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nvdra.core.checkpoint import Checkpoint
from nvdra.core.errors import NvmlInsufficientResources
from nvdra.core.featuregates import parse_feature_gates
from nvdra.plugins.gpu.mig import sweep_unknown_mig
from nvdra.plugins.state import CheckpointStore
from tests.plugins.conftest import allocated_claim, ref_of, result, uid_of
from tests.sharing.conftest import SimNode

GATES = "DynamicMIG=true"


def _claim(*devices: str) -> dict[str, Any]:
    return allocated_claim([result(d, request="mig") for d in devices])


def _gis(sim: SimNode, index: int = 0) -> list[tuple[int, int, int]]:
    """(profile id, start, size) of every GPU instance of GPU ``index``."""
    gis = sim.backend.snapshot().gpus[index].gpu_instances
    return [(g.profile_id, g.placement.start, g.placement.size) for g in gis]


def test_mig_device_is_created_at_the_allocated_placement_and_destroyed(sim: SimNode) -> None:
    """Prepare enables MIG (Hopper) and creates GI+CI at exactly the placement; unprepare undoes both."""
    driver = sim.driver(GATES)
    claim = _claim("gpu-0-mig-2g20gb-14-2")
    res = driver.prepare_resource_claims([claim])[uid_of(claim)]
    assert res.error == ""
    assert _gis(sim) == [(14, 2, 2)]
    gi = sim.backend.snapshot().gpus[0].gpu_instances[0]
    assert len(gi.compute_instances) == 1
    spec = yaml.safe_load(
        (sim.config.cdi_root / f"k8s.gpu.nvidia.com-claim_{uid_of(claim)}.yaml").read_text()
    )
    (dev,) = spec["devices"]
    nodes = [n["path"] for n in dev["containerEdits"]["deviceNodes"]]
    assert nodes[0] == "/dev/nvidia0"
    assert len([p for p in nodes if p.startswith("/dev/nvidia-caps/")]) == 2
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    state = sim.backend.snapshot().gpus[0]
    assert state.gpu_instances == ()
    assert not state.mig_current  # empty Hopper GPU: MIG mode off again


def test_claim_for_an_occupied_placement_fails_cleanly_and_changes_nothing(sim: SimNode) -> None:
    """An overlapping placement is refused by NVML (INSUFFICIENT_RESOURCES); the live device survives."""
    driver = sim.driver(GATES)
    first = _claim("gpu-0-mig-3g40gb-9-0")
    assert driver.prepare_resource_claims([first])[uid_of(first)].error == ""
    before = sim.backend.snapshot().gpus[0]
    clash = _claim("gpu-0-mig-1g10gb-19-2")
    error = driver.prepare_resource_claims([clash])[uid_of(clash)].error
    assert "INSUFFICIENT_RESOURCES" in error or "used by another GPU instance" in error
    assert sim.backend.snapshot().gpus[0] == before
    assert uid_of(clash) not in driver.checkpoint().claims
    assert not (sim.config.cdi_root / f"k8s.gpu.nvidia.com-claim_{uid_of(clash)}.yaml").exists()


def test_two_devices_of_one_claim_on_two_gpus(sim: SimNode) -> None:
    """A claim with MIG devices on two GPUs creates both; a failure of the second rolls back the first."""
    driver = sim.driver(GATES)
    sim.backend.set_mig_mode(1, True)
    sim.backend.create_gpu_instance(1, 0, 0)  # someone holds the whole of GPU 1
    claim = _claim("gpu-0-mig-1g10gb-19-0", "gpu-1-mig-1g10gb-19-0")
    assert driver.prepare_resource_claims([claim])[uid_of(claim)].error != ""
    assert _gis(sim, 0) == []
    assert not sim.backend.snapshot().gpus[0].mig_current


class _Killed(BaseException):
    """The process dies here (nothing in the driver may catch it)."""


class _DieOnCompleted(CheckpointStore):
    def save(self, checkpoint: Checkpoint) -> None:
        if any(c.state == "PrepareCompleted" for c in checkpoint.claims.values()):
            raise _Killed
        super().save(checkpoint)


def test_kill_between_gi_created_and_checkpoint_written_is_repaired_at_restart(sim: SimNode) -> None:
    """A crash after the MIG device exists but before PrepareCompleted: the restart destroys it."""
    store = _DieOnCompleted(sim.config.plugin_dir / "checkpoint.json", boot_id="b1")
    dying = sim.driver(GATES, store=store)
    claim = _claim("gpu-0-mig-1g20gb-15-4")
    with pytest.raises(_Killed):
        dying.prepare_resource_claims([claim])
    assert _gis(sim) == [(15, 4, 2)]  # made, but only PrepareStarted is on disk
    restarted = sim.driver(GATES)
    assert _gis(sim) == []
    assert restarted.checkpoint().claims == {}
    # the kubelet's retry now succeeds from scratch
    assert restarted.prepare_resource_claims([claim])[uid_of(claim)].error == ""
    assert _gis(sim) == [(15, 4, 2)]


def test_half_made_gpu_instance_without_compute_instance_is_rolled_back(sim: SimNode) -> None:
    """A crash between GI and CI creation leaves a bare GI; the retry rolls it back, then succeeds."""
    store = _DieOnCompleted(sim.config.plugin_dir / "checkpoint.json", boot_id="b1")
    dying = sim.driver(GATES, store=store)
    claim = _claim("gpu-0-mig-1g10gb-19-5")
    with pytest.raises(_Killed):
        dying.prepare_resource_claims([claim])
    gi = sim.backend.snapshot().gpus[0].gpu_instances[0]
    sim.backend.destroy_compute_instance(0, gi.gi_id, 0)  # as if the CI had never been made
    driver = sim.driver(GATES)  # start rolls the PrepareStarted entry back, bare GI included
    assert _gis(sim) == []
    assert driver.prepare_resource_claims([claim])[uid_of(claim)].error == ""
    assert _gis(sim) == [(19, 5, 1)]


def test_ci_creation_failure_leaves_no_gpu_instance(sim: SimNode) -> None:
    """If the compute instance cannot be made, the GI just made is destroyed again."""
    driver = sim.driver(GATES)
    sim.backend.inject_fault("create_compute_instance", 7, count=1)  # INSUFFICIENT_RESOURCES
    claim = _claim("gpu-0-mig-1g10gb-19-1")
    assert "create MIG device" in driver.prepare_resource_claims([claim])[uid_of(claim)].error
    assert _gis(sim) == []


def test_start_sweeps_unknown_mig_devices_but_keeps_prepared_ones(sim: SimNode) -> None:
    """At start, MIG devices no completed claim owns are destroyed; a prepared claim's device stays."""
    driver = sim.driver(GATES)
    claim = _claim("gpu-0-mig-1g10gb-19-0")
    assert driver.prepare_resource_claims([claim])[uid_of(claim)].error == ""
    gi = sim.backend.create_gpu_instance(0, 19, 3)  # made out of band
    sim.backend.create_compute_instance(0, gi)
    sim.backend.set_mig_mode(2, True)
    gone = sweep_unknown_mig(sim.backend, parse_feature_gates(GATES), driver.checkpoint())
    assert [(k.profile_id, k.start) for k in gone] == [(19, 3)]
    assert _gis(sim) == [(19, 0, 1)]
    assert not sim.backend.snapshot().gpus[2].mig_current  # empty Hopper GPU switched back
    assert sweep_unknown_mig(sim.backend, parse_feature_gates(""), Checkpoint(node_boot_id="b1")) == []


def test_occupied_placement_error_type_from_the_executor(sim: SimNode) -> None:
    """The executor surfaces NVML's INSUFFICIENT_RESOURCES unchanged for an occupied placement."""
    from nvdra.nvml.executor import MigExecutor, MigKey

    ex = MigExecutor(sim.backend)
    uuid = sim.backend.device_identity(0).uuid
    ex.create(MigKey(parent_uuid=uuid, profile_id=0, start=0))
    with pytest.raises(NvmlInsufficientResources):
        ex.create(MigKey(parent_uuid=uuid, profile_id=19, start=0))
