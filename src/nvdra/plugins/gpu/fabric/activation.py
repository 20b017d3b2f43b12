"""Binding conditions for SharedNVSwitch partition devices (gate ``DeviceBindingConditions``, KEP-5007).

Which devices: the partition devices (``partition-<size>-<id>``, ``--publish-fabric-partitions``) of a
node whose Fabric Manager runs SharedNVSwitch. Such a device names its FM partition, and prepare
activates it whatever the claim says (the planner's implicit SharedNVSwitch config), so the activation
can be done as soon as the claim is allocated. Full GPUs carry no condition: which partition (if any)
they form depends on the other GPUs of the claim and on its ``fabricTopologyConfig``, so a single GPU
cannot tell; conditioning every GPU would hold every GPU claim's binding on a loop with nothing to do.

Each such device is published with ``bindingConditions: [gpu.nvidia.com/FabricPartitionActive]``,
``bindingFailureConditions: [gpu.nvidia.com/FabricPartitionFailed]`` and ``bindsToNode: true`` (the
activation is this node's Fabric Manager state: the allocation must not move to another node).

The loop is the VFIO :class:`~nvdra.plugins.gpu.binding.Binder` with other condition kinds: for every
claim allocated such a device of this node without a verdict, it activates the partition through the
executor prepare uses (:class:`~nvdra.plugins.gpu.fabric.executor.FabricExecutor`: its retries with
backoff, and no half-active partition left behind on failure), records the claim as an owner of the
partition, and sets ``FabricPartitionActive`` True in the claim's ``status.devices``; after
``max_attempts`` failed passes it sets ``FabricPartitionFailed`` True with the reason. Prepare then finds
the partition active (no second activation) and adds the claim as owner; unprepare deactivates after the
last claim on the partition. Its own undo path: what was activated for which claim is written to
``fabric-binder.json`` in the plugin directory before the activation; a claim that goes away before it is
prepared (also while the plugin was down: the first pass at start sweeps the record) has its partition
deactivated, unless another claim owns it; a prepared claim whose checkpoint has no activating record (a
config with fabric logic Disabled) hands the partition back the same way.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE",
    "FABRIC_CONDITIONS",
    "FAILED",
    "partition_binding_views",
    "start_partition_binder",
]

import logging
from collections.abc import Callable, Sequence

from nvdra.core.checkpoint import Checkpoint, ClaimState
from nvdra.core.config import VirtualizationModel
from nvdra.core.devices import Inventory
from nvdra.core.errors import ClaimError, NvdraError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.fabric import FabricMode, policy_for
from nvdra.kubeletplugin.objects import ObjectApi
from nvdra.plugins.gpu.binding import Binder, BindingConditionsView, ConditionKinds
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.effects import Effects
from nvdra.plugins.gpu.fabric.executor import live_owners
from nvdra.plugins.gpu.fabric.node import NodeFabric
from nvdra.plugins.gpu.fabric.partitions import PARTITION_TYPE, partition_devices, partitions_enabled
from nvdra.plugins.gpu.fabric.planner import ACTIVATE_KIND, FabricPartition, planned_node_fabric

log = logging.getLogger(__name__)

ACTIVE = "gpu.nvidia.com/FabricPartitionActive"
FAILED = "gpu.nvidia.com/FabricPartitionFailed"
FABRIC_CONDITIONS = ConditionKinds(
    ready=ACTIVE,
    failed=FAILED,
    ready_reason="PartitionActive",
    failed_reason="ActivationFailed",
    done="is active in Fabric Manager",
)
STATE_FILE = "fabric-binder.json"


def _conditioned(node: NodeFabric | None, gates: FeatureGates, publish: bool) -> bool:
    """Partition devices carry conditions: the gate, published partitions, FM in SharedNVSwitch mode."""
    return (
        gates.enabled(Gate.DEVICE_BINDING_CONDITIONS)
        and partitions_enabled(publish, gates)
        and node is not None
        and node.mode is FabricMode.SHARED_NVSWITCH
    )


def partition_binding_views(
    gates: FeatureGates, planners: Sequence[object], publish: bool
) -> list[BindingConditionsView]:
    """The view, when partition devices are published (``publish``: ``--publish-fabric-partitions``) on a
    SharedNVSwitch node and DeviceBindingConditions is on; else none."""
    node = planned_node_fabric(planners)
    return (
        [BindingConditionsView(PARTITION_TYPE, FABRIC_CONDITIONS, binds_to_node=True)]
        if _conditioned(node, gates, publish)
        else []
    )


def _record(node: NodeFabric, device: AllocatableDevice, claim: str) -> FabricPartition:
    """The record prepare plans for a partition device under SharedNVSwitch (the executor needs its id)."""
    partition = node.catalog.get(device.partition_id) if device.partition_id is not None else None
    if partition is None:
        raise ClaimError(f"{device.name} names no partition of this node's Fabric Manager table")
    policy = policy_for(VirtualizationModel.SHARED_NVSWITCH)
    return FabricPartition(
        claim=claim,
        partition_id=partition.id,
        size=partition.size,
        module_ids=tuple(partition.module_ids),
        devices=tuple(g.name for g in device.gpus),
        model=str(VirtualizationModel.SHARED_NVSWITCH),
        activate=True,
        bandwidth_gbps=policy.bandwidth_gbps(partition, node.topology),
    )


def start_partition_binder(
    config: PluginConfig,
    gates: FeatureGates,
    api: ObjectApi,
    *,
    inventory: Inventory,
    effects: Effects,
    checkpoint: Callable[[], Checkpoint],
    period_s: float = 1.0,
    max_attempts: int = 3,
) -> Binder | None:
    """The running loop activating the partitions of allocated partition devices (see the module
    docstring), or None when partition devices carry no conditions on this node."""
    node = planned_node_fabric(effects.planners)
    if node is None or not _conditioned(node, gates, config.publish_fabric_partitions):
        return None
    devices = partition_devices(inventory, node.catalog)
    executor = effects.executor(ACTIVATE_KIND)

    def record(uid: str, name: str) -> FabricPartition:
        device = devices.get(name)
        if device is None:
            raise ClaimError(
                f"{name} is not a partition device of this node (known: {', '.join(sorted(devices))})"
            )
        return _record(node, device, uid)

    def prepared() -> set[str]:
        return {uid for uid, c in checkpoint().claims.items() if c.state is ClaimState.PREPARE_COMPLETED}

    def handover(uid: str, name: str) -> None:
        """Prepare took the claim: the partition is its record's now, unless it planned no activation."""
        try:
            wanted = record(uid, name)
            if uid in live_owners(checkpoint()).get(str(wanted.partition_id), []):
                return
            log.info(
                "claim %s was prepared without activating partition %d; handing it back",
                uid,
                wanted.partition_id,
            )
            executor.undo(wanted)
        except NvdraError as exc:
            log.error("cannot hand back partition of %s for claim %s: %s", name, uid, exc)

    def activate(uid: str, name: str) -> None:
        executor.apply(record(uid, name))  # the workload's env is prepare's to write

    binder = Binder(
        api,
        driver_name=config.driver_name,
        node_name=config.node_name,
        bind=activate,
        unbind=lambda uid, name: executor.undo(record(uid, name)),
        prepared=prepared,
        state_path=config.plugin_dir / STATE_FILE,
        max_attempts=max_attempts,
        kinds=FABRIC_CONDITIONS,
        handover=handover,
    )
    binder.start(period_s)
    return binder
