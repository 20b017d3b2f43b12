"""What a node would publish, without a cluster: the plugin's own publication → ResourceSlice objects.

Used by ``nvdra devices``, ``explain`` and ``demo``. The devices come from
:func:`nvdra.plugins.gpu.publication.offline_publication` — the function the plugin's start-up uses,
with gates from flags and environment, the node's labels and every device view (VFIO, health) — and
the slice objects are rendered with the publisher's pool splitting and naming (generation 1, one pool
named after the node).
"""

from __future__ import annotations

__all__ = [
    "device_rows",
    "driver_resources",
    "node_publication",
    "simulated_inventory",
    "slice_device_rows",
    "slice_objects",
]

import os
from collections.abc import Mapping, Sequence
from typing import Any

from nvdra.core.devices import Inventory
from nvdra.core.featuregates import FeatureGates
from nvdra.kubeletplugin.publisher import PoolTarget, split_pool
from nvdra.kubeletplugin.types import DriverResources
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.fabric.partitions import check_partition_flag
from nvdra.plugins.gpu.publication import Publication, node_resources, offline_publication


def node_publication(
    profile: str,
    *,
    node_name: str = "node",
    feature_gates: str = "",
    fabric_partitions: bool = False,
    node_labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    simulate_state: str = "",
) -> Publication:
    """What ``nvdra-gpu-plugin --simulate PROFILE`` with these flags publishes (``env``: the process
    environment by default — ``FABRIC_TOPOLOGY_SUPPORT`` and ``CONSUMABLE_SHARES`` count as they do
    for the plugin; ``simulate_state``: a running simulated node's ``--simulate-state`` directory,
    whose hardware state — MIG devices made, Fabric Manager partitions — is what is shown)."""
    env = os.environ if env is None else env
    config = PluginConfig(
        node_name=node_name,
        simulate=profile,
        feature_gates=feature_gates,
        publish_fabric_partitions=fabric_partitions,
        consumable_shares=env.get("CONSUMABLE_SHARES", "disabled"),
        simulate_state=simulate_state,
    )
    return offline_publication(config, env=env, node_labels=node_labels)


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
    """The inventory's own devices as the plugin publishes them, without device views (no I/O).

    ``fabric_partitions``: as ``--publish-fabric-partitions`` (NVLink partitions as devices). For
    everything a node publishes (VFIO devices, gates from the environment) use :func:`node_publication`.

    Raises:
        ConfigError: ``fabric_partitions`` together with DynamicMIG.
    """
    check_partition_flag(fabric_partitions, gates)
    return node_resources(
        inventory, node_name=node_name, gates=gates, fabric_partitions=fabric_partitions, views=()
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


def _attr(device: Mapping[str, Any], name: str) -> str:
    value = (device.get("attributes") or {}).get(name) or {}
    return str(next(iter(value.values()), "")) if value else ""


def _taints(device: Mapping[str, Any]) -> str:
    return ",".join(
        f"{t.get('key', '')}={t.get('value', '')}:{t.get('effect', '')}" for t in device.get("taints") or []
    )


def slice_device_rows(slices: Sequence[Mapping[str, Any]], wide: bool = False) -> list[dict[str, str]]:
    """One row per device of ``slices``: name, type, product, MIG profile, memory; ``wide`` adds the
    node, pool, UUID, PCI bus id, counters consumed and taints."""
    rows = []
    for sl in slices:
        spec = sl.get("spec") or {}
        for d in spec.get("devices") or []:
            row = {
                "NODE": str(spec.get("nodeName") or ""),
                "DEVICE": str(d.get("name", "")),
                "TYPE": _attr(d, "type"),
                "PRODUCT": _attr(d, "productName"),
                "PROFILE": _attr(d, "profile"),
                "MEMORY": str(((d.get("capacity") or {}).get("memory") or {}).get("value", "")),
            }
            if wide:
                row |= {
                    "DRIVER": str(spec.get("driver", "")),
                    "POOL": str((spec.get("pool") or {}).get("name", "")),
                    "UUID": _attr(d, "uuid"),
                    "PCI": _attr(d, "resource.kubernetes.io/pciBusID"),
                    "COUNTERS": ",".join(
                        str(c.get("counterSet", "")) for c in d.get("consumesCounters") or []
                    ),
                    "TAINTS": _taints(d),
                }
            rows.append(row)
    return rows


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
