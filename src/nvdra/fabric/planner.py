"""The pure partition planner: the best partition for a request, given the node and its free GPUs.

Objective (lexicographic; the first difference decides):

1. the bounds hold: partition ids (if given), ``minBandwidth`` (GB/s, under the request's
   virtualization model) and ``maxLatency`` (ms, the slowest path between the GPUs handed out);
2. the smallest partition that fits (size = the requested size, or else at least ``count``);
3. the partition whose enclosing block — the smallest larger partitions holding it; where there are
   several, the one with the fewest free GPUs — has the fewest free GPUs, so that whole big blocks stay
   whole (a partition with no enclosing block scores 0);
4. the lowest partition id.

A partition is usable when it holds ``count`` free GPUs; under models that hand out the whole
partition (Shared NVSwitch, full passthrough, vGPU) every one of its GPUs must be free. The GPUs handed
out are the partition's first ``count`` free GPUs (all of it when it is handed out whole).

:func:`plan_partition` is deterministic and does no I/O; it is public API for schedulers and tools.
"""

from __future__ import annotations

__all__ = ["PartitionChoice", "PartitionRequest", "objective", "plan_partition", "usable"]

from collections.abc import Collection, Iterator

import attrs

from nvdra.core.config.fabric import VirtualizationModel
from nvdra.fabric.catalog import Partition, PartitionCatalog
from nvdra.fabric.models import policy_for
from nvdra.fabric.topology import Topology


@attrs.frozen(kw_only=True)
class PartitionRequest:
    """What a tenant asks for: ``count`` GPUs, optionally an exact partition ``size``, and bounds."""

    count: int = attrs.field(validator=attrs.validators.ge(1))
    size: int | None = None
    min_bandwidth: float | None = None
    max_latency: float | None = None
    partition_ids: tuple[int, ...] | None = None
    model: VirtualizationModel = VirtualizationModel.BARE_METAL


@attrs.frozen(kw_only=True)
class PartitionChoice:
    """The planner's answer."""

    partition: Partition
    gpus: tuple[int, ...]  # NVML indices handed out
    bandwidth_gbps: int
    latency_ms: float
    key: tuple[int, int, int]  # (size, free GPUs of the enclosing block, id): smaller is better


def usable(partition: Partition, free: Collection[int], request: PartitionRequest) -> tuple[int, ...] | None:
    """The GPUs ``partition`` would hand out for ``request``, or None if it cannot serve it."""
    if request.size is not None and partition.size != request.size:
        return None
    if partition.size < request.count:
        return None
    if request.partition_ids and partition.id not in request.partition_ids:
        return None
    members = [g for g in partition.gpus if g in free]
    if policy_for(request.model).whole_partition:
        return partition.gpus if len(members) == partition.size else None
    return tuple(members[: request.count]) if len(members) >= request.count else None


def _bounds_hold(bandwidth: int, latency: float, request: PartitionRequest) -> bool:
    if request.min_bandwidth is not None and bandwidth < request.min_bandwidth:
        return False
    return request.max_latency is None or latency <= request.max_latency


def objective(catalog: PartitionCatalog, partition: Partition, free: Collection[int]) -> tuple[int, int, int]:
    """Steps 2-4 of the objective as a sortable key (see the module docstring)."""
    enclosing = catalog.enclosing(partition.id)
    block = min((sum(1 for g in q.gpus if g in free) for q in enclosing), default=0)
    return (partition.size, block, partition.id)


def _choices(
    topology: Topology, catalog: PartitionCatalog, free: Collection[int], request: PartitionRequest
) -> Iterator[PartitionChoice]:
    policy = policy_for(request.model)
    for partition in catalog.partitions:
        gpus = usable(partition, free, request)
        if gpus is None:
            continue
        bandwidth = policy.bandwidth_gbps(partition, topology)
        latency = topology.group_latency_ms(gpus)
        if _bounds_hold(bandwidth, latency, request):
            yield PartitionChoice(
                partition=partition,
                gpus=gpus,
                bandwidth_gbps=bandwidth,
                latency_ms=latency,
                key=objective(catalog, partition, free),
            )


def plan_partition(
    topology: Topology,
    free: Collection[int],
    request: PartitionRequest,
    *,
    catalog: PartitionCatalog | None = None,
) -> PartitionChoice | None:
    """The best partition for ``request`` among the ``free`` GPUs, or None when none satisfies it.

    Args:
        topology: the node's NVLink graph.
        free: NVML indices of the GPUs nobody holds (a set is fastest).
        request: count or size, bounds, virtualization model.
        catalog: the node's partitions; by default the board table or the derived partitions of
            ``topology`` (pass it when planning many times, or when Fabric Manager listed them).
    """
    catalog = catalog or PartitionCatalog.for_topology(topology)
    free_set = free if isinstance(free, set | frozenset) else frozenset(free)
    return min(_choices(topology, catalog, free_set, request), key=lambda c: c.key, default=None)
