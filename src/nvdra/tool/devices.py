"""What a node would publish, without a cluster: discovery → ResourceSlice objects, and a table.

Used by ``nvdra devices`` and by the demo. Slice objects are rendered with the same pool splitting and
naming the publisher uses (generation 1, one pool named after the node).
"""

from __future__ import annotations

from typing import Any

from nvdra.core.devices import Inventory
from nvdra.core.featuregates import FeatureGates
from nvdra.kubeletplugin.publisher import PoolTarget, split_pool
from nvdra.kubeletplugin.types import DriverResources
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.fabric.partitions import check_partition_flag

__all__ = ["device_rows", "simulated_inventory", "slice_objects"]


def simulated_inventory(profile: str) -> Inventory:
    """Discover a simulated node profile (a built-in name or a YAML path)."""
    backend = SimulatedNvml(load_profile(profile))
    backend.init()
    try:
        return discover_inventory(backend)
    finally:
        backend.shutdown()


def driver_resources(
    inventory: Inventory, node_name: str, gates: FeatureGates, *, fabric_partitions: bool = False
) -> DriverResources:
    """The GPU driver's desired ResourceSlices for this inventory (no I/O).

    ``fabric_partitions``: as ``--publish-fabric-partitions`` (NVLink partitions as devices).

    Raises:
        ConfigError: ``fabric_partitions`` together with DynamicMIG.
    """
    check_partition_flag(fabric_partitions, gates)
    return GpuDriver.resources_for(
        inventory, node_name=node_name, gates=gates, fabric_partitions=fabric_partitions
    )


def slice_objects(resources: DriverResources, *, driver: str, node_name: str) -> list[dict[str, Any]]:
    """``resource.k8s.io/v1`` ResourceSlice objects as the publisher would create them (generation 1)."""
    out: list[dict[str, Any]] = []
    owner = {"apiVersion": "v1", "kind": "Node", "name": node_name}
    for pool_name, pool in sorted(resources.pools.items()):
        target = PoolTarget(driver=driver, node_name=node_name, pool_name=pool_name, owner=owner)
        slices = split_pool(pool)
        for index, content in enumerate(slices):
            body = target.create_body(index, target.spec(content, pool.generation or 1, len(slices)))
            # Offline there is no Node UID to own the slice, and kubectl needs a fixed name.
            meta = body["metadata"]
            meta["name"] = meta.pop("generateName") + "0"
            meta.pop("ownerReferences", None)
            out.append(body)
    return out


def _attr(device: dict[str, Any], name: str) -> str:
    value = device.get("attributes", {}).get(name, {})
    return str(next(iter(value.values()), "")) if value else ""


def device_rows(resources: DriverResources) -> list[dict[str, str]]:
    """One row per published device: name, type, product, memory, UUID, PCI bus id."""
    rows = []
    for pool in resources.pools.values():
        for sl in pool.slices:
            for d in sl.devices:
                rows.append(
                    {
                        "DEVICE": str(d["name"]),
                        "TYPE": _attr(d, "type"),
                        "PRODUCT": _attr(d, "productName"),
                        "PROFILE": _attr(d, "profile"),
                        "MEMORY": str(d.get("capacity", {}).get("memory", {}).get("value", "")),
                        "UUID": _attr(d, "uuid"),
                        "PCI": _attr(d, "resource.kubernetes.io/pciBusID"),
                    }
                )
    return rows
