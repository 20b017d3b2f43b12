"""The DeviceClasses the NVIDIA chart ships, as ``resource.k8s.io/v1`` objects.

Same names and CEL selectors as the upstream Helm templates: ``gpu.nvidia.com`` (with
``extendedResourceName: nvidia.com/gpu``), ``mig.nvidia.com``, ``vfio.gpu.nvidia.com``,
``compute-domain-daemon.nvidia.com`` and ``compute-domain-default-channel.nvidia.com``; and
``partition.gpu.nvidia.com``, which the chart renders with ``publishFabricPartitions`` (NVLink partitions
published as devices; the class selects nothing on a cluster that publishes none).
"""

from __future__ import annotations

__all__ = ["builtin_device_classes"]

from typing import Any

_GPU = "gpu.nvidia.com"
_CD = "compute-domain.nvidia.com"


def _cls(name: str, expression: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": expression}}], **spec},
    }


def builtin_device_classes() -> dict[str, dict[str, Any]]:
    """A fresh copy of the chart's DeviceClasses, by name."""
    classes = [
        _cls(
            "gpu.nvidia.com",
            f"device.driver == '{_GPU}' && device.attributes['{_GPU}'].type == 'gpu'",
            extendedResourceName="nvidia.com/gpu",
        ),
        _cls("mig.nvidia.com", f"device.driver == '{_GPU}' && device.attributes['{_GPU}'].type == 'mig'"),
        _cls(
            "vfio.gpu.nvidia.com", f"device.driver == '{_GPU}' && device.attributes['{_GPU}'].type == 'vfio'"
        ),
        _cls(
            "partition.gpu.nvidia.com",
            f"device.driver == '{_GPU}' && device.attributes['{_GPU}'].type == 'partition'",
        ),
        _cls(
            "compute-domain-daemon.nvidia.com",
            f"device.driver == '{_CD}' && device.attributes['{_CD}'].type == 'daemon'",
        ),
        _cls(
            "compute-domain-default-channel.nvidia.com",
            f"device.driver == '{_CD}' && device.attributes['{_CD}'].type == 'channel' && "
            f"device.attributes['{_CD}'].id == 0",
        ),
    ]
    return {c["metadata"]["name"]: c for c in classes}
