"""The partition planner: bounds hold, it equals a brute-force search, and it is deterministic."""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdra.core.config.fabric import VirtualizationModel
from nvdra.fabric import PartitionCatalog, PartitionRequest, Topology, plan_partition, policy_for
from tests.fabric.conftest import BOARDS

MODELS = [
    VirtualizationModel.BARE_METAL,
    VirtualizationModel.SHARED_NVSWITCH,
    VirtualizationModel.FULL_PASSTHROUGH,
]
_CACHE: dict[str, tuple[Topology, PartitionCatalog]] = {}


def board(name: str) -> tuple[Topology, PartitionCatalog]:
    """A board's topology and catalog (built once)."""
    if name not in _CACHE:
        topology = BOARDS[name]()
        _CACHE[name] = (topology, PartitionCatalog.for_topology(topology))
    return _CACHE[name]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, frozenset[int], PartitionRequest]:
    """A board, a set of free GPUs, and a request with random bounds."""
    name = draw(st.sampled_from(sorted(BOARDS)))
    topology, catalog = board(name)
    free = frozenset(draw(st.sets(st.sampled_from(topology.indices))))
    count = draw(st.integers(1, len(topology.indices)))
    size = draw(st.none() | st.sampled_from(catalog.sizes))
    ids = draw(
        st.none() | st.lists(st.sampled_from([p.id for p in catalog.partitions]), max_size=4, unique=True)
    )
    return (
        name,
        free,
        PartitionRequest(
            count=count,
            size=size,
            min_bandwidth=draw(st.none() | st.sampled_from([0.0, 100.0, 600.0, 900.0, 1000.0, 1800.0])),
            max_latency=draw(st.none() | st.sampled_from([0.001, 0.0025, 0.1])),
            partition_ids=tuple(ids) if ids else None,
            model=draw(st.sampled_from(MODELS)),
        ),
    )


def brute_force(topology: Topology, catalog: PartitionCatalog, free: frozenset[int], req: PartitionRequest):  # type: ignore[no-untyped-def]
    """Every GPU subset that is a catalog partition, scored from first principles; the minimum key wins."""
    best = None
    members = topology.indices
    policy = policy_for(req.model)
    for n in range(1, len(members) + 1):
        for subset in itertools.combinations(members, n):
            for part in (p for p in catalog.partitions if p.gpus == subset):
                if (req.size is not None and part.size != req.size) or part.size < req.count:
                    continue
                if req.partition_ids and part.id not in req.partition_ids:
                    continue
                free_members = [g for g in part.gpus if g in free]
                if (policy.whole_partition and len(free_members) != part.size) or len(
                    free_members
                ) < req.count:
                    continue
                gpus = part.gpus if policy.whole_partition else tuple(free_members[: req.count])
                bandwidth = policy.bandwidth_gbps(part, topology)
                latency = max(
                    (topology.latency_ms(a, b) for a, b in itertools.combinations(gpus, 2)), default=0.0005
                )
                if req.min_bandwidth is not None and bandwidth < req.min_bandwidth:
                    continue
                if req.max_latency is not None and latency > req.max_latency:
                    continue
                larger = [
                    q for q in catalog.partitions if q.size > part.size and set(part.gpus) <= set(q.gpus)
                ]
                smallest = min((q.size for q in larger), default=None)
                block = min((sum(g in free for g in q.gpus) for q in larger if q.size == smallest), default=0)
                key = (part.size, block, part.id)
                if best is None or key < best[0]:
                    best = (key, part.id, gpus)
    return best


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_planner_satisfies_bounds_and_equals_brute_force(
    scenario: tuple[str, frozenset[int], PartitionRequest],
) -> None:
    """On every board up to 16 GPUs the planner's choice meets the bounds and equals brute force."""
    name, free, request = scenario
    topology, catalog = board(name)
    choice = plan_partition(topology, free, request, catalog=catalog)
    expected = brute_force(topology, catalog, free, request)
    if expected is None:
        assert choice is None
        return
    assert choice is not None
    assert (choice.key, choice.partition.id, choice.gpus) == expected
    assert set(choice.gpus) <= free and len(choice.gpus) >= request.count
    assert request.min_bandwidth is None or choice.bandwidth_gbps >= request.min_bandwidth
    assert request.max_latency is None or choice.latency_ms <= request.max_latency
    assert not request.partition_ids or choice.partition.id in request.partition_ids


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_planner_is_deterministic(scenario: tuple[str, frozenset[int], PartitionRequest], rnd) -> None:  # type: ignore[no-untyped-def]
    """The same question, however the free GPUs are ordered, gets the same answer."""
    name, free, request = scenario
    topology, catalog = board(name)
    shuffled = list(free)
    rnd.shuffle(shuffled)
    assert plan_partition(topology, free, request, catalog=catalog) == plan_partition(
        topology, shuffled, request, catalog=catalog
    )


def test_planner_keeps_big_blocks_whole() -> None:
    """With modules 1-3 taken on a dgx-h100, a 1-GPU request lands on module 4, not in the untouched half."""
    topology, catalog = board("dgx-h100")
    choice = plan_partition(topology, {3, 4, 5, 6, 7}, PartitionRequest(count=1), catalog=catalog)
    assert choice is not None and choice.gpus == (3,)


def test_planner_prefers_the_smallest_partition_that_fits() -> None:
    """Three GPUs on an idle dgx-h100 get a 4-GPU partition, the lowest id (modules 1-4)."""
    topology, catalog = board("dgx-h100")
    choice = plan_partition(topology, set(topology.indices), PartitionRequest(count=3), catalog=catalog)
    assert choice is not None and choice.partition.id == 1 and choice.gpus == (0, 1, 2)


@pytest.mark.parametrize("model", [VirtualizationModel.SHARED_NVSWITCH, VirtualizationModel.FULL_PASSTHROUGH])
def test_whole_partition_models_need_every_gpu_free(model: VirtualizationModel) -> None:
    """Under Shared NVSwitch and passthrough a partition with one busy GPU is not offered."""
    topology, catalog = board("dgx-h100")
    free = set(topology.indices) - {0}
    choice = plan_partition(topology, free, PartitionRequest(count=3, model=model), catalog=catalog)
    assert choice is not None and choice.partition.id == 2


def test_full_passthrough_bandwidth_is_reduced_on_a100() -> None:
    """A 4-GPU A100 passthrough VM gets 6 of 12 links (300 GB/s): minBandwidth 600 needs the 8-GPU VM."""
    topology, catalog = board("dgx-a100")
    request = PartitionRequest(count=4, min_bandwidth=600, model=VirtualizationModel.FULL_PASSTHROUGH)
    choice = plan_partition(topology, set(topology.indices), request, catalog=catalog)
    assert choice is not None and choice.partition.size == 8
    assert (
        plan_partition(topology, set(topology.indices), attrs.evolve(request, size=4), catalog=catalog)
        is None
    )
    relaxed = PartitionRequest(count=4, min_bandwidth=300, model=VirtualizationModel.FULL_PASSTHROUGH)
    choice = plan_partition(topology, set(topology.indices), relaxed, catalog=catalog)
    assert choice is not None and choice.bandwidth_gbps == 300
