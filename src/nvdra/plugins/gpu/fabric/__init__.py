"""NVLink fabric partitions in the GPU driver: publish, verify at prepare, activate per model.

- Publishing (gate ``FabricTopologySupport``): every full GPU carries ``gpuModuleID``,
  ``partition1``/``2``/``4``/``8`` (the id of the partition of that size holding it — upstream's names) and
  ``nvlinkBandwidth`` (GB/s), so ``matchAttribute: gpu.nvidia.com/partition4`` with ``count: 4`` lets the
  stock scheduler hand out one partition.
- :class:`FabricPlanner` (pure) checks each config group with an active ``fabricTopologyConfig``:
  Auto — the allocated GPUs form one partition of ``partitionSize`` (within ``partitionIDs``, if given)
  meeting ``minBandwidth``/``maxLatency``; Manual — exactly one of the ids. It refuses, naming the field
  and the reason, a model the node's Fabric Manager mode does not run, a size the node does not offer, and
  FullPassthrough until GPUs can be handed to VMs (vfio). It plans one ``fabric-partition`` record per
  group.
- :class:`FabricExecutor` applies it: under SharedNVSwitch it activates the FM partition (idempotently:
  skipped when FM already lists it active) and deactivates it when the last claim using it is
  unprepared; in every model it tells the workload its partition through CDI env. A ``fabric-reassert``
  record, applied once at start by :func:`reassert_partitions`, hands a restarted Fabric Manager the
  partitions the checkpoint says are live (``fmSetActivatedFabricPartitions``).
- Opt-in (``--publish-fabric-partitions``, :mod:`nvdra.plugins.gpu.fabric.partitions`): every partition of
  two or more GPUs is also a ``type: partition`` device consuming its GPUs' counters; at prepare it stands
  for its member GPUs.
- :func:`fabric_gate_for_node`: the node label ``resource.nvidia.com/fabric-topology-support`` overrides
  the gate for this node (gradual rollout); the log says which source decided.
"""

from __future__ import annotations

__all__ = [
    "ACTIVATE_KIND",
    "FABRIC_LABEL",
    "REASSERT_KIND",
    "FabricExecutor",
    "FabricManagerWatch",
    "FabricPartition",
    "FabricPlanner",
    "FabricReassert",
    "NodeFabric",
    "build_fabric_effects",
    "connect_fabric_manager",
    "fabric_attributes",
    "fabric_effects",
    "fabric_gate_for_node",
    "fabric_manager_watch",
    "live_owners",
    "partition_rows",
    "planned_node_fabric",
    "reassert_partitions",
    "simulated_node_fabric",
    "watch_fabric_manager",
    "with_fabric_attributes",
]

from nvdra.plugins.gpu.fabric.executor import (
    REASSERT_KIND,
    FabricExecutor,
    FabricReassert,
    build_fabric_effects,
    fabric_effects,
    live_owners,
    reassert_partitions,
)
from nvdra.plugins.gpu.fabric.node import (
    FABRIC_LABEL,
    FabricManagerWatch,
    NodeFabric,
    connect_fabric_manager,
    fabric_attributes,
    fabric_gate_for_node,
    fabric_manager_watch,
    partition_rows,
    simulated_node_fabric,
    watch_fabric_manager,
    with_fabric_attributes,
)
from nvdra.plugins.gpu.fabric.planner import (
    ACTIVATE_KIND,
    FabricPartition,
    FabricPlanner,
    planned_node_fabric,
)
