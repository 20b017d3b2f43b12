"""SimulatedNvml with a state file: the hardware outlives the object (a process), restores faithfully,
refuses impossible files, and reboots like a node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvdra.core.errors import ConfigError, NvmlInvalidArgument, NvmlNotFound
from nvdra.nvml import SimulatedNvml

EXCLUSIVE_PROCESS = 3


def fresh(path: Path, profile: str = "dgx-h100") -> SimulatedNvml:
    """A simulated node over ``path``, initialised."""
    node = SimulatedNvml(profile, state_path=path)
    node.init()
    return node


def test_state_survives_a_new_object(tmp_path: Path) -> None:
    """MIG mode, a GI+CI, a bare GI, compute mode, time slice and process counts read back identically."""
    path = tmp_path / "nvml.json"
    a = fresh(path)
    a.set_mig_mode(3, True)
    a.create_compute_instance(3, a.create_gpu_instance(3, 19, 0))
    a.create_gpu_instance(3, 14, 2)  # a bare GI, as a crash between GI and CI leaves it
    a.set_compute_mode(2, EXCLUSIVE_PROCESS)
    a.set_timeslice(a.device_identity(1).uuid, 2)
    a.set_processes(4, 3)
    b = fresh(path)
    assert b.snapshot().gpus == a.snapshot().gpus  # the call counters differ by design
    assert b.mig_devices(3) == a.mig_devices(3)
    assert b.timeslice(b.device_identity(1).uuid) == 2


def test_restored_geometry_keeps_the_placement_rules(tmp_path: Path) -> None:
    """After a restore the occupied placement is still refused and the bare GI can be destroyed."""
    path = tmp_path / "nvml.json"
    a = fresh(path)
    a.set_mig_mode(3, True)
    gi = a.create_gpu_instance(3, 14, 2)
    b = fresh(path)
    with pytest.raises(Exception, match="memory slices"):
        b.create_gpu_instance(3, 14, 2)
    b.destroy_gpu_instance(3, gi)
    assert fresh(path).snapshot().gpus[3].gpu_instances == ()


def test_missing_file_is_created_with_the_fresh_node(tmp_path: Path) -> None:
    """No file yet: the profile's state is used and written out."""
    path = tmp_path / "sub" / "nvml.json"
    fresh(path)
    doc = json.loads(path.read_text())
    assert doc["kind"] == "nvdra.simulated-nvml" and len(doc["gpus"]) == 8


def test_failed_calls_do_not_change_the_file(tmp_path: Path) -> None:
    """A refused call (MIG off) leaves the state file byte for byte as it was."""
    path = tmp_path / "nvml.json"
    node = fresh(path)
    before = path.read_bytes()
    with pytest.raises(Exception, match="MIG mode is disabled"):
        node.create_gpu_instance(0, 19, 0)
    with pytest.raises(NvmlInvalidArgument):
        node.set_timeslice(node.device_identity(0).uuid, 9)
    with pytest.raises(NvmlNotFound):
        node.set_timeslice("GPU-nope", 1)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda d: d.update(kind="other"), "kind"),
        (lambda d: d["gpus"][0].update(computeMode="x"), "computeMode"),
        (
            lambda d: d["gpus"][0]["gpuInstances"].append({"giId": 1, "profileId": 999, "start": 0}),
            "profile 999",
        ),
        (lambda d: d["gpus"][0].update(uuid="GPU-unknown"), "GPU-unknown"),
    ],
)
def test_impossible_files_are_refused_naming_the_field(tmp_path: Path, mutate: object, named: str) -> None:
    """A wrong kind, a wrong type, an impossible GI or an unknown GPU: ConfigError naming it."""
    path = tmp_path / "nvml.json"
    fresh(path)
    doc = json.loads(path.read_text())
    doc["gpus"][0]["migCurrent"] = True
    mutate(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=named):
        SimulatedNvml("dgx-h100", state_path=path)


def test_overlapping_instances_are_refused(tmp_path: Path) -> None:
    """Two GIs over the same memory slice cannot come from real hardware."""
    path = tmp_path / "nvml.json"
    fresh(path)
    doc = json.loads(path.read_text())
    doc["gpus"][0]["gpuInstances"] = [
        {"giId": 7, "profileId": 19, "start": 0, "computeInstances": []},
        {"giId": 3, "profileId": 14, "start": 0, "computeInstances": []},
    ]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="do not overlap"):
        SimulatedNvml("dgx-h100", state_path=path)


def test_reboot_resets_what_a_reboot_resets(tmp_path: Path) -> None:
    """GIs/CIs, compute modes, time slices and processes are gone; MIG mode stays (and persists)."""
    path = tmp_path / "nvml.json"
    node = fresh(path)
    node.set_mig_mode(3, True)
    node.create_compute_instance(3, node.create_gpu_instance(3, 19, 0))
    node.set_compute_mode(2, EXCLUSIVE_PROCESS)
    node.set_timeslice(node.device_identity(1).uuid, 3)
    node.reboot()
    after = fresh(path).snapshot()
    assert after.gpus[3].mig_current and after.gpus[3].gpu_instances == ()
    assert {g.compute_mode for g in after.gpus} == {0}
    assert fresh(path).timeslice(node.device_identity(1).uuid) == 0
