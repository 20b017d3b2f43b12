"""The MIG executor against the simulator's real rules: Ampere is never toggled; Hopper toggles reset-less."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvdra.core.errors import NvmlInUse, NvmlResetRequired
from nvdra.nvml import SimulatedNvml, load_profile
from nvdra.nvml.executor import MigExecutor, MigKey


def _backend(profile: str) -> SimulatedNvml:
    backend = SimulatedNvml(load_profile(profile))
    backend.init()
    return backend


def _calls(backend: SimulatedNvml, method: str) -> int:
    return dict(backend.snapshot().calls).get(method, 0)


def test_ampere_with_mig_off_is_never_toggled() -> None:
    """On an A100 with MIG off, create refuses (reset required) without calling set_mig_mode."""
    backend = _backend("dgx-a100")
    key = MigKey(parent_uuid=backend.device_identity(0).uuid, profile_id=19, start=0)
    with pytest.raises(NvmlResetRequired):
        MigExecutor(backend).create(key)
    assert _calls(backend, "set_mig_mode") == 0
    assert not backend.snapshot().gpus[0].mig_pending


def test_ampere_with_mig_on_keeps_mig_mode_after_the_last_device_goes() -> None:
    """On an A100 with MIG on, destroying the last MIG device leaves MIG mode on (no toggle)."""
    backend = _backend("a100-mig")
    ex = MigExecutor(backend)
    uuid = backend.device_identity(2).uuid  # MIG on, no devices
    ex.create(MigKey(parent_uuid=uuid, profile_id=14, start=4))
    ex.destroy(MigKey(parent_uuid=uuid, profile_id=14, start=4))
    assert backend.snapshot().gpus[2].mig_current
    assert _calls(backend, "set_mig_mode") == 0


def test_destroy_of_a_device_that_never_existed_is_a_no_op() -> None:
    """Undo must accept a record whose change never happened (MIG off, or nothing at the placement)."""
    backend = _backend("dgx-h100")
    ex = MigExecutor(backend)
    key = MigKey(parent_uuid=backend.device_identity(0).uuid, profile_id=9, start=4)
    ex.destroy(key)
    backend.set_mig_mode(0, True)
    ex.destroy(key)
    assert backend.snapshot().gpus[0].gpu_instances == ()


def test_destroy_in_use_is_surfaced_and_keeps_the_device() -> None:
    """A device with processes on it is not destroyed: IN_USE reaches the caller."""
    backend = _backend("dgx-h100")
    ex = MigExecutor(backend)
    key = MigKey(parent_uuid=backend.device_identity(0).uuid, profile_id=19, start=2)
    rec = ex.create(key)
    backend.set_processes(0, 1, gi_id=rec.gi_id)
    with pytest.raises(NvmlInUse):
        ex.destroy(key)
    assert ex.find(key) is not None


def test_enabling_mig_blocked_by_processes_changes_nothing(tmp_path: Path) -> None:
    """If the GPU is busy, enabling MIG reports IN_USE and leaves MIG mode off and not pending."""
    del tmp_path
    backend = _backend("dgx-h100")
    backend.set_processes(0, 2)
    key = MigKey(parent_uuid=backend.device_identity(0).uuid, profile_id=19, start=0)
    with pytest.raises(NvmlInUse):
        MigExecutor(backend).create(key)
    gpu = backend.snapshot().gpus[0]
    assert (gpu.mig_current, gpu.mig_pending, gpu.gpu_instances) == (False, False, ())


def test_bare_gpu_instance_is_found_and_destroyed_without_probing() -> None:
    """A GI a crash left without a CI is no MIG device for find, but destroy removes it with exactly one
    destroy_gpu_instance call (no probing of GI ids), and then MIG mode goes off again on Hopper."""
    backend = _backend("dgx-h100")
    ex = MigExecutor(backend)
    key = MigKey(parent_uuid=backend.device_identity(0).uuid, profile_id=9, start=4)
    backend.set_mig_mode(0, True)
    backend.create_gpu_instance(0, key.profile_id, key.start)  # the crash: CI never made
    assert ex.find(key) is None
    ex.destroy(key)
    gpu = backend.snapshot().gpus[0]
    assert (gpu.gpu_instances, gpu.mig_current) == ((), False)
    assert _calls(backend, "destroy_gpu_instance") == 1


def test_destroy_touches_only_the_gpu_instance_at_its_key() -> None:
    """Destroying a bare GI leaves a neighbouring MIG device and bare GI alone, and MIG mode on."""
    backend = _backend("dgx-h100")
    ex = MigExecutor(backend)
    uuid = backend.device_identity(0).uuid
    kept = ex.create(MigKey(parent_uuid=uuid, profile_id=19, start=0))
    backend.create_gpu_instance(0, 14, 2)
    other_bare = backend.create_gpu_instance(0, 14, 4)
    ex.destroy(MigKey(parent_uuid=uuid, profile_id=14, start=2))
    assert [g.gi_id for g in backend.gpu_instances(0)] == sorted([other_bare, kept.gi_id])
    assert ex.find(MigKey(parent_uuid=uuid, profile_id=19, start=0)) == kept
    assert backend.snapshot().gpus[0].mig_current


def test_sweep_destroys_bare_gpu_instances_and_unowned_devices() -> None:
    """Sweep removes every GI not kept, bare or full, keeps the owned device, and reports what went."""
    backend = _backend("dgx-h100")
    ex = MigExecutor(backend)
    uuid = backend.device_identity(0).uuid
    keep = MigKey(parent_uuid=uuid, profile_id=19, start=0)
    unowned = MigKey(parent_uuid=uuid, profile_id=19, start=1)
    bare = MigKey(parent_uuid=uuid, profile_id=14, start=4)
    ex.create(keep)
    ex.create(unowned)
    backend.create_gpu_instance(0, bare.profile_id, bare.start)
    gone = ex.sweep([keep])
    assert sorted(gone, key=lambda k: k.start) == [unowned, bare]
    assert [(g.profile_id, g.placement.start) for g in backend.gpu_instances(0)] == [(19, 0)]


def test_sweep_of_only_a_bare_gpu_instance_turns_mig_off_on_hopper() -> None:
    """With nothing kept, a lone bare GI is swept and the reset-less GPU leaves MIG mode."""
    backend = _backend("dgx-h100")
    backend.set_mig_mode(1, True)
    backend.create_gpu_instance(1, 5, 0)
    assert MigExecutor(backend).sweep([]) == [
        MigKey(parent_uuid=backend.device_identity(1).uuid, profile_id=5, start=0)
    ]
    gpu = backend.snapshot().gpus[1]
    assert (gpu.gpu_instances, gpu.mig_current) == ((), False)
