"""ResourceSlice rendering reproduces what the upstream Go plugin published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.core.devices import Gpu, Inventory, MigDevice, MigPlacement, MigProfile
from nvdra.core.ids import GpuUuid, MigUuid, PciBusId
from nvdra.core.resourceslice import render_gpu_devices, to_v1beta1_device

SAMPLE = Path(__file__).parents[1] / "data" / "samples" / "upstream-resourceslice-gb200.yaml"


def _upstream_devices() -> list[dict[str, Any]]:
    doc = yaml.safe_load(SAMPLE.read_text())
    return list(doc["items"][0]["spec"]["devices"])


def _inventory_from_upstream(devices: list[dict[str, Any]]) -> Inventory:
    """Rebuild the fake-NVML node the upstream plugin saw from its published attributes."""
    gpus = []
    for d in devices:
        a = d["attributes"]
        minor = int(d["name"].split("-")[1])
        gpus.append(
            Gpu(
                index=minor,
                minor=minor,
                uuid=GpuUuid(a["uuid"]["string"]),
                product_name=a["productName"]["string"],
                brand=a["brand"]["string"],
                architecture=a["architecture"]["string"],
                cuda_compute_capability=(10, 0),
                memory_bytes=192 * 1024**3,
                pci_bus_id=PciBusId(a["resource.kubernetes.io/pciBusID"]["string"]),
            )
        )
    return Inventory(driver_version="570.170.01", cuda_driver_version=13000, gpus=tuple(gpus))


def test_matches_upstream_slice_exactly() -> None:
    """Every device upstream published for 8 GB200s is rendered identically (names, attributes, capacity)."""
    upstream = _upstream_devices()
    ours = render_gpu_devices(_inventory_from_upstream(upstream))
    assert {d["name"]: d for d in ours} == {d["name"]: d for d in upstream}


def _mig_gpu() -> Gpu:
    profile = MigProfile(
        id=19,
        name="1g.10gb",
        compute_slices=1,
        memory_slices=1,
        instance_count=7,
        multiprocessors=16,
        copy_engines=1,
        decoders=1,
        encoders=0,
        jpeg_engines=1,
        ofa_engines=0,
        memory_mb=9984,
        placement_starts=tuple(range(7)),
    )
    migs = tuple(
        MigDevice(
            uuid=MigUuid(f"MIG-00000000-0000-5000-0000-00000000000{s}"),
            parent_uuid=GpuUuid("GPU-11111111-2222-3333-4444-555555555555"),
            parent_minor=2,
            gi_id=7 + s,
            ci_id=0,
            profile=profile,
            placement=MigPlacement(start=s, size=1),
        )
        for s in (3, 0)
    )
    return Gpu(
        index=0,
        minor=2,
        uuid=GpuUuid("GPU-11111111-2222-3333-4444-555555555555"),
        product_name="NVIDIA H100 80GB HBM3",
        brand="Nvidia",
        architecture="Hopper",
        cuda_compute_capability=(9, 0),
        memory_bytes=85520809984,
        pci_bus_id=PciBusId("0000:1b:00.0"),
        pcie_root="pci0000:1a",
        mig_capable=True,
        mig_enabled=True,
        mig_profiles=(profile,),
        mig_devices=migs,
    )


def test_mig_enabled_gpu_publishes_only_its_mig_devices() -> None:
    """A MIG-enabled GPU is replaced by its MIG devices, sorted by name, with memorySlice capacities."""
    inv = Inventory(driver_version="580.105.08", cuda_driver_version=13000, gpus=(_mig_gpu(),))
    out = render_gpu_devices(inv)
    assert [d["name"] for d in out] == ["gpu-2-mig-1g10gb-19-0", "gpu-2-mig-1g10gb-19-3"]
    dev = out[1]
    assert set(dev["attributes"]) == {
        "architecture",
        "brand",
        "cudaComputeCapability",
        "cudaDriverVersion",
        "driverVersion",
        "productName",
        "resource.kubernetes.io/pciBusID",
        "resource.kubernetes.io/pcieRoot",
        "type",
        "uuid",
        "parentUUID",
        "profile",
    }
    assert dev["attributes"]["type"] == {"string": "mig"}
    assert dev["attributes"]["profile"] == {"string": "1g.10gb"}
    assert dev["capacity"]["memorySlice3"] == {"value": "1"}
    assert "memorySlice0" not in dev["capacity"]
    assert dev["capacity"]["memory"] == {"value": "9984Mi"}
    assert dev["attributes"]["driverVersion"] == {"version": "580.105.8"}


def test_v1beta1_nests_under_basic() -> None:
    """v1beta1 devices keep only the name at top level."""
    dev = render_gpu_devices(_inventory_from_upstream(_upstream_devices()))[0]
    beta = to_v1beta1_device(dev)
    assert set(beta) == {"name", "basic"}
    assert beta["basic"]["attributes"] == dev["attributes"]
    with pytest.raises(ValueError, match="v1beta1"):
        to_v1beta1_device({**dev, "shareable": True})
