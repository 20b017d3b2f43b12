"""Real-GPU tests (opt-in: ``-m gpu``): PynvmlBackend conformance and simulator fidelity, read-only.

Nothing here changes GPU state: no MIG mode, MIG instance or compute-mode changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvdra.core.errors import NvmlError
from nvdra.nvml import PynvmlBackend, SimulatedNvml, discover_inventory, run_conformance
from nvdra.nvml._profile import builtin_models, parse_profile

pytestmark = pytest.mark.gpu


@pytest.fixture
def real() -> Iterator[PynvmlBackend]:
    backend = PynvmlBackend()
    try:
        backend.init()
    except NvmlError as exc:
        pytest.skip(f"no usable NVML: {exc}")
    yield backend
    backend.shutdown()


def test_read_only_conformance(real: PynvmlBackend) -> None:
    """The real backend passes every read-only conformance check."""
    results = run_conformance(real)
    failed = [r for r in results if not r.ok]
    assert not failed, failed


def test_discovery_on_real_gpus(real: PynvmlBackend) -> None:
    """Discovery reads every real GPU with a sysfs-form bus id and sane memory."""
    inventory = discover_inventory(real)
    assert len(inventory.gpus) == real.device_count()
    for gpu in inventory.gpus:
        assert gpu.pci_bus_id == gpu.pci_bus_id.lower()
        assert gpu.memory_bytes is None or gpu.memory_bytes > 0


def _sim_twin(real: PynvmlBackend, index: int) -> SimulatedNvml | None:
    name = real.device_identity(index).name
    model = next((m for m in builtin_models().values() if m.name == name), None)
    if model is None:
        return None
    data = {
        "name": "twin",
        "driver_version": real.driver_version(),
        "cuda_driver_version": real.cuda_driver_version(),
        "gpu_model": model.key,
        "gpus": [{"bus_id": real.pci_info(index).bus_id}],
    }
    sim = SimulatedNvml(parse_profile(data, "twin", builtin_models()))
    sim.init()
    return sim


def test_simulated_model_matches_hardware(real: PynvmlBackend) -> None:
    """For a GPU the profiles model, name, PCI id, memory and the MIG table equal the hardware's."""
    compared = 0
    for i in range(real.device_count()):
        sim = _sim_twin(real, i)
        if sim is None:
            continue
        assert sim.pci_info(0).device_id == real.pci_info(i).device_id
        assert sim.memory_total(0) == real.memory_total(i)
        if real.mig_mode(i).current or real.device_identity(i).architecture >= 9:
            real_profiles = {p.id: p for p in real.gpu_instance_profiles(i)}
            sim_profiles = {p.id: p for p in sim.gpu_instance_profiles(0)}
            assert real_profiles == sim_profiles
        compared += 1
    if not compared:
        pytest.skip("no GPU of a modelled product")
