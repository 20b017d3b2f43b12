"""The fabric planner: checks a claim's GPUs against its ``fabricTopologyConfig`` (pure).

Auto: the allocated GPUs form one partition of ``partitionSize`` (within ``partitionIDs``, if given) meeting
``minBandwidth``/``maxLatency``; Manual: exactly one of the ids; Disabled and VGPU: no check. Refused, naming
the field and the reason: a model the node's Fabric Manager mode does not run, a size the node does not
offer, unknown ids, and FullPassthrough until GPUs can be handed to VMs (vfio). One ``fabric-partition``
record per checked group; refusing changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from nvdra.core.config import ConfigGroup, FabricStrategy, FabricTopologyConfig, GpuConfig
from nvdra.core.errors import ClaimError, ConfigError
from nvdra.fabric import (
    Partition,
    describe_mode,
    policy_for,
)
from nvdra.plugins.gpu.effects import ClaimContext, Record
from nvdra.plugins.gpu.fabric.node import NodeFabric

__all__ = ["ACTIVATE_KIND", "FabricPlanner"]

ACTIVATE_KIND = "fabric-partition"
_CONFIG_PATH = "$.status.allocation.devices.config"


# -- planning ----------------------------------------------------------------------------------------


def _fabric_config(group: ConfigGroup) -> FabricTopologyConfig | None:
    config = group.config
    return config.effective_fabric_topology if isinstance(config, GpuConfig) else None


class FabricPlanner:
    """Checks the allocated GPUs against each group's ``fabricTopologyConfig`` (pure)."""

    def __init__(self, node: NodeFabric) -> None:
        self.node = node

    def plan(self, ctx: ClaimContext) -> list[Record]:
        """One ``fabric-partition`` record per group with active fabric logic; refuses bad groups."""
        records: list[Record] = []
        for group in ctx.groups:
            fabric = _fabric_config(group)
            if fabric is None or not fabric.active:
                continue
            records.append(self._plan_group(ctx, group, fabric))
        return records

    def _plan_group(self, ctx: ClaimContext, group: ConfigGroup, fabric: FabricTopologyConfig) -> Record:
        node = self.node
        path = (
            f"{_CONFIG_PATH}[{group.index}].opaque.parameters.fabricTopologyConfig"
            if group.index is not None
            else "fabricTopologyConfig"
        )
        model = fabric.effective_model
        policy = policy_for(model)
        if not policy.allows(node.mode):
            raise ConfigError(
                f"{path}.virtualizationModel",
                str(model),
                f"a model this node's {describe_mode(node.mode)} runs",
                reason=f"virtualizationModel does not match the node ({describe_mode(node.mode)}):",
            )
        if policy.needs_vfio:
            raise ConfigError(
                f"{path}.virtualizationModel",
                str(model),
                "BareMetal or SharedNVSwitch for now",
                reason="FullPassthrough hands the GPUs and NVSwitches to a VM through vfio-pci, which this "
                "driver cannot do yet (GPU passthrough is pending):",
            )
        if policy.activates and node.fm is None:
            raise ClaimError(
                f"virtualizationModel {model} needs the Fabric Manager SDK, which is unavailable: "
                f"{node.fm_problem}"
            )
        devices = ctx.group_devices(group)
        mig = [d.name for d in devices if d.type != "gpu"]
        if mig:
            raise ClaimError(
                f"fabricTopologyConfig applies to full GPUs; {', '.join(mig)} have no NVLink P2P"
            )
        indices = [node.index_of(d.name) for d in devices]
        gpus = tuple(sorted(i for i in indices if i is not None))
        size = fabric.partition_size or len(gpus)
        if size not in node.catalog.sizes or size < 2:
            offered = [s for s in node.catalog.sizes if s >= 2]
            raise ConfigError(
                f"{path}.partitionSize",
                size,
                f"one of {offered}" if offered else "nothing: this node has no multi-GPU NVLink partition",
                reason="partitionSize is not offered by this node"
                + ("" if fabric.partition_size else " (defaulted to the number of allocated GPUs)")
                + ":",
            )
        unknown = [pid for pid in fabric.partition_ids or () if node.catalog.get(pid) is None]
        if unknown:
            raise ConfigError(
                f"{path}.partitionIDs",
                [f"partition-{pid}" for pid in unknown],
                "partition ids of this node: "
                + ", ".join(p.label for p in node.catalog.partitions if p.size >= 2),
                reason="no such partition on this node:",
            )
        names = ", ".join(
            f"{node.topology.gpu(i).name} (module {node.topology.gpu(i).module_id})" for i in gpus
        )
        partition = node.catalog.exact(gpus)
        wanted = self._wanted(fabric, size)
        if partition is None or partition.size != size or partition.id not in {p.id for p in wanted}:
            raise ClaimError(
                f"allocated GPUs {names} do not form {self._describe(wanted, fabric)}; NVLink bandwidth "
                f"found between them: {node.topology.group_bandwidth(gpus)} GB/s"
            )
        bandwidth = policy.bandwidth_gbps(partition, node.topology)
        if fabric.min_bandwidth is not None and bandwidth < fabric.min_bandwidth:
            raise ClaimError(
                f"{partition.label} ({names}) gives {bandwidth} GB/s per GPU under {model}, "
                f"below minBandwidth {fabric.min_bandwidth:g} GB/s"
            )
        latency = node.topology.group_latency_ms(gpus)
        if fabric.max_latency is not None and latency > fabric.max_latency:
            raise ClaimError(
                f"{partition.label} ({names}) has a path latency of {latency:g} ms, above maxLatency "
                f"{fabric.max_latency:g} ms"
            )
        return {
            "kind": ACTIVATE_KIND,
            "claim": ctx.ref.uid,
            "partitionId": partition.id,
            "size": partition.size,
            "moduleIds": list(partition.module_ids),
            "devices": [node.topology.gpu(i).name for i in gpus],
            "model": str(model),
            "activate": policy.activates,
            "bandwidthGBps": bandwidth,
        }

    def _wanted(self, fabric: FabricTopologyConfig, size: int) -> tuple[Partition, ...]:
        candidates = self.node.catalog.of_size(size)
        if fabric.partition_ids:
            candidates = tuple(p for p in candidates if p.id in fabric.partition_ids)
        return candidates

    def _describe(self, wanted: Sequence[Partition], fabric: FabricTopologyConfig) -> str:
        how = "Manual" if fabric.effective_strategy is FabricStrategy.MANUAL else "Auto"
        if not wanted:
            return f"a partition ({how}): none of {list(fabric.partition_ids or ())} has the requested size"
        listed = "; ".join(
            f"{p.label} = {', '.join(self.node.topology.gpu(i).name for i in p.gpus)}" for p in wanted
        )
        return f"one partition of {wanted[0].size} GPUs ({how}), expected one of: {listed}"
