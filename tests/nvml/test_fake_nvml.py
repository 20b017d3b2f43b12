"""PynvmlBackend over the fake libnvidia-ml.so.1 (C ABI, unchanged nvidia-ml-py), fed by each profile.

The conformance suite, discovery, MIG changes, struct-version fallbacks, error codes and events of the
real backend run here on every commit, without a GPU: the same answers the simulator gives must come
back through ctypes structs, return codes and the library search under a driver root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nvdra.core.errors import NvmlError, NvmlGpuLost, NvmlInUse, NvmlNotSupported, NvmlUninitialized
from nvdra.nvml import (
    PROFILE_NAMES,
    PynvmlBackend,
    SimulatedNvml,
    discover_inventory,
    nvml_session,
    run_conformance,
)
from nvdra.nvml import _backend as b
from nvdra.nvml._fakelib import (
    FAKE_NVML_STATE_FILE,
    append_fake_nvml_event,
    lose_fake_nvml_gpu,
    render_fake_nvml_state,
)
from nvdra.nvml._simstate import mig_uuid
from tests.fakenvml import fake_driver_root, fake_nvml_library, fresh_pynvml

Real = Callable[..., PynvmlBackend]


@pytest.fixture
def real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Real:
    """Factory: an uninitialised PynvmlBackend on a fresh driver root holding the fake library."""
    fresh_pynvml(monkeypatch)
    monkeypatch.delenv("NVDRA_FAKE_NVML_STATE", raising=False)

    def make(node: SimulatedNvml | str, **kw: object) -> PynvmlBackend:
        root = fake_driver_root(tmp_path / "root", node, **kw)  # type: ignore[arg-type]
        return PynvmlBackend(root)

    return make


def _state(backend: PynvmlBackend) -> Path:
    assert backend.driver_root is not None
    return backend.driver_root / "usr/lib64" / FAKE_NVML_STATE_FILE


def test_the_library_exports_real_entry_points() -> None:
    """The build exports the versioned NVML symbols pynvml binds (not Python stand-ins)."""
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(fake_nvml_library())], capture_output=True, text=True, check=True
    ).stdout
    for name in (
        "nvmlInitWithFlags",
        "nvmlDeviceGetCount_v2",
        "nvmlDeviceGetHandleByIndex_v2",
        "nvmlDeviceGetPciInfo_v3",
        "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
        "nvmlComputeInstanceGetInfo_v2",
        "nvmlDeviceGetNvLinkRemotePciInfo_v2",
        "nvmlDeviceGetGpuFabricInfoV",
        "nvmlEventSetWait_v2",
    ):
        assert f" T {name}\n" in symbols, name
    omitted = fake_nvml_library(("nvmlDeviceGetGpuFabricInfoV",))
    older = subprocess.run(
        ["nm", "-D", "--defined-only", str(omitted)], capture_output=True, text=True, check=True
    ).stdout
    assert " T nvmlDeviceGetGpuFabricInfoV\n" not in older
    assert " T nvmlDeviceGetGpuFabricInfo\n" in older


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_real_backend_conforms_on_every_profile(name: str, real: Real) -> None:
    """Every conformance check, mutating ones included, ends as it does on the simulator (none fails)."""
    want = [(r.name, r.outcome) for r in run_conformance(SimulatedNvml(name), allow_mutation=True)]
    results = run_conformance(real(name), allow_mutation=True)
    assert [r for r in results if not r.ok] == []
    assert [(r.name, r.outcome) for r in results] == want


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_real_backend_discovers_what_the_simulator_does(name: str, real: Real) -> None:
    """Through ctypes and the C ABI, discovery builds the very inventory the simulator gives."""
    sim = SimulatedNvml(name)
    with nvml_session(sim), nvml_session(real(name)) as backend:
        assert discover_inventory(backend) == discover_inventory(sim)


def test_mig_round_trip_over_the_library_on_hopper(real: Real) -> None:
    """MIG on (Hopper: at once), then GI/CI create, list and destroy, with the simulator's UUIDs and ids."""
    backend = real("dgx-h100")
    with nvml_session(backend):
        assert backend.set_mig_mode(0, True) == 0
        assert backend.mig_mode(0) == b.MigModeState(current=True, pending=True)
        before = _state(backend).read_text()
        results = {r.name: r.outcome for r in run_conformance(backend, allow_mutation=True)}
        assert results["check_mig_round_trip"] == "passed"
        assert _state(backend).read_text() == before  # restored, and written back as it changed
        gi = backend.create_gpu_instance(0, 19, 3)
        ci = backend.create_compute_instance(0, gi)
        uuid = backend.device_identity(0).uuid
        profile = next(p for p in backend.gpu_instance_profiles(0) if p.id == 19)
        assert ci.uuid == mig_uuid(uuid, gi, 0, profile.placements[3])
        assert gi == 7 + 3  # the 8-slice GI id tree: eighths are 7 + start
        assert backend.index_by_uuid(ci.uuid) == 0


def test_hardware_state_outlives_the_session(real: Real) -> None:
    """A compute mode and a MIG device made in one session are there in the next (the state file)."""
    backend = real("a100-mig")
    with nvml_session(backend):
        backend.set_compute_mode(0, b.COMPUTE_MODE_EXCLUSIVE_PROCESS)
        free = next(p for p in backend.gpu_instance_profiles(2) if p.slice_count == 1)
        gi = backend.create_gpu_instance(2, free.id, free.placements[0].start)
        made = backend.create_compute_instance(2, gi)
    assert "compute 0 3\n" in _state(backend).read_text()
    with nvml_session(backend):
        assert backend.compute_mode(0) == b.COMPUTE_MODE_EXCLUSIVE_PROCESS
        assert made.uuid in {r.uuid for r in backend.mig_devices(2)}


def test_ampere_mig_change_waits_for_a_reset(real: Real) -> None:
    """On Ampere, enabling MIG answers RESET_REQUIRED and stays pending; profiles stay hidden till then."""
    backend = real("dgx-a100")
    with nvml_session(backend):
        assert backend.set_mig_mode(0, True) == 16
        assert backend.mig_mode(0) == b.MigModeState(current=False, pending=True)
        assert backend.gpu_instance_profiles(0) == ()


@pytest.mark.parametrize(
    ("fabric_version", "omit"),
    [(3, ()), (2, ()), (1, ()), (1, ("nvmlDeviceGetGpuFabricInfoV",))],
    ids=["v3", "v2-driver", "v1-driver", "no-V-symbol"],
)
def test_fabric_info_falls_back_on_older_drivers(
    real: Real, fabric_version: int, omit: tuple[str, ...]
) -> None:
    """v3 → v2 on ARGUMENT_VERSION_MISMATCH → the unversioned call on mismatch or FUNCTION_NOT_FOUND."""
    sim = SimulatedNvml("gb200-nvl72-tray")
    sim.init()
    want = sim.fabric_info(0)
    backend = real("gb200-nvl72-tray", fabric_version=fabric_version, omit=omit)
    with nvml_session(backend):
        got = backend.fabric_info(0)
    assert (got.state, got.status, got.cluster_uuid, got.clique_id) == (
        want.state,
        want.status,
        want.cluster_uuid,
        want.clique_id,
    )
    assert got.health_summary == (want.health_summary if fabric_version == 3 else 0)
    assert got.health_mask == (want.health_mask if fabric_version >= 2 else 0)


def test_optional_calls_answer_none_on_an_older_driver(real: Real) -> None:
    """A missing symbol (FUNCTION_NOT_FOUND) and NOT_SUPPORTED both read as 'not there'."""
    backend = real(
        "dgx-h100",
        omit=("nvmlDeviceGetAddressingMode",),
        faults=[("nvmlDeviceGetMemoryInfo", 3), ("nvmlDeviceGetNumaNodeId", 3)],
    )
    with nvml_session(backend):
        assert backend.addressing_mode(0) is None
        assert backend.memory_total(0) is None
        assert backend.numa_node(0) is None


def test_memory_info_reports_the_whole_framebuffer_free_in_both_struct_versions(real: Real) -> None:
    """v1 and v2 answer the simulator's total, all of it free; v2 keeps its version word, and another
    version word is ARGUMENT_VERSION_MISMATCH (25)."""
    import pynvml

    backend = real("dgx-h100")
    sim = SimulatedNvml("dgx-h100")
    with nvml_session(sim):
        total = sim.memory_total(0)
    with nvml_session(backend):
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        v1 = pynvml.nvmlDeviceGetMemoryInfo(handle)
        v2 = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        assert (v1.total, v1.free, v1.used) == (total, total, 0)
        assert (v2.version, v2.total, v2.free, v2.used, v2.reserved) == (
            pynvml.nvmlMemory_v2,
            total,
            total,
            0,
            0,
        )
        with pytest.raises(pynvml.NVMLError) as raised:
            pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2 - (1 << 24))
        assert raised.value.value == 25


def test_a_failed_device_call_names_the_call_the_gpu_and_the_arguments(real: Real) -> None:
    backend = real("dgx-h100", faults=[("nvmlDeviceGetComputeMode", 15)])
    with nvml_session(backend):
        with pytest.raises(NvmlGpuLost, match=r"^nvmlDeviceGetComputeMode\(GPU 0\): "):
            backend.compute_mode(0)
        with pytest.raises(NvmlNotSupported, match=r"^nvmlDeviceSetComputeMode\(GPU 1, 1\): "):
            backend.set_compute_mode(1, 1)  # EXCLUSIVE_THREAD: removed from current drivers


def test_init_failure_names_the_library_and_nvml_error(real: Real) -> None:
    """nvmlInitWithFlags's own code comes back as the nvdra error, naming the library it came from."""
    backend = real("pcie-l4", faults=[("nvmlInitWithFlags", 9)])
    with pytest.raises(NvmlError) as info:
        backend.init()
    assert info.value.code == 9
    assert "Driver Not Loaded" in str(info.value)
    assert "libnvidia-ml.so.580.105.08" in str(info.value)
    with pytest.raises(NvmlUninitialized):
        backend.device_count()


def test_a_malformed_state_file_is_reported_by_line(real: Real, capfd: pytest.CaptureFixture[str]) -> None:
    """The fake is strict about its input: a bad line fails nvmlInit, naming file and line."""
    backend = real("pcie-l4")
    state = _state(backend)
    state.write_text(state.read_text() + "gpu 1 not-enough-fields\n")
    with pytest.raises(NvmlError) as info:
        backend.init()
    assert info.value.code == 999
    lines = state.read_text().count("\n")
    assert f"{state}:{lines}: gpu: want <index>" in capfd.readouterr().err


def test_events_arrive_and_a_lost_gpu_is_reported(real: Real) -> None:
    """Registered XIDs come out of nvmlEventSetWait_v2; others time out (10); a lost GPU is GPU_IS_LOST."""
    backend = real("dgx-h100")
    state = _state(backend)
    with nvml_session(backend):
        backend.register_events(1, b.HEALTH_EVENT_MASK)
        with pytest.raises(NvmlError) as timeout:
            backend.wait_event(20)
        assert timeout.value.code == b.NVML_TIMEOUT
        append_fake_nvml_event(state, 0, b.EVENT_XID_CRITICAL, 79)  # GPU 0 is not registered
        append_fake_nvml_event(state, 1, b.EVENT_XID_CRITICAL, 48, gi_id=3, ci_id=0)
        event = backend.wait_event(1000)
        assert (event.index, event.event_type, event.data, event.gi_id, event.ci_id) == (1, 8, 48, 3, 0)
        assert event.uuid == backend.device_identity(1).uuid
        lose_fake_nvml_gpu(state, 1)
        with pytest.raises(NvmlGpuLost):
            backend.wait_event(1000)
        with pytest.raises(NvmlGpuLost):
            backend.device_identity(1)
        backend.free_events()


def test_state_renders_the_simulator_now(tmp_path: Path) -> None:
    """The state file carries the simulated node's current MIG devices, modes and lost GPUs."""
    sim = SimulatedNvml("dgx-h100")
    sim.init()
    sim.set_mig_mode(2, True)
    gi = sim.create_gpu_instance(2, 9, 4)
    ci = sim.create_compute_instance(2, gi)
    sim.set_compute_mode(1, b.COMPUTE_MODE_PROHIBITED)
    sim.mark_gpu_lost(5)
    text = render_fake_nvml_state(sim)
    assert "migmode 2 1 1\n" in text
    (record,) = sim.snapshot().gpus[2].gpu_instances
    assert f"gi 2 {gi} 9 4 {record.placement.size} {record.compute_slices}\n" in text
    assert f"ci 2 {gi} 0 {sim.mig_devices(2)[0].ci_profile_id} {ci.uuid} 0\n" in text
    assert "compute 1 2\n" in text
    assert "lost 5\n" in text
    with pytest.raises(ValueError, match="fabric_version 4"):
        render_fake_nvml_state(sim, fabric_version=4)


def _caps_tree(root: Path) -> dict[str, str]:
    caps = root / "proc/driver/nvidia/capabilities"
    files = {str(p.relative_to(root)): p.read_text() for p in caps.rglob("access")}
    nodes = {str(p.relative_to(root)): "" for p in (root / "dev/nvidia-caps").iterdir()}
    return files | nodes


def test_the_library_keeps_mig_capability_files_like_the_kernel_driver(real: Real, tmp_path: Path) -> None:
    """GI/CI create and destroy through the library leave the capability files the simulated root has."""
    from nvdra.nvml import make_simulated_driver_root, refresh_mig_capabilities

    backend = real("dgx-h100")
    assert backend.driver_root is not None
    sim = SimulatedNvml("dgx-h100")
    sim_root = tmp_path / "sim-root"
    with nvml_session(backend), nvml_session(sim):
        make_simulated_driver_root(sim, sim_root)
        for node in (backend, sim):
            node.set_mig_mode(1, True)
            node.create_compute_instance(1, node.create_gpu_instance(1, 14, 2))
            node.create_compute_instance(1, node.create_gpu_instance(1, 19, 6))
        refresh_mig_capabilities(sim, sim_root)
        assert _caps_tree(backend.driver_root) == _caps_tree(sim_root)
        assert (
            backend.driver_root / "proc/driver/nvidia/capabilities/gpu1/mig/gi4/ci0/access"
        ).is_file()  # 3 + 2 // 2
        for node in (backend, sim):
            for rec in node.mig_devices(1):
                node.destroy_compute_instance(1, rec.gi_id, rec.ci_id)
                node.destroy_gpu_instance(1, rec.gi_id)
        refresh_mig_capabilities(sim, sim_root)
        assert _caps_tree(backend.driver_root) == _caps_tree(sim_root)


def test_the_fake_never_answers_for_the_system_library(real: Real) -> None:
    """Loaded by path, the fake does not shadow ``libnvidia-ml.so.1`` for the rest of the process."""
    import ctypes

    with nvml_session(real("pcie-l4")):
        pass
    try:
        system = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return  # no NVIDIA driver on this machine, and the loaded fake did not step in
    assert not hasattr(system, "nvdraFakeNvml"), "the system loader found the fake library"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a100-mig", "dgx-h100", "pcie-l4"])
def test_the_gpu_checks_pass_on_the_fake(name: str, tmp_path: Path) -> None:
    """scripts/gpu-check.sh's tests (``-m gpu``) run here over the fake, so they are known to work
    before a GPU sees them: MIG on Ampere, Hopper, and a GPU without MIG."""
    root = fake_driver_root(tmp_path / "root", name)
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "gpu",
            "tests/nvml/test_hardware.py",
        ],
        cwd=repo,
        env={**os.environ, "NVDRA_GPU_TEST_DRIVER_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout, done.stdout


OLDER_DRIVER = (
    "nvmlDeviceGetGpuFabricInfoV",
    "nvmlDeviceGetAddressingMode",
    "nvmlDeviceGetGpuInstanceProfileInfoByIdV",
    "nvmlDeviceGetNumaNodeId",
    "nvmlDeviceGetModuleId",
)
"""Entry points younger than the rest: a driver that predates them answers FUNCTION_NOT_FOUND."""


@pytest.mark.parametrize("name", ["a100-mig", "dgx-h100"])
def test_an_older_driver_without_the_newer_calls_still_conforms(name: str, real: Real) -> None:
    """Without the newer symbols every check still passes (MIG round trip included) and discovery
    reads them as not reported: module 0, no NUMA node or addressing mode, fabric info from v1."""
    backend = real(name, omit=OLDER_DRIVER, fabric_version=1)
    if name == "dgx-h100":
        with nvml_session(backend):
            backend.set_mig_mode(0, True)
    results = run_conformance(backend, allow_mutation=True)
    assert [r for r in results if not r.ok] == []
    assert {r.name: r.outcome for r in results}["check_mig_round_trip"] == "passed"
    with nvml_session(backend):
        gpu = discover_inventory(backend).gpus[0]
    assert (gpu.module_id, gpu.numa_node, gpu.addressing_mode) == (0, None, None)


def test_a_second_driver_root_in_one_process_is_refused(real: Real, tmp_path: Path) -> None:
    """pynvml holds one library per process: another root's library is an error, not silently ignored."""
    first = real("pcie-l4")
    with nvml_session(first):
        count = first.device_count()
    other = fake_driver_root(tmp_path / "other-root", "dgx-h100")
    with pytest.raises(NvmlError, match=r"already loaded NVML from .*/root/usr/lib64/libnvidia-ml\.so\.580"):
        PynvmlBackend(other).init()
    with nvml_session(PynvmlBackend(first.driver_root)) as again:  # the same root is fine
        assert again.device_count() == count == 2


def test_regenerating_the_root_keeps_it_loadable(real: Real, tmp_path: Path) -> None:
    """make_simulated_driver_root runs again over a root holding the (binary) library: no decode error."""
    backend = real("pcie-l4")
    fake_driver_root(tmp_path / "root", "pcie-l4")  # the same root a second time
    with nvml_session(backend):
        assert backend.device_count() == 2


def test_a_lost_gpu_fails_the_same_checks_as_on_the_simulator(real: Real) -> None:
    """GPU 0 fell off the bus: through the library the same checks fail with GPU_IS_LOST."""
    backend = real("dgx-h100")
    sim = SimulatedNvml("dgx-h100")
    sim.mark_gpu_lost(0)
    _state(backend).write_text(render_fake_nvml_state(sim))  # the node's state after the loss
    want = [(r.name, r.outcome) for r in run_conformance(sim)]
    results = run_conformance(backend)
    assert [(r.name, r.outcome) for r in results] == want
    assert any(r.outcome == "failed" and "NvmlGpuLost" in r.detail for r in results)


def test_processes_make_the_library_answer_in_use(real: Real) -> None:
    """Processes on a MIG device or a GPU: destroy answers IN_USE, a MIG mode change stays pending (19)."""
    backend = real("a100-mig")
    sim = SimulatedNvml("a100-mig")
    sim.set_processes(0, 2, gi_id=7, ci_id=0)
    sim.set_processes(2, 1)
    state = _state(backend)
    state.write_text(render_fake_nvml_state(sim, capabilities=backend.driver_root))
    with nvml_session(backend):
        with pytest.raises(NvmlInUse):
            backend.destroy_compute_instance(0, 7, 0)
        assert backend.set_mig_mode(2, True) == 19  # still on; the request waits for the processes
        assert backend.mig_mode(2).pending
    assert "ci 0 7 0 0 " in state.read_text()
    assert state.read_text().count("\nprocesses 2 1\n") == 1
