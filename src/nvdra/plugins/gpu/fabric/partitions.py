"""NVLink partitions as devices of their own (``--publish-fabric-partitions``, opt-in, off by default).

With the flag and ``FabricTopologySupport`` on, the driver publishes, beside the full GPUs, one device of
``type: partition`` per catalog partition of two or more GPUs (the same catalog the ``partition<N>``
attributes name: Fabric Manager's default board table, or partitions derived from the NVLink graph).
The scheduler keeps them apart through counters (KEP-4815 partitionable devices):

- a node-level counter set ``nvlink-gpus`` holds one counter ``gpu-<minor>`` = 1 per full GPU, in a slice
  of its own (Kubernetes >= 1.35: a slice carries devices or counters, never both);
- every full GPU consumes its own counter; a partition device consumes the counters of all its members.

So the scheduler never allocates a partition together with one of its GPUs, nor two overlapping
partitions. API limits kept: at most 32 counters per set (nodes with more GPUs get ``nvlink-gpus-<k>``
sets of 32, by index) and at most 2 counter consumptions per device (a partition whose members span more
than two sets is left out, logged); the publisher splits device slices at 64 devices, the limit once a
device consumes counters.

Only partitions whose members are all published full GPUs are offered (a MIG-enabled member is no full
GPU). The driver re-checks at prepare what the scheduler guarantees — :func:`sharing_refusal`: a device
that occupies a GPU held by another claim (or by an earlier device of the same claim) is refused when
either side is a partition — so a cluster whose scheduler ignores counters still cannot double-book.

DynamicMIG together with the flag is refused at start (:func:`check_partition_flag`): both need a
counter per GPU, and a full GPU would need three consumptions (its MIG counter set and the partitions'),
over the per-device limit of two.
"""

from __future__ import annotations

__all__ = [
    "COUNTER_SET",
    "MAX_COUNTERS_PER_SET",
    "PARTITION_FLAG",
    "PARTITION_TYPE",
    "check_partition_flag",
    "partition_device_name",
    "partition_devices",
    "partitions_enabled",
    "render_partition_layout",
    "sharing_refusal",
]

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from nvdra.core.devices import Gpu, Inventory
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.quantity import format_bytes
from nvdra.core.resourceslice import gpu_device
from nvdra.fabric import Partition, PartitionCatalog, Topology
from nvdra.plugins.gpu.devices import AllocatableDevice

log = logging.getLogger(__name__)

COUNTER_SET = "nvlink-gpus"
MAX_COUNTERS_PER_SET = 32  # resource.k8s.io v1 (1.35)
MAX_CONSUMPTIONS = 2  # consumesCounters entries per device (1.35)
PARTITION_TYPE: Final = "partition"
PARTITION_FLAG = "--publish-fabric-partitions"

# Per-GPU attributes a partition device does not carry (they differ between its members).
_PER_GPU = frozenset(
    {"uuid", "type", "resource.kubernetes.io/pciBusID", "resource.kubernetes.io/pcieRoot", "addressingMode"}
)


def check_partition_flag(publish: bool, gates: FeatureGates) -> None:
    """Refuse flag combinations that cannot be published: the flag with DynamicMIG.

    Raises:
        ConfigError: the flag is on together with the DynamicMIG gate.
    """
    if publish and gates.enabled(Gate.DYNAMIC_MIG) and gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
        raise ConfigError(
            PARTITION_FLAG,
            True,
            f"off while the {Gate.DYNAMIC_MIG} feature gate is on",
            reason=f"fabric partition devices and {Gate.DYNAMIC_MIG} both need per-GPU counters, and a full "
            "GPU cannot consume the counters of both (Kubernetes allows 2 consumesCounters per device):",
        )


def partitions_enabled(publish: bool, gates: FeatureGates) -> bool:
    """Whether partition devices are published: the flag, and FabricTopologySupport on for this node."""
    return publish and gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT) and not gates.enabled(Gate.DYNAMIC_MIG)


def partition_device_name(partition: Partition) -> str:
    """``partition-<size>-<id>``, e.g. ``partition-4-1`` for Fabric Manager's partition 1 of 4 GPUs."""
    return f"partition-{partition.size}-{partition.id}"


def _counter_sets(gpus: Sequence[Gpu]) -> dict[int, str]:
    """GPU index -> the name of the counter set holding its counter (32 counters per set at most)."""
    ordered = sorted(gpus, key=lambda g: g.index)
    single = len(ordered) <= MAX_COUNTERS_PER_SET
    return {
        g.index: COUNTER_SET if single else f"{COUNTER_SET}-{i // MAX_COUNTERS_PER_SET}"
        for i, g in enumerate(ordered)
    }


def _full_gpus(inventory: Inventory) -> list[Gpu]:
    return [g for g in inventory.gpus if not g.mig_enabled]


def _offered(
    inventory: Inventory, catalog: PartitionCatalog | None = None
) -> list[tuple[Partition, tuple[Gpu, ...]]]:
    """Catalog partitions of >= 2 GPUs whose members are all full GPUs within the consumption limit.

    ``catalog``: the plugin's partition table (Fabric Manager's live listing where it answers); by
    default NVML's view alone (the board table or derived partitions).
    """
    full = {g.index: g for g in _full_gpus(inventory)}
    sets = _counter_sets(list(full.values()))
    catalog = catalog or PartitionCatalog.for_topology(Topology.from_inventory(inventory))
    out = []
    for p in catalog.partitions:
        if p.size < 2 or not all(i in full for i in p.gpus):
            continue
        if len({sets[i] for i in p.gpus}) > MAX_CONSUMPTIONS:
            log.warning("partition %d spans more than %d counter sets; not published", p.id, MAX_CONSUMPTIONS)
            continue
        out.append((p, tuple(full[i] for i in p.gpus)))
    return out


def partition_devices(
    inventory: Inventory, catalog: PartitionCatalog | None = None
) -> dict[str, AllocatableDevice]:
    """The partition devices of this node, by name (what a claim may get besides GPUs and MIG devices)."""
    return {
        partition_device_name(p): AllocatableDevice(
            name=partition_device_name(p),
            type=PARTITION_TYPE,
            gpu=members[0],
            members=members,
            partition_id=p.id,
        )
        for p, members in _offered(inventory, catalog)
    }


def _consumes(members: Iterable[Gpu], sets: Mapping[int, str]) -> list[dict[str, Any]]:
    by_set: dict[str, dict[str, Any]] = {}
    for g in members:
        by_set.setdefault(sets[g.index], {})[f"gpu-{g.minor}"] = {"value": "1"}
    return [{"counterSet": name, "counters": dict(sorted(c.items()))} for name, c in sorted(by_set.items())]


def _partition_device(
    partition: Partition, members: Sequence[Gpu], inventory: Inventory, sets: Mapping[int, str]
) -> dict[str, Any]:
    first = gpu_device(members[0], inventory)["attributes"]
    attributes: dict[str, Any] = {k: v for k, v in first.items() if k not in _PER_GPU}
    attributes |= {
        "type": {"string": PARTITION_TYPE},
        "partitionID": {"int": partition.id},
        "partitionSize": {"int": partition.size},
        "nvlinkBandwidth": {"int": partition.bandwidth_gbps},
        "gpuModuleIDs": {"string": ",".join(str(m) for m in partition.module_ids)},
        "gpuMinors": {"string": ",".join(str(g.minor) for g in members)},
    }
    device: dict[str, Any] = {
        "name": partition_device_name(partition),
        "attributes": dict(sorted(attributes.items())),
        "consumesCounters": _consumes(members, sets),
    }
    memory = [g.memory_bytes for g in members]
    if all(m is not None for m in memory):
        device["capacity"] = {"memory": {"value": format_bytes(sum(m for m in memory if m is not None))}}
    return device


def render_partition_layout(
    inventory: Inventory, devices: Sequence[dict[str, Any]], catalog: PartitionCatalog | None = None
) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """``(counter sets, devices)``: ``devices`` with each full GPU consuming its counter, then the partitions.

    Devices that are not full GPUs of this inventory (MIG devices) are passed through unchanged.
    """
    full = _full_gpus(inventory)
    sets = _counter_sets(full)
    by_name: dict[str, Gpu] = {str(g.name): g for g in full}
    out = []
    for device in devices:
        gpu = by_name.get(str(device.get("name")))
        if gpu is None:
            out.append(device)
            continue
        out.append({**device, "consumesCounters": _consumes((gpu,), sets)})
    out += [_partition_device(p, members, inventory, sets) for p, members in _offered(inventory, catalog)]
    counters: dict[str, dict[str, Any]] = {}
    for g in sorted(full, key=lambda g: g.index):
        counters.setdefault(sets[g.index], {})[f"gpu-{g.minor}"] = {"value": "1"}
    counter_sets = tuple({"name": name, "counters": c} for name, c in sorted(counters.items()))
    return counter_sets, tuple(out)


def sharing_refusal(device: AllocatableDevice, others: Iterable[tuple[AllocatableDevice, str]]) -> str | None:
    """Why ``device`` cannot be prepared beside ``others`` (device, holder description), or None.

    Only pairs where one side is a partition are checked: other devices of one GPU (MIG devices, a
    GPU and its vfio view) have their own rules.
    """
    mine = {g.uuid for g in device.gpus}
    for other, holder in others:
        if other.name == device.name or PARTITION_TYPE not in (device.type, other.type):
            continue
        shared = sorted(g.name for g in other.gpus if g.uuid in mine)
        if shared:
            return (
                f"device {device.name!r} shares GPU {', '.join(shared)} with {other.name!r}, "
                f"which is {holder}"
            )
    return None
