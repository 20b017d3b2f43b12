"""What the GPU plugin reports per prepared device in ``status.devices[]`` (see
:mod:`nvdra.plugins.devicestatus`): a ``Ready`` condition and ``data`` naming the device.

``data`` (an object of the driver's own shape, as KEP-4817 allows): ``type``; ``uuid`` (GPU-…, MIG-…;
absent for a MIG device created at prepare, whose UUID NVML assigns then); ``pciBusID`` of each GPU
it occupies (one, or a partition's members); ``productName``; for MIG ``profile`` and ``placement``
(``start``, ``size`` in memory slices) and ``parentUUID``; for a partition ``partitionID``; for a
VFIO device ``iommuGroup`` where known; ``adminAccess`` when the claim only observes the device.
"""

from __future__ import annotations

__all__ = ["gpu_device_status"]

from typing import Any

from nvdra.core.checkpoint import DeviceRecord
from nvdra.plugins.devicestatus import ready_condition
from nvdra.plugins.gpu.devices import AllocatableDevice


def _data(device: AllocatableDevice, record: DeviceRecord) -> dict[str, Any]:
    data: dict[str, Any] = {"type": device.type, "productName": device.gpu.product_name}
    if device.type != "mig" or device.mig is not None:
        data["uuid"] = device.uuid
    data["pciBusIDs"] = [str(g.pci_bus_id) for g in device.gpus]
    if device.type == "mig":
        profile = device.mig.profile if device.mig is not None else device.profile
        placement = device.mig.placement if device.mig is not None else device.placement
        data["parentUUID"] = str(device.gpu.uuid)
        if profile is not None:
            data["profile"] = profile.name
        if placement is not None:
            data["placement"] = {"start": placement.start, "size": placement.size}
    if device.partition_id is not None:
        data["partitionID"] = device.partition_id
    if device.vfio is not None:
        data["pciAddress"] = device.vfio.address
        if device.vfio.function.iommu_group is not None:
            data["iommuGroup"] = device.vfio.function.iommu_group
    if record.admin_access:
        data["adminAccess"] = True
    return data


def gpu_device_status(
    driver_name: str, record: DeviceRecord, device: AllocatableDevice | None
) -> dict[str, Any]:
    """One ``status.devices[]`` entry for a prepared device (``device`` None: no longer published)."""
    entry: dict[str, Any] = {"driver": driver_name, "pool": record.pool_name, "device": record.device_name}
    if record.share_id:
        entry["shareID"] = record.share_id
    if device is None:
        entry["conditions"] = [ready_condition("prepared; the device is no longer published on this node")]
        return entry
    entry["conditions"] = [
        ready_condition(f"prepared for the claim's containers as {device.type} {device.name}")
    ]
    entry["data"] = _data(device, record)
    return entry
