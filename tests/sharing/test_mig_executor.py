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
