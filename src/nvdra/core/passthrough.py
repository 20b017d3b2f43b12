"""VFIO passthrough devices: the PCI view of NVIDIA GPUs, their names, attributes, and sibling rule.

Pure code over facts read from sysfs (by ``nvdra.plugins.gpu.vfio``). Upstream (§3.2, §3.3, §5.4):

- every NVIDIA GPU PCI function (vendor 0x10de, class VGA 0x0300 or 3D 0x0302) gets an index in PCI
  address order; its VFIO device is ``gpu-vfio-<index>``;
- a VFIO device is published for a GPU without MIG mode, and for a GPU already bound away from
  ``nvidia`` (NVML does not see it, so it has no GPU sibling);
- its ``uuid`` is a name-based UUID (version 5, SHA-1) of the PCI address in the DNS namespace;
- attributes ``type=vfio``, ``uuid``, ``productName``, ``deviceID``/``vendorID`` (``0x%04x``),
  ``numa`` (int), ``iommuFDEnabled`` (bool), ``resource.kubernetes.io/pciBusID`` and ``pcieRoot``;
  capacity ``addressableMemory`` (bytes of the largest memory BAR);
- the GPU view (``gpu-<minor>``) and the VFIO view of one board are mutually exclusive once either
  is prepared: :func:`hidden_siblings` names the views to withdraw from the slice.
"""

from __future__ import annotations

__all__ = [
    "GPU_PCI_CLASSES",
    "NVIDIA_DRIVER",
    "NVIDIA_VENDOR_ID",
    "VFIO_DRIVER",
    "PciFunction",
    "VfioDevice",
    "enumerate_vfio_devices",
    "hidden_siblings",
    "render_vfio_device",
    "vfio_device_name",
    "vfio_uuid",
]

import uuid as uuid_mod
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from nvdra.core.quantity import format_bytes

NVIDIA_VENDOR_ID = 0x10DE
GPU_PCI_CLASSES = frozenset({0x0300, 0x0302})  # VGA compatible, 3D controller (class >> 8)
NVIDIA_DRIVER = "nvidia"
VFIO_DRIVER = "vfio-pci"


@attrs.frozen(kw_only=True)
class PciFunction:
    """One PCI function as sysfs describes it. ``address`` is sysfs form, ``0000:1b:00.0``."""

    address: str
    vendor_id: int
    device_id: int
    class_code: int  # the 24-bit class, e.g. 0x030200
    driver: str | None  # bound driver name, None when unbound
    iommu_group: int | None
    numa_node: int | None
    sriov_vfs: int = 0  # sriov_numvfs: VFs currently created
    bar_bytes: int = 0  # size of the largest memory BAR
    pcie_root: str | None = None  # e.g. "pci0000:17"
    product_name: str = ""

    @property
    def is_nvidia_gpu(self) -> bool:
        """An NVIDIA display or 3D controller."""
        return self.vendor_id == NVIDIA_VENDOR_ID and (self.class_code >> 8) in GPU_PCI_CLASSES


def vfio_device_name(index: int) -> str:
    """``gpu-vfio-<index in PCI enumeration>``."""
    return f"gpu-vfio-{index}"


def vfio_uuid(address: str) -> str:
    """UUIDv5 (SHA-1, DNS namespace) of the PCI address, as upstream derives it."""
    return str(uuid_mod.uuid5(uuid_mod.NAMESPACE_DNS, address))


@attrs.frozen(kw_only=True)
class VfioDevice:
    """A GPU as a passthrough device. ``sibling`` is its GPU view's name (None: NVML does not see it)."""

    index: int
    function: PciFunction
    sibling: str | None = None

    @property
    def name(self) -> str:
        """``gpu-vfio-<index>``."""
        return vfio_device_name(self.index)

    @property
    def uuid(self) -> str:
        """The published UUID."""
        return vfio_uuid(self.function.address)

    @property
    def address(self) -> str:
        """The PCI address (sysfs form)."""
        return self.function.address


def enumerate_vfio_devices(
    functions: Iterable[PciFunction],
    gpu_names: Mapping[str, str],
    mig_addresses: Collection[str] = (),
) -> tuple[VfioDevice, ...]:
    """The VFIO devices of a node.

    Args:
        functions: every PCI function sysfs lists (non-GPUs are skipped).
        gpu_names: PCI address (sysfs form) → GPU device name, for the GPUs NVML sees.
        mig_addresses: addresses of GPUs with MIG mode on (no VFIO view: their MIG devices are in use).
    """
    gpus = sorted((f for f in functions if f.is_nvidia_gpu), key=lambda f: f.address)
    return tuple(
        VfioDevice(index=i, function=f, sibling=gpu_names.get(f.address))
        for i, f in enumerate(gpus)
        if f.address not in mig_addresses
    )


def render_vfio_device(device: VfioDevice, *, iommufd: bool) -> dict[str, Any]:
    """The v1 ResourceSlice Device entry of a VFIO device."""
    f = device.function
    attributes: dict[str, Any] = {
        "type": {"string": "vfio"},
        "uuid": {"string": device.uuid},
        "productName": {"string": f.product_name},
        "deviceID": {"string": f"0x{f.device_id:04x}"},
        "vendorID": {"string": f"0x{f.vendor_id:04x}"},
        "iommuFDEnabled": {"bool": iommufd},
        "resource.kubernetes.io/pciBusID": {"string": f.address},
    }
    if f.numa_node is not None:
        attributes["numa"] = {"int": f.numa_node}
    if f.pcie_root is not None:
        attributes["resource.kubernetes.io/pcieRoot"] = {"string": f.pcie_root}
    out: dict[str, Any] = {"name": device.name, "attributes": dict(sorted(attributes.items()))}
    if f.bar_bytes:
        out["capacity"] = {"addressableMemory": {"value": format_bytes(f.bar_bytes)}}
    return out


def hidden_siblings(held: Collection[str], devices: Iterable[VfioDevice]) -> frozenset[str]:
    """Device names to withdraw because the other view of the same board is held by a claim."""
    hidden: set[str] = set()
    for device in devices:
        if device.sibling is None:
            continue
        if device.name in held:
            hidden.add(device.sibling)
        elif device.sibling in held:
            hidden.add(device.name)
    return frozenset(hidden)
