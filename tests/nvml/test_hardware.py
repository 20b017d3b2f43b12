"""Real-GPU tests (opt-in: ``-m gpu``): PynvmlBackend conformance and simulator fidelity, read-only.

Nothing here changes GPU state: no MIG mode, MIG instance or compute-mode changes.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.core.errors import NvmlError
from nvdra.nvml import PynvmlBackend, SimulatedNvml, discover_inventory, run_conformance
from nvdra.nvml._profile import builtin_models, parse_profile

pytestmark = pytest.mark.gpu


@pytest.fixture
def real() -> Iterator[PynvmlBackend]:
    """The real backend: the system's NVML, or the one under ``NVDRA_GPU_TEST_DRIVER_ROOT`` (a driver
    root; a generated root with the fake library checks these tests themselves without a GPU)."""
    backend = PynvmlBackend(os.environ.get("NVDRA_GPU_TEST_DRIVER_ROOT") or None)
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
    if model.mig_capable:  # the same MIG mode: Ampere lists its profiles only while MIG is on
        data["gpus"] = [
            {"bus_id": real.pci_info(index).bus_id, "mig": {"enabled": real.mig_mode(index).current}}
        ]
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
        mig_capable = bool(sim.profile.gpus[0].model.mig_capable)  # mig_mode is NOT_SUPPORTED otherwise
        if mig_capable and (real.mig_mode(i).current or real.device_identity(i).architecture >= 9):
            real_profiles = {p.id: p for p in real.gpu_instance_profiles(i)}
            sim_profiles = {p.id: p for p in sim.gpu_instance_profiles(0)}
            assert real_profiles == sim_profiles
        compared += 1
    if not compared:
        pytest.skip("no GPU of a modelled product")


def test_gpu_plugin_starts_on_the_real_driver(real: PynvmlBackend) -> None:
    """The GPU plugin's start on this driver (upstream flags, no --simulate): registered with a kubelet,
    it publishes every GPU (or its MIG devices while MIG is on) under its NVML UUID. Writes only to a
    temporary directory; changes no GPU setting."""
    pytest.importorskip("grpc", reason="the plugin check needs the plugin's dependencies (pip install .)")
    from nvdra.kubeletplugin import FakeKube, KubeletClient
    from nvdra.plugins.gpu.config import PluginConfig
    from nvdra.plugins.gpu.serve import serve

    inventory = discover_inventory(real)
    want: set[str] = {m.uuid for g in inventory.gpus for m in g.mig_devices}
    want |= {g.uuid for g in inventory.gpus if not g.mig_enabled}
    root = Path(os.environ.get("NVDRA_GPU_TEST_DRIVER_ROOT") or "/")
    store = FakeKube()
    store.add_node("n1")
    with tempfile.TemporaryDirectory(prefix="nvdra-gpu-") as tmp:
        base = Path(tmp)
        config = PluginConfig(
            node_name="n1",
            cdi_root=base / "cdi",
            nvidia_driver_root=root,
            container_driver_root=root,
            kubelet_registrar_directory_path=base / "reg",
            kubelet_plugins_directory_path=base / "plugins",
        )
        with serve(config, kube=store), KubeletClient(base / "reg") as kubelet:
            kubelet.register(base / "reg" / "gpu.nvidia.com-reg.sock")
            deadline = time.monotonic() + 30
            while not store.resource_slices() and time.monotonic() < deadline:
                time.sleep(0.05)
            devices = [d for s in store.resource_slices() for d in s["spec"].get("devices", [])]
    assert {d["attributes"]["uuid"]["string"] for d in devices} == want
