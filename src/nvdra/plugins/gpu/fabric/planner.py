"""The fabric planner: checks a claim's GPUs against its ``fabricTopologyConfig`` (pure).

Auto: the allocated GPUs form one partition of ``partitionSize`` (within ``partitionIDs``, if given) meeting
``minBandwidth``/``maxLatency``; Manual: exactly one of the ids; Disabled and VGPU: no check. Refused, naming
the field and the reason: a model the node's Fabric Manager mode does not run, a size the node does not
offer, unknown ids, and a model that needs vfio-pci while PassthroughSupport is off. One
``fabric-partition`` record per checked group; refusing changes nothing.

The VM paths (``fabricTopologyConfig`` in a ``VfioDeviceConfig``, or FullPassthrough in a ``GpuConfig``)
hand the partition's GPUs to vfio-pci: the group's ``vfio-pci`` records come first, then its
``fabric-partition`` record. Under SharedNVSwitch that order is the service VM's: the GPUs leave the
host driver before Fabric Manager activates (and resets) them; undone in reverse, the partition is
deactivated before the GPUs go back to ``nvidia``. The activation is ``fmActivateFabricPartition``: its
VF variant belongs to the vGPU mode, where fabric logic is off.

A partition device (``--publish-fabric-partitions``) stands for its member GPUs: a group's check sees the
members, and a partition device that no ``fabricTopologyConfig`` covers is checked on its own under the
node's own model (SharedNVSwitch where Fabric Manager runs in that mode, so it is activated; else
BareMetal): its record activates it where needed and tells the workload its partition. Partition devices
serve containers: the VM paths (vfio-pci) take ``gpu-vfio-<i>`` devices and are refused for them.
"""

from __future__ import annotations

__all__ = ["ACTIVATE_KIND", "FabricPartition", "FabricPlanner", "fabric_config", "planned_node_fabric"]

from collections.abc import Sequence
from typing import ClassVar

import attrs

from nvdra.core.config import (
    ConfigGroup,
    FabricStrategy,
    FabricTopologyConfig,
    GpuConfig,
    VfioDeviceConfig,
    VirtualizationModel,
)
from nvdra.core.effects import EffectRecord, effect_field
from nvdra.core.errors import ClaimError, ConfigError
from nvdra.core.featuregates import Gate
from nvdra.fabric import (
    FabricMode,
    ModelPolicy,
    Partition,
    describe_mode,
    nvswitch_functions,
    policy_for,
)
from nvdra.fabric.attributes import DOMAIN, MODE_ATTRIBUTE, mode_value, partition_attribute
from nvdra.fabric.requirements import group_selectors, selector
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.effects import ClaimContext
from nvdra.plugins.gpu.fabric.node import NodeFabric
from nvdra.plugins.gpu.vfio import VfioBind, nvswitch_bind_records, vfio_bind_records

ACTIVATE_KIND = "fabric-partition"


@attrs.frozen(kw_only=True)
class FabricPartition(EffectRecord):
    """A claim's checked FM partition: activated when ``activate`` (SharedNVSwitch), told the workload."""

    KIND: ClassVar[str] = ACTIVATE_KIND
    claim: str  # the claim's UID
    partition_id: int
    size: int
    module_ids: tuple[int, ...]
    devices: tuple[str, ...]
    model: str  # the virtualization model's name
    activate: bool = False
    bandwidth_gbps: int = effect_field(json="bandwidthGBps")


_CONFIG_PATH = "$.status.allocation.devices.config"


# -- planning ----------------------------------------------------------------------------------------


def fabric_config(group: ConfigGroup) -> FabricTopologyConfig | None:
    """The group's fabric requirements (GpuConfig, legacy id translated, or VfioDeviceConfig), if any."""
    config = group.config
    if isinstance(config, GpuConfig | VfioDeviceConfig):
        return config.effective_fabric_topology
    return None


class FabricPlanner:
    """Checks the allocated GPUs against each group's ``fabricTopologyConfig`` (pure)."""

    def __init__(self, node: NodeFabric, *, passthrough: bool = False) -> None:
        """``passthrough``: whether GPUs can be bound to vfio-pci here (gate PassthroughSupport)."""
        self.node = node
        self.passthrough = passthrough

    def plan(self, ctx: ClaimContext) -> list[EffectRecord]:
        """Per group with active fabric logic: its vfio-pci binds (VM paths), then its partition record;
        then one record per partition device no such group covers."""
        records: list[EffectRecord] = []
        covered: set[str] = set()
        for group in ctx.groups:
            fabric = fabric_config(group)
            if fabric is None:
                continue
            covered.update(d.name for d in ctx.group_devices(group))  # Disabled/VGPU: the user's choice
            if not fabric.active:
                continue
            partition = self._plan_group(ctx, group, fabric)
            records.extend(self._binds(ctx, group, fabric))
            records.append(partition)
        implicit = self._implicit_config()
        for device in ctx.devices:
            if device.type == "partition" and device.name not in covered:
                records.append(self._plan_devices(ctx, (device,), implicit, f"device {device.name}"))
        return records

    def _implicit_config(self) -> FabricTopologyConfig:
        """What a partition device without a fabricTopologyConfig gets: Auto under the node's model."""
        shared = self.node.mode is FabricMode.SHARED_NVSWITCH
        model = VirtualizationModel.SHARED_NVSWITCH if shared else VirtualizationModel.BARE_METAL
        return FabricTopologyConfig(strategy=FabricStrategy.AUTO, virtualization_model=model)

    def _binds(
        self, ctx: ClaimContext, group: ConfigGroup, fabric: FabricTopologyConfig
    ) -> Sequence[VfioBind]:
        """The vfio-pci records of a VM path: a VfioDeviceConfig group, or FullPassthrough GPUs."""
        devices = ctx.group_devices(group)
        config = group.config if isinstance(group.config, VfioDeviceConfig) else None
        if config is None and not policy_for(fabric.effective_model).needs_vfio:
            return ()
        records = vfio_bind_records(devices, config)
        if fabric.effective_model is VirtualizationModel.FULL_PASSTHROUGH and devices:
            # The guest runs its own Fabric Manager: it needs the partition's NVSwitches too.
            switches = nvswitch_functions(g for d in self._expanded(devices) for g in d.gpus)
            records += nvswitch_bind_records(switches, devices[0].name, config)
        return records

    def _plan_group(
        self, ctx: ClaimContext, group: ConfigGroup, fabric: FabricTopologyConfig
    ) -> FabricPartition:
        path = (
            f"{_CONFIG_PATH}[{group.index}].opaque.parameters.fabricTopologyConfig"
            if group.index is not None
            else "fabricTopologyConfig"
        )
        vm = isinstance(group.config, VfioDeviceConfig)
        return self._plan_devices(ctx, ctx.group_devices(group), fabric, path, vm=vm)

    def _plan_devices(
        self,
        ctx: ClaimContext,
        devices: Sequence[AllocatableDevice],
        fabric: FabricTopologyConfig,
        path: str,
        *,
        vm: bool = False,
    ) -> FabricPartition:
        node = self.node
        model = fabric.effective_model
        policy = policy_for(model)
        self._check_model(path, policy, vm=vm)
        whole = [d.name for d in devices if d.type == "partition"]
        if whole and (vm or policy.needs_vfio):
            raise ConfigError(
                f"{path}.virtualizationModel",
                str(model),
                "a container model (BareMetal, SharedNVSwitch) for partition devices",
                reason=f"{', '.join(whole)} are partition devices, which serve containers; a VM gets its "
                "GPUs as gpu-vfio-<i> devices (class vfio.gpu.nvidia.com):",
            )
        members = self._members(devices)
        gpus = tuple(sorted(i for _, i in members))
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
            f"{name} (module {node.topology.gpu(i).module_id})" for name, i in sorted(members, key=_by_index)
        )
        partition = node.catalog.exact(gpus)
        wanted = self._wanted(fabric, size)
        if partition is None or partition.size != size or partition.id not in {p.id for p in wanted}:
            field = "partitionIDs" if partition is not None and partition.size == size else "partitionSize"
            raise ClaimError(
                f"allocated GPUs {names} do not form {self._describe(wanted, fabric)}; NVLink bandwidth "
                f"found between them: {node.topology.group_bandwidth(gpus)} GB/s"
                + _say_it(fabric, size, field)
            )
        bandwidth = policy.bandwidth_gbps(partition, node.topology)
        if fabric.min_bandwidth is not None and bandwidth < fabric.min_bandwidth:
            raise ClaimError(
                f"{partition.label} ({names}) gives {bandwidth} GB/s per GPU under {model} "
                f"({partition.links_per_gpu} NVLinks per GPU), below minBandwidth "
                f"{fabric.min_bandwidth:g} GB/s" + _say_it(fabric, size, "minBandwidth")
            )
        latency = node.topology.group_latency_ms(gpus)
        if fabric.max_latency is not None and latency > fabric.max_latency:
            raise ClaimError(
                f"{partition.label} ({names}) has a modelled path latency of {latency:g} ms "
                f"({node.topology.path_class(gpus[0], gpus[-1])}), above maxLatency {fabric.max_latency:g} ms"
                + _say_it(fabric, size, "maxLatency")
            )
        return FabricPartition(
            claim=ctx.ref.uid,
            partition_id=partition.id,
            size=partition.size,
            module_ids=tuple(partition.module_ids),
            devices=tuple(name for name, _ in sorted(members, key=_by_index)),
            model=str(model),
            activate=policy.activates,
            bandwidth_gbps=bandwidth,
        )

    def _check_model(self, path: str, policy: ModelPolicy, *, vm: bool) -> None:
        """Refuse a model this node cannot run: wrong Fabric Manager mode, no SDK, no vfio-pci."""
        node, model = self.node, policy.model
        if not policy.allows(node.mode):
            expression = group_selectors(FabricTopologyConfig(virtualization_model=model), 2)[0][1]
            raise ConfigError(
                f"{path}.virtualizationModel",
                str(model),
                f"a model this node's {describe_mode(node.mode)} runs; to keep such claims off this node, "
                f"add the selector '{expression}' to the request",
                reason=f"virtualizationModel does not match the node ({describe_mode(node.mode)}, "
                f"{MODE_ATTRIBUTE}={mode_value(node.mode)}):",
            )
        if (policy.needs_vfio or vm) and not self.passthrough:
            raise ConfigError(
                f"{path}.virtualizationModel",
                str(model),
                f"a model without vfio-pci, or the {Gate.PASSTHROUGH_SUPPORT} feature gate enabled",
                reason=f"{model} hands the partition's GPUs to a VM through vfio-pci, which needs the "
                f"{Gate.PASSTHROUGH_SUPPORT} feature gate:",
            )
        if policy.activates and node.fm is None:
            raise ClaimError(
                f"virtualizationModel {model} needs the Fabric Manager SDK, which is unavailable: "
                f"{node.fm_problem}"
            )

    def _members(self, devices: Sequence[AllocatableDevice]) -> list[tuple[str, int]]:
        """(device name, NVML index) of each allocated full GPU or VFIO device; refuses anything else."""
        mig = [d.name for d in devices if d.type == "mig"]
        if mig:
            raise ClaimError(
                f"fabricTopologyConfig applies to full GPUs; {', '.join(mig)} have no NVLink P2P"
            )
        members = []
        for d in self._expanded(devices):
            index = self.node.index_at(d.vfio.address) if d.vfio is not None else self.node.index_of(d.name)
            if index is None:
                raise ClaimError(
                    f"device {d.name!r} is a GPU NVML does not see (bound away from nvidia before the plugin "
                    "started), so its NVLink partition cannot be checked"
                )
            members.append((d.name, index))
        return members

    @staticmethod
    def _expanded(devices: Sequence[AllocatableDevice]) -> list[AllocatableDevice]:
        """A partition device stands for its member GPUs (as if each were allocated)."""
        out: list[AllocatableDevice] = []
        for d in devices:
            if d.type == "partition":
                out += [AllocatableDevice(name=g.name, type="gpu", gpu=g) for g in d.gpus]
            else:
                out.append(d)
        return out

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


def _say_it(fabric: FabricTopologyConfig, size: int, field: str) -> str:
    """The refusal's advice: what the claim must tell the scheduler so it is not allocated here again."""
    if field == "partitionSize":
        return (
            f"; the scheduler was not told: give the request count {size} and the constraint matchAttribute "
            f"{DOMAIN}/{partition_attribute(size)} (nvdra validate --fix adds it)"
        )
    expression = selector(fabric, size, field)
    if expression is None:
        return ""
    return (
        f"; the scheduler was not told: add the selector '{expression}' to the request "
        "(nvdra validate --fix adds it)"
    )


def planned_node_fabric(planners: Sequence[object]) -> NodeFabric | None:
    """The node fabric of the fabric planner among ``planners`` (what the publisher names), if any."""
    return next((p.node for p in planners if isinstance(p, FabricPlanner)), None)


def _by_index(member: tuple[str, int]) -> int:
    return member[1]
