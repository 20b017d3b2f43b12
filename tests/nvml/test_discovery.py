"""Discovery over every profile: inventories match the hardware facts and render as slices."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nvdra.core.devices import Inventory
from nvdra.core.resourceslice import render_gpu_devices
from nvdra.nvml import PROFILE_NAMES, SimulatedNvml, discover_inventory, mig_profile_name

Sim = Callable[[str], SimulatedNvml]


def _inventory(sim: Sim, name: str) -> Inventory:
    return discover_inventory(sim(name))


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_inventory_renders(sim: Sim, name: str) -> None:
    """render_gpu_devices works on every discovered inventory and names are unique."""
    devices = render_gpu_devices(_inventory(sim, name))
    names = [d["name"] for d in devices]
    assert names and len(names) == len(set(names))


def test_dgx_h100(sim: Sim) -> None:
    """dgx-h100: gpu-0..gpu-7, H100 80GB HBM3, 81559 MiB, Hopper, 18 switch links, zero-cluster fabric."""
    inv = _inventory(sim, "dgx-h100")
    assert [g.name for g in inv.gpus] == [f"gpu-{i}" for i in range(8)]
    g = inv.gpus[0]
    assert g.product_name == "NVIDIA H100 80GB HBM3"
    assert g.memory_bytes == 85520809984
    assert (g.architecture, g.brand, g.cuda_compute_capability) == ("Hopper", "Nvidia", (9, 0))
    assert g.pci_bus_id == "0000:1b:00.0" and g.pci_device_id == 0x233010DE
    assert len(g.nvlinks) == 18 and {link.remote_type for link in g.nvlinks} == {"switch"}
    assert g.fabric is not None and g.fabric.state == 3 and g.fabric.cluster_uuid.startswith("00000000")
    assert g.mig_capable and not g.mig_enabled
    assert [p.name for p in g.mig_profiles if p.id == 19] == ["1g.10gb"]
    assert inv.driver_version == "580.105.08" and inv.cuda_driver_version == 13000


def test_a100_mig_devices(sim: Sim) -> None:
    """a100-mig GPU0 has seven 1g.5gb devices; GPU1 three; GPU2 none; GPU4 publishes itself."""
    inv = _inventory(sim, "a100-mig")
    assert [m.name for m in inv.gpus[0].mig_devices] == [f"gpu-0-mig-1g5gb-19-{s}" for s in range(7)]
    assert sorted(m.name for m in inv.gpus[1].mig_devices) == [
        "gpu-1-mig-1g5gb-19-6",
        "gpu-1-mig-2g10gb-14-4",
        "gpu-1-mig-3g20gb-9-0",
    ]
    assert inv.gpus[2].mig_enabled and inv.gpus[2].mig_devices == ()
    names = {d["name"] for d in render_gpu_devices(inv)}
    assert "gpu-4" in names and "gpu-0" not in names and "gpu-2" not in names


def test_ampere_with_mig_off_lists_no_profiles(sim: Sim) -> None:
    """dgx-a100 GPUs are MIG capable, but Ampere lists no profiles while MIG is off; no fabric info."""
    g = _inventory(sim, "dgx-a100").gpus[0]
    assert g.mig_capable and g.mig_profiles == ()
    assert g.fabric is None and len(g.nvlinks) == 12


def test_gb200_tray(sim: Sim) -> None:
    """gb200-nvl72-tray: Grace domain bus ids, ATS, module ids 1-4, one non-zero clique."""
    inv = _inventory(sim, "gb200-nvl72-tray")
    assert [g.pci_bus_id for g in inv.gpus] == [
        "0008:01:00.0",
        "0009:01:00.0",
        "0018:01:00.0",
        "0019:01:00.0",
    ]
    assert {g.addressing_mode for g in inv.gpus} == {"ATS"}
    assert [g.module_id for g in inv.gpus] == [1, 2, 3, 4]
    cliques = {(g.fabric.cluster_uuid, g.fabric.clique_id) for g in inv.gpus if g.fabric}
    assert len(cliques) == 1 and next(iter(cliques))[1] != 0


def test_h200_names_use_half_away_rounding(sim: Sim) -> None:
    """H200's 3g profile is 3g.71gb (70.5 rounds up); Python's round() would give 3g.70gb."""
    g = _inventory(sim, "hgx-h200").gpus[0]
    assert {p.id: p.name for p in g.mig_profiles}[9] == "3g.71gb"
    assert round(70.5) == 70  # why the rule must not use round()


def test_naming_rule_examples() -> None:
    """The go-nvlib rule: B200 1g is 23gb, a smaller CI gets the Nc. prefix, +me from the REV1 enum."""
    b200 = 183359 * 1024 * 1024
    assert mig_profile_name(memory_size_mb=22528, total_memory_bytes=b200, gi_slices=1) == "1g.23gb"
    a100 = 40960 * 1024 * 1024
    assert (
        mig_profile_name(memory_size_mb=19968, total_memory_bytes=a100, gi_slices=3, ci_slices=1)
        == "1c.3g.20gb"
    )
    assert (
        mig_profile_name(memory_size_mb=4864, total_memory_bytes=a100, gi_slices=1, profile_enum=7)
        == "1g.5gb+me"
    )


def test_memory_not_reported(sim: Sim) -> None:
    """When NVML hides memory the GPU has no memory and MIG names fall back to NVML's own."""
    backend = sim("dgx-h100")
    backend.inject_fault("memory_total", 3, index=0)
    g = discover_inventory(backend).gpus[0]
    assert g.memory_bytes is None
    assert "capacity" not in render_gpu_devices(discover_inventory(backend))[0]
    assert {p.name for p in g.mig_profiles} >= {"1g.10gb", "7g.80gb"}


def test_discovery_follows_mig_changes(sim: Sim) -> None:
    """A MIG device created through the backend shows up in the next discovery."""
    backend = sim("a100-mig")
    gi = backend.create_gpu_instance(2, 0, 0)
    backend.create_compute_instance(2, gi)
    assert [m.name for m in discover_inventory(backend).gpus[2].mig_devices] == ["gpu-2-mig-7g40gb-0-0"]
