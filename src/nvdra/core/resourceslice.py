"""Render discovered devices as ResourceSlice ``Device`` entries (pure dicts, no API calls).

The output matches what the upstream Go plugin publishes for driver ``gpu.nvidia.com``: device
names, attribute names and types, and capacities. ``resource.k8s.io/v1`` (and v1beta2) put
attributes and capacity directly on the device; v1beta1 nests them under ``basic``
(:func:`to_v1beta1_device`).

Rules owned here:
- a GPU with MIG mode on publishes only its existing MIG devices (none if it has none);
- ``addressingMode`` and ``pcieRoot`` appear only when discovery found them;
- ``memory`` is omitted when NVML does not report a GPU's memory;
- devices are ordered by name within the GPU order discovery gave (the scheduler takes the first match).
"""

from __future__ import annotations

__all__ = [
    "GPU_DRIVER_NAME",
    "gpu_device",
    "render_gpu_devices",
    "static_mig_device",
    "to_v1beta1_device",
]

from typing import Any

from nvdra.core.devices import (
    Gpu,
    Inventory,
    MigDevice,
    cuda_driver_version_semver,
    semver_normalize,
)
from nvdra.core.quantity import format_bytes

GPU_DRIVER_NAME = "gpu.nvidia.com"

Attr = dict[str, Any]


def _string(value: str) -> Attr:
    return {"string": value}


def _version(value: str) -> Attr:
    return {"version": value}


def _common_attributes(gpu: Gpu, inventory: Inventory) -> dict[str, Attr]:
    """Attributes shared by a GPU and its MIG devices (product, arch, versions, PCI)."""
    major, minor = gpu.cuda_compute_capability
    attrs: dict[str, Attr] = {
        "productName": _string(gpu.product_name),
        "brand": _string(gpu.brand),
        "architecture": _string(gpu.architecture),
        "cudaComputeCapability": _version(f"{major}.{minor}.0"),
        "driverVersion": _version(semver_normalize(inventory.driver_version)),
        "cudaDriverVersion": _version(cuda_driver_version_semver(inventory.cuda_driver_version)),
        "resource.kubernetes.io/pciBusID": _string(gpu.pci_bus_id),
    }
    if gpu.pcie_root is not None:
        attrs["resource.kubernetes.io/pcieRoot"] = _string(gpu.pcie_root)
    if gpu.addressing_mode is not None:
        attrs["addressingMode"] = _string(gpu.addressing_mode)
    return attrs


def gpu_device(gpu: Gpu, inventory: Inventory) -> dict[str, Any]:
    """The v1 Device entry for a full GPU (``type: gpu``)."""
    attributes = {"type": _string("gpu"), "uuid": _string(gpu.uuid), **_common_attributes(gpu, inventory)}
    device: dict[str, Any] = {"name": gpu.name, "attributes": dict(sorted(attributes.items()))}
    if gpu.memory_bytes is not None:
        device["capacity"] = {"memory": {"value": format_bytes(gpu.memory_bytes)}}
    return device


def static_mig_device(mig: MigDevice, parent: Gpu, inventory: Inventory) -> dict[str, Any]:
    """The v1 Device entry for an existing MIG device (``type: mig``), with ``memorySlice<i>``."""
    attributes = {
        "type": _string("mig"),
        "uuid": _string(mig.uuid),
        "parentUUID": _string(parent.uuid),
        "profile": _string(mig.profile.name),
        **_common_attributes(parent, inventory),
    }
    p = mig.profile
    capacity: dict[str, Attr] = {
        "multiprocessors": {"value": str(p.multiprocessors)},
        "copyEngines": {"value": str(p.copy_engines)},
        "decoders": {"value": str(p.decoders)},
        "encoders": {"value": str(p.encoders)},
        "jpegEngines": {"value": str(p.jpeg_engines)},
        "ofaEngines": {"value": str(p.ofa_engines)},
        "memory": {"value": format_bytes(p.memory_mb * 1024 * 1024)},
    }
    for i in mig.placement.slices:
        capacity[f"memorySlice{i}"] = {"value": "1"}
    return {
        "name": mig.name,
        "attributes": dict(sorted(attributes.items())),
        "capacity": dict(sorted(capacity.items())),
    }


def render_gpu_devices(inventory: Inventory) -> list[dict[str, Any]]:
    """Every device the GPU driver publishes for this node (full GPUs and static MIG), v1 shape."""
    devices: list[dict[str, Any]] = []
    for gpu in inventory.gpus:
        if gpu.mig_enabled:
            migs = sorted(gpu.mig_devices, key=lambda m: m.name)
            devices.extend(static_mig_device(m, gpu, inventory) for m in migs)
        else:
            devices.append(gpu_device(gpu, inventory))
    return devices


_V1BETA1_BASIC_FIELDS = (
    "attributes",
    "capacity",
    "consumesCounters",
    "nodeName",
    "nodeSelector",
    "allNodes",
    "taints",
    "bindsToNode",
    "bindingConditions",
    "bindingFailureConditions",
    "allowMultipleAllocations",
)


def to_v1beta1_device(device: dict[str, Any]) -> dict[str, Any]:
    """Convert a v1/v1beta2 Device dict into the v1beta1 shape (everything but ``name`` under ``basic``)."""
    basic = {k: v for k, v in device.items() if k in _V1BETA1_BASIC_FIELDS}
    rest = {k: v for k, v in device.items() if k != "name" and k not in _V1BETA1_BASIC_FIELDS}
    if rest:
        raise ValueError(f"device {device.get('name')!r} has fields v1beta1 cannot carry: {sorted(rest)}")
    return {"name": device["name"], "basic": basic}
