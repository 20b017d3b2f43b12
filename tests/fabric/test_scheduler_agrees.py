"""The scheduler and prepare agree: a claim written from the README example is allocated by the allocator
(nvdra.alloc, Kubernetes' structured-parameters allocation with its CEL) only to devices that the fabric
planner accepts at prepare, whichever partitions are taken, for every virtualization model on dgx-h100,
hgx-h200 and gb200-nvl72-tray; and when the allocator finds nothing, no partition could have served it.

The claim's selectors and constraint are the ones :func:`nvdra.fabric.requirements.fix_claim` adds to the
README example; the node publishes what the running plugin publishes (FM's live table and mode).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from nvdra.alloc import Allocator, DeviceId, builtin_device_classes
from nvdra.core.config import AllocatedDevice, DeviceType, VirtualizationModel, resolve_configs
from nvdra.core.errors import UserError
from nvdra.core.featuregates import parse_feature_gates
from nvdra.fabric import (
    POLICIES,
    FabricMode,
    PartitionRequest,
    SimulatedFabricManager,
    Topology,
    detect_board,
    plan_partition,
)
from nvdra.fabric.requirements import demand_problems, fix_claim
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.gpu.devices import allocatable_devices
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import ClaimContext
from nvdra.plugins.gpu.fabric import FabricPlanner, NodeFabric
from tests.fabric.conftest import profile_inventory

DRIVER = "gpu.nvidia.com"
NODE = "node-a"
GATES = parse_feature_gates("FabricTopologySupport=true,PassthroughSupport=true")
BOARDS = ("dgx-h100", "hgx-h200", "gb200-nvl72-tray")
CLASSES = builtin_device_classes()


def node_fabric(profile: str, mode: FabricMode | None) -> NodeFabric:
    """The plugin's view of a simulated node whose Fabric Manager runs in ``mode`` (None: none)."""
    inventory = profile_inventory(profile)
    topology = Topology.from_inventory(inventory)
    fm = None if mode is None else SimulatedFabricManager.for_topology(topology, mode=mode)
    return NodeFabric.build(inventory, fm)


def serving_mode(profile: str, model: VirtualizationModel) -> FabricMode | str | None:
    """A node mode that serves ``model`` on this board, or ``"none"`` when the board has none."""
    has_fm = detect_board(Topology.from_inventory(profile_inventory(profile))) is not None
    wanted = {
        VirtualizationModel.BARE_METAL: FabricMode.BARE_METAL if has_fm else None,
        VirtualizationModel.FULL_PASSTHROUGH: None,
        VirtualizationModel.SHARED_NVSWITCH: FabricMode.SHARED_NVSWITCH if has_fm else "none",
        VirtualizationModel.VGPU: FabricMode.VGPU if has_fm else "none",
    }
    return wanted[model]


def slices(profile: str, node: NodeFabric) -> list[dict[str, Any]]:
    """The node's ResourceSlices as the plugin publishes them."""
    resources = GpuDriver.resources_for(profile_inventory(profile), node_name=NODE, gates=GATES, fabric=node)
    out = []
    for pool_name, pool in resources.pools.items():
        for i, content in enumerate(pool.slices):
            out.append(
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceSlice",
                    "metadata": {"name": f"{NODE}-{i}"},
                    "spec": {
                        "driver": DRIVER,
                        "nodeName": NODE,
                        "pool": {"name": pool_name, "generation": 1, "resourceSliceCount": len(pool.slices)},
                        "devices": list(content.devices),
                    },
                }
            )
    return out


def readme_claim(count: int, **fabric: Any) -> dict[str, Any]:
    """The README example's claim: ``count`` GPUs of gpu.nvidia.com with a GpuConfig carrying ``fabric``."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "gpu-claim-with-fabric", "namespace": "default", "uid": "uid-1"},
        "spec": {
            "devices": {
                "requests": [{"name": "gpus", "exactly": {"deviceClassName": DRIVER, "count": count}}],
                "config": [
                    {
                        "requests": ["gpus"],
                        "opaque": {
                            "driver": DRIVER,
                            "parameters": {
                                "apiVersion": "resource.nvidia.com/v1beta1",
                                "kind": "GpuConfig",
                                "fabricTopologyConfig": fabric,
                            },
                        },
                    }
                ],
            }
        },
    }


def allocate(claim: Mapping[str, Any], published: list[dict[str, Any]], taken: set[str]) -> list[str] | None:
    """The devices the allocator gives ``claim`` (None: unallocatable) with ``taken`` GPUs held."""
    held: list[DeviceId] = [(DRIVER, NODE, name) for name in taken]
    outcome = Allocator(published, CLASSES, node_name=NODE, allocated=held).allocate([claim])
    assert not outcome.error, outcome.error
    if outcome.allocations is None:
        return None
    return [r["device"] for r in outcome.allocations[0]["devices"]["results"]]


def prepare_check(profile: str, node: NodeFabric, claim: Mapping[str, Any], devices: list[str]) -> None:
    """What prepare's fabric planner does with this allocation (raises its refusal)."""
    FabricPlanner(node, passthrough=True).plan(claim_context(profile, claim, devices))


def claim_context(profile: str, claim: Mapping[str, Any], devices: list[str]) -> ClaimContext:
    """What a planner sees of ``claim`` allocated ``devices`` (all from request ``gpus``)."""
    known = allocatable_devices(profile_inventory(profile), GATES)
    allocated = tuple(known[name] for name in devices)
    config = [{"source": "FromClaim", **c} for c in claim["spec"]["devices"]["config"]]
    groups = resolve_configs(
        config,
        [
            AllocatedDevice(request="gpus", device=d.name, device_type=DeviceType(d.config_type))
            for d in allocated
        ],
        driver=DRIVER,
        gates=GATES,
    )
    results = tuple({"request": "gpus", "driver": DRIVER, "pool": NODE, "device": d} for d in devices)
    ref = ClaimRef(uid="uid-1", namespace="default", name="c")
    return ClaimContext(ref=ref, devices=allocated, groups=groups, results=results)


def choices(node: NodeFabric, model: VirtualizationModel) -> Iterator[tuple[int, dict[str, Any]]]:
    """(count, fabricTopologyConfig) for every partition size and every single partition id of it."""
    for size in (s for s in node.catalog.sizes if s >= 2):
        ids: list[list[str] | None] = [None, *[[p.label] for p in node.catalog.of_size(size)]]
        for chosen in ids:
            fabric: dict[str, Any] = {
                "strategy": "Auto",
                "partitionSize": size,
                "virtualizationModel": str(model),
                "maxLatency": 0.1,
            }
            if chosen is not None:
                fabric["partitionIDs"] = chosen
            bandwidth = min(
                POLICIES[model].bandwidth_gbps(p, node.topology) for p in node.catalog.of_size(size)
            )
            if bandwidth:
                fabric["minBandwidth"] = float(bandwidth)
            yield size, fabric


ACTIVE_MODELS = (
    VirtualizationModel.BARE_METAL,
    VirtualizationModel.FULL_PASSTHROUGH,
    VirtualizationModel.SHARED_NVSWITCH,
)


@pytest.mark.parametrize("model", ACTIVE_MODELS, ids=str)
@pytest.mark.parametrize("profile", BOARDS)
def test_allocations_are_prepared_whichever_partitions_are_taken(
    profile: str, model: VirtualizationModel
) -> None:
    """Every size x id choice x taken partition: allocated => prepared; unallocated => nothing fits."""
    mode = serving_mode(profile, model)
    if mode == "none":  # no node of this board serves the model: the scheduler never allocates there
        node = node_fabric(profile, None)
        published = slices(profile, node)
        for count, fabric in choices(node, model):
            assert allocate(fix_claim(readme_claim(count, **fabric))[0], published, set()) is None
        return
    assert not isinstance(mode, str)
    node = node_fabric(profile, mode)
    published = slices(profile, node)
    names = {g.index: g.name for g in node.topology.gpus}
    taken_sets = [set[str](), *({names[i] for i in p.gpus} for p in node.catalog.partitions)]
    checked = allocated = 0
    for count, fabric in choices(node, model):
        claim, _ = fix_claim(readme_claim(count, **fabric))
        assert demand_problems(claim) == []
        ids = tuple(int(x.removeprefix("partition-")) for x in fabric.get("partitionIDs", ()))
        request = PartitionRequest(
            count=count,
            size=count,
            min_bandwidth=fabric.get("minBandwidth"),
            max_latency=fabric["maxLatency"],
            partition_ids=ids or None,
            model=model,
        )
        for taken in taken_sets:
            got = allocate(claim, published, taken)
            free = {i for i, n in names.items() if n not in taken}
            expected = plan_partition(node.topology, free, request, catalog=node.catalog)
            checked += 1
            if got is None:
                assert expected is None, (fabric, taken, expected)
                continue
            allocated += 1
            assert expected is not None, (fabric, taken, got)
            prepare_check(profile, node, claim, got)  # raises if prepare would refuse
    assert allocated > 0 and checked > allocated  # both branches were exercised


@pytest.mark.parametrize("profile", BOARDS)
def test_a_claim_lands_only_on_nodes_whose_fabric_manager_serves_its_model(profile: str) -> None:
    """fabricManagerMode keeps a model off nodes that cannot serve it (the dgx-h100 FABRIC_MODE=0 case)."""
    has_fm = detect_board(Topology.from_inventory(profile_inventory(profile))) is not None
    modes: list[FabricMode | None] = [None, *(FabricMode if has_fm else ())]
    for mode in modes:
        node = node_fabric(profile, mode)
        published = slices(profile, node)
        for model in ACTIVE_MODELS:
            claim, _ = fix_claim(readme_claim(2, partitionSize=2, virtualizationModel=str(model)))
            got = allocate(claim, published, set())
            assert (got is not None) == POLICIES[model].allows(mode), (mode, model, got)
            if got is not None:
                prepare_check(profile, node, claim, got)


def test_the_unfixed_readme_claim_is_allocated_where_prepare_refuses() -> None:
    """Without the selectors the issue's failure is real: gpu-0..3 taken, the claim gets gpu-4..7."""
    node = node_fabric("dgx-h100", FabricMode.BARE_METAL)
    claim = readme_claim(4, partitionSize=4, minBandwidth=600.0, maxLatency=0.1, partitionIDs=["partition-1"])
    claim["spec"]["devices"]["constraints"] = [
        {"requests": ["gpus"], "matchAttribute": f"{DRIVER}/partition4"}
    ]
    taken = {f"gpu-{i}" for i in range(4)}
    got = allocate(claim, slices("dgx-h100", node), taken)
    assert got == [f"gpu-{i}" for i in range(4, 8)]
    with pytest.raises(UserError, match=r"partition4 in \[1\].*validate --fix"):
        prepare_check("dgx-h100", node, claim, got)
    fixed, changes = fix_claim(claim)
    assert any("partitionIDs" in c for c in changes)
    assert allocate(fixed, slices("dgx-h100", node), taken) is None  # waits for partition-1 instead


@pytest.mark.parametrize("profile", BOARDS)
def test_vgpu_claims_need_no_fabric_selector(profile: str) -> None:
    """Under VGPU fabric logic is off (the README's rule): nothing is demanded, any allocation prepares."""
    mode = serving_mode(profile, VirtualizationModel.VGPU)
    node = node_fabric(profile, None if isinstance(mode, str) else mode)
    claim = readme_claim(2, virtualizationModel="VGPU")
    assert fix_claim(claim) == (claim, [])
    got = allocate(claim, slices(profile, node), set())
    assert got is not None and len(got) == 2
    prepare_check(profile, node, copy.deepcopy(claim), got)
