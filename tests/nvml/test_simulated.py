"""SimulatedNvml: the NVML state machine, error codes, and fault injection."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest

from nvdra.core.errors import (
    NvmlError,
    NvmlGpuLost,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlLibraryNotFound,
    NvmlNotFound,
    NvmlNotSupported,
    NvmlUninitialized,
)
from nvdra.nvml import SimulatedNvml

Sim = Callable[[str], SimulatedNvml]
_MIG = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_calls_before_init_are_uninitialized() -> None:
    """Any call before init raises UNINITIALIZED, and so does an unbalanced shutdown."""
    backend = SimulatedNvml("dgx-h100")
    with pytest.raises(NvmlUninitialized):
        backend.device_count()
    with pytest.raises(NvmlUninitialized):
        backend.shutdown()


def test_init_is_reference_counted(sim: Sim) -> None:
    """Two inits need two shutdowns before calls fail."""
    backend = sim("dgx-h100")
    backend.init()
    backend.shutdown()
    assert backend.device_count() == 8
    backend.shutdown()
    with pytest.raises(NvmlUninitialized):
        backend.device_count()


def test_lookup_errors(sim: Sim) -> None:
    """Unknown UUID is NOT_FOUND (not go-nvml's INVALID_ARGUMENT); a bad index INVALID_ARGUMENT."""
    backend = sim("dgx-h100")
    with pytest.raises(NvmlNotFound):
        backend.index_by_uuid("GPU-00000000-0000-0000-0000-000000000000")
    with pytest.raises(NvmlInvalidArgument):
        backend.device_identity(8)
    assert backend.index_by_uuid(backend.device_identity(5).uuid) == 5


def test_non_mig_gpu_answers_not_supported(sim: Sim) -> None:
    """MIG calls on an L4 raise NOT_SUPPORTED; profile listing is empty; no NVLink, no fabric."""
    backend = sim("pcie-l4")
    with pytest.raises(NvmlNotSupported):
        backend.mig_mode(0)
    with pytest.raises(NvmlNotSupported):
        backend.set_mig_mode(0, True)
    with pytest.raises(NvmlNotSupported):
        backend.create_gpu_instance(0, 19, 0)
    assert backend.gpu_instance_profiles(0) == ()
    assert backend.nvlinks(0) == ()
    with pytest.raises(NvmlNotSupported):
        backend.fabric_info(0)


def test_ampere_mig_mode_pends_until_reset(sim: Sim) -> None:
    """On A100 enabling MIG returns RESET_REQUIRED and stays pending until the GPU is reset."""
    backend = sim("dgx-a100")
    assert backend.gpu_instance_profiles(0) == ()  # Ampere lists no profiles while MIG is off
    assert backend.set_mig_mode(0, True) == 16
    mode = backend.mig_mode(0)
    assert (mode.current, mode.pending) == (False, True)
    with pytest.raises(NvmlNotSupported):
        backend.create_gpu_instance(0, 19, 0)
    backend.reset_gpu(0)
    assert backend.mig_mode(0).current
    assert len(backend.gpu_instance_profiles(0)) == 7


def test_hopper_mig_mode_is_immediate(sim: Sim) -> None:
    """On H100 enabling MIG takes effect at once, and profiles are listed even while MIG is off."""
    backend = sim("dgx-h100")
    assert len(backend.gpu_instance_profiles(0)) == 7
    assert backend.gpu_instance_remaining_capacity(0, 19) == 7
    assert backend.set_mig_mode(0, True) == 0
    assert backend.mig_mode(0).current
    gi = backend.create_gpu_instance(0, 0, 0)
    assert gi == 0


def test_mig_mode_in_use_paths(sim: Sim) -> None:
    """Disabling MIG with GPU instances is IN_USE; processes make the activation status IN_USE."""
    backend = sim("a100-mig")
    with pytest.raises(NvmlInUse):
        backend.set_mig_mode(0, False)
    backend.set_processes(4, 2)
    assert backend.set_mig_mode(4, True) == 19
    assert backend.mig_mode(4).pending and not backend.mig_mode(4).current


def test_gi_ids_follow_the_observed_pattern(sim: Sim) -> None:
    """1g GIs get 7+start, 2g 3+start/2, 3g 1 and 2 by order, 7g 0; CIs get id 0."""
    backend = sim("a100-mig")
    assert [r.gi_id for r in backend.mig_devices(0)] == [7, 8, 9, 10, 11, 12, 13]
    assert {r.placement.start: r.gi_id for r in backend.mig_devices(1)} == {0: 1, 4: 5, 6: 13}
    assert [r.gi_id for r in backend.mig_devices(3)] == [0]
    assert backend.create_gpu_instance(2, 9, 4) == 1  # lowest free half id, not tied to the start
    assert backend.create_gpu_instance(2, 9, 0) == 2
    assert {r.ci_id for r in backend.mig_devices(0)} == {0}


def test_create_rules(sim: Sim) -> None:
    """Overlap and exhausted counts are INSUFFICIENT_RESOURCES; a start not in the table INVALID_ARGUMENT."""
    backend = sim("a100-mig")
    with pytest.raises(NvmlInsufficientResources):
        backend.create_gpu_instance(1, 19, 0)  # slice 0 belongs to the 3g
    with pytest.raises(NvmlInvalidArgument):
        backend.create_gpu_instance(2, 19, 7)  # slice 7 is no 1g placement
    with pytest.raises(NvmlInvalidArgument):
        backend.create_gpu_instance(2, 42, 0)  # no such profile
    backend.create_gpu_instance(2, 20, 0)
    with pytest.raises(NvmlInsufficientResources):
        backend.create_gpu_instance(2, 20, 1)  # +me allows one instance
    assert backend.gpu_instance_remaining_capacity(0, 19) == 0
    assert backend.gpu_instance_remaining_capacity(2, 19) == 6


def test_compute_slices_limit(sim: Sim) -> None:
    """Two 3g GIs fill all 8 memory slices with 6 compute slices; nothing else fits."""
    backend = sim("a100-mig")
    backend.create_gpu_instance(2, 9, 0)
    backend.create_gpu_instance(2, 9, 4)
    assert all(
        backend.gpu_instance_remaining_capacity(2, p.id) == 0 for p in backend.gpu_instance_profiles(2)
    )


def test_ci_and_gi_lifecycle(sim: Sim) -> None:
    """A GI with a CI cannot be destroyed; a CI with processes neither; NOT_FOUND after destruction."""
    backend = sim("a100-mig")
    gi = backend.create_gpu_instance(2, 14, 2)
    ci = backend.create_compute_instance(2, gi)
    assert _MIG.match(ci.uuid)
    assert backend.mig_devices(2) == (ci,)  # what creating returns is the MIG device as listed
    assert backend.index_by_uuid(ci.uuid) == 2
    with pytest.raises(NvmlInsufficientResources):
        backend.create_compute_instance(2, gi)
    with pytest.raises(NvmlInUse):
        backend.destroy_gpu_instance(2, gi)
    backend.set_processes(2, 1, gi_id=gi)
    with pytest.raises(NvmlInUse):
        backend.destroy_compute_instance(2, gi, ci.ci_id)
    backend.set_processes(2, 0, gi_id=gi)
    backend.destroy_compute_instance(2, gi, ci.ci_id)
    backend.destroy_gpu_instance(2, gi)
    with pytest.raises(NvmlNotFound):
        backend.destroy_gpu_instance(2, gi)
    with pytest.raises(NvmlNotFound):
        backend.index_by_uuid(ci.uuid)


def test_mig_uuids_are_deterministic() -> None:
    """Two simulators of one profile report the same GPU and MIG UUIDs."""
    a, b = SimulatedNvml("a100-mig"), SimulatedNvml("a100-mig")
    a.init()
    b.init()
    assert a.mig_devices(1) == b.mig_devices(1)
    assert a.device_identity(3).uuid == b.device_identity(3).uuid


def test_reset_drops_instances(sim: Sim) -> None:
    """A GPU reset clears GPU instances (they are not persistent) but keeps MIG mode."""
    backend = sim("a100-mig")
    backend.reset_gpu(0)
    assert backend.mig_devices(0) == ()
    assert backend.mig_mode(0).current


def test_ampere_nvlinks_train_off_in_mig_mode(sim: Sim) -> None:
    """A100 links are inactive while MIG is on; other GPUs keep 12 active switch links."""
    backend = sim("a100-mig")
    assert not any(r.active for r in backend.nvlinks(0))
    links = backend.nvlinks(5)
    assert len(links) == 12 and all(r.active and r.remote_type == 2 for r in links)


def test_bridged_pairs(sim: Sim) -> None:
    """With 3 bridges GPU0 has 12 active links to GPU1's bus id, GPU2 none to GPU0."""
    backend = sim("pcie-a100-nvlink")
    peer = backend.pci_info(1).bus_id
    links = [r for r in backend.nvlinks(0) if r.active]
    assert len(links) == 12 and {(r.remote_type, r.remote_bus_id) for r in links} == {(0, peer)}
    assert backend.pci_info(0).bus_id not in {r.remote_bus_id for r in backend.nvlinks(2)}


def test_compute_mode(sim: Sim) -> None:
    """Compute mode reads back; EXCLUSIVE_THREAD is NOT_SUPPORTED, 7 INVALID_ARGUMENT."""
    backend = sim("dgx-h100")
    backend.set_compute_mode(1, 3)
    assert backend.compute_mode(1) == 3
    with pytest.raises(NvmlNotSupported):
        backend.set_compute_mode(1, 1)
    with pytest.raises(NvmlInvalidArgument):
        backend.set_compute_mode(1, 7)


def test_injected_faults(sim: Sim) -> None:
    """An injected code raises the matching class the given number of times, per GPU or for all."""
    backend = sim("dgx-h100")
    backend.inject_fault("pci_info", 999, index=2, count=2)
    for _ in range(2):
        with pytest.raises(NvmlError) as info:
            backend.pci_info(2)
        assert info.value.code == 999
    backend.pci_info(2)
    backend.pci_info(3)
    backend.inject_fault("memory_total", 3)
    assert backend.memory_total(0) is None  # NOT_SUPPORTED means "not reported"
    backend.clear_faults()
    assert backend.memory_total(0) == 85520809984
    with pytest.raises(ValueError, match="NvmlBackend"):
        backend.inject_fault("no_such_call", 3)


def test_library_not_found_on_init() -> None:
    """An injected LIBRARY_NOT_FOUND on init is NvmlLibraryNotFound and takes no reference."""
    backend = SimulatedNvml("dgx-h100")
    backend.inject_fault("init", 12, count=1)
    with pytest.raises(NvmlLibraryNotFound):
        backend.init()
    assert backend.snapshot().init_refcount == 0


def test_gpu_lost_until_reset(sim: Sim) -> None:
    """A lost GPU raises GPU_IS_LOST on every call, still counts, and recovers after reset."""
    backend = sim("dgx-h100")
    backend.mark_gpu_lost(4)
    assert backend.device_count() == 8
    with pytest.raises(NvmlGpuLost):
        backend.device_identity(4)
    with pytest.raises(NvmlGpuLost):
        backend.index_by_uuid(backend.profile.gpus[4].uuid)
    backend.device_identity(3)
    backend.reset_gpu(4)
    backend.device_identity(4)


def test_snapshot_reports_state(sim: Sim) -> None:
    """The snapshot shows GPU instances, modes and call counts."""
    backend = sim("a100-mig")
    backend.mig_devices(1)
    snap = backend.snapshot()
    assert [gi.profile_id for gi in snap.gpus[1].gpu_instances] == [9, 14, 19]
    assert snap.gpus[2].mig_current and not snap.gpus[5].mig_current
    assert dict(snap.calls)["mig_devices"] == 1


def test_concurrent_creates_never_overlap(sim: Sim) -> None:
    """Eight threads racing for 1g placements get seven distinct GIs and one INSUFFICIENT_RESOURCES."""
    backend = sim("a100-mig")
    results: list[int | str] = []
    barrier = threading.Barrier(8)

    def worker(start: int) -> None:
        barrier.wait()
        try:
            results.append(
                backend.create_gpu_instance(2, 15 if start == 7 else 19, 6 if start == 7 else start)
            )
        except NvmlInsufficientResources:
            results.append("full")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slices = [s for gi in backend.snapshot().gpus[2].gpu_instances for s in gi.placement.slices]
    assert len(slices) == len(set(slices))
    assert results.count("full") == 1
