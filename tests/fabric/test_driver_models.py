"""The GPU driver with fabricTopologyConfig on a simulated dgx-h100, per virtualization model.

Real objects throughout: the simulated NVML inventory, the simulated Fabric Manager (its state outlives
driver objects, as the daemon outlives a plugin restart), real CDI specs and checkpoint files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.alloc import Allocator, builtin_device_classes
from nvdra.core.checkpoint import PreparedClaim
from nvdra.core.featuregates import parse_feature_gates
from nvdra.fabric import FabricMode, SimulatedFabricManager, Topology
from nvdra.nvml import load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import Effects
from nvdra.plugins.gpu.fabric import ACTIVATE_KIND, fabric_effects
from tests.fabric.conftest import profile_inventory
from tests.plugins.conftest import (
    DriverNode,
    allocated_claim,
    gpu_config,
    on_disk,
    opaque,
    prepare_one,
    ref_of,
    result,
    spec_files,
    uid_of,
)
from tests.readme_examples import readme_fabric_topology

GATES = "FabricTopologySupport=true"
README_FABRIC = readme_fabric_topology()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DriverNode]:
    """A fresh simulated dgx-h100 node."""
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "driver-root")
    made = DriverNode(tmp_path / "node", profile_inventory("dgx-h100"), root)
    yield made
    made.close()


def make_fm(mode: FabricMode = FabricMode.SHARED_NVSWITCH) -> SimulatedFabricManager:
    """A simulated FM on the dgx-h100 board."""
    return SimulatedFabricManager.for_topology(
        Topology.from_inventory(profile_inventory("dgx-h100")), mode=mode
    )


def driver(node: DriverNode, fm: SimulatedFabricManager | None) -> GpuDriver:
    """A started driver (as after a process start) with the fabric planner and executor of this node."""
    planners, executors = fabric_effects(
        parse_feature_gates(GATES), node.inventory, fm=fm, checkpoint=on_disk(node)
    )
    return node.driver(gates=GATES, effects=Effects(planners, executors))


def claim(gpus: list[int], **fabric: Any) -> dict[str, Any]:
    """A claim for gpu-<i> with a GpuConfig carrying ``fabric`` as its fabricTopologyConfig."""
    return allocated_claim(
        [result(f"gpu-{i}", request="gpus") for i in gpus],
        config=[opaque(gpu_config(fabricTopologyConfig=fabric), requests=["gpus"])],
    )


def assert_untouched(node: DriverNode) -> None:
    """No spec and no checkpoint entry: a refused claim changed nothing."""
    assert spec_files(node.cdi_root) == []
    assert on_disk(node).claims == {}


# -- BareMetal --------------------------------------------------------------------------------------


def test_readme_example_prepares_on_modules_1_to_4(node: DriverNode) -> None:
    """The README's config prepares gpu-0..3 (FM partition 1); the spec tells the workload its partition."""
    c = claim([0, 1, 2, 3], **README_FABRIC)
    answer = prepare_one(driver(node, None), c)
    assert answer.error == ""
    spec = node.spec_path(uid_of(c)).read_text()
    assert "NVDRA_FABRIC_PARTITION_ID=1" in spec and "NVDRA_FABRIC_VIRTUALIZATION_MODEL=BareMetal" in spec
    [record] = on_disk(node).claims[uid_of(c)].applied
    assert (record["kind"], record["partitionId"], record["activate"]) == (ACTIVATE_KIND, 1, False)


def test_readme_example_is_refused_on_modules_1_2_5_6(node: DriverNode) -> None:
    """Modules 1, 2, 5, 6 are no partition: the error names the GPUs, the expected one, the bandwidth."""
    answer = prepare_one(driver(node, None), claim([0, 1, 4, 5], **README_FABRIC))
    assert "gpu-0 (module 1), gpu-1 (module 2), gpu-4 (module 5), gpu-5 (module 6)" in answer.error
    assert "partition-1 = gpu-0, gpu-1, gpu-2, gpu-3" in answer.error
    assert "900 GB/s" in answer.error
    assert_untouched(node)


def test_legacy_partition_id_means_manual(node: DriverNode) -> None:
    """fabricPartitionID "3" accepts FM's pair (modules 1, 3) and refuses the adjacent pair."""
    legacy = [opaque(gpu_config(fabricPartitionID="3"), requests=["gpus"])]
    d = driver(node, None)
    ok = allocated_claim([result("gpu-0", request="gpus"), result("gpu-2", request="gpus")], config=legacy)
    assert prepare_one(d, ok).error == ""
    bad = allocated_claim([result("gpu-4", request="gpus"), result("gpu-5", request="gpus")], config=legacy)
    assert "Manual" in prepare_one(d, bad).error


@pytest.mark.parametrize(
    ("gpus", "fabric", "field"),
    [
        ([0, 1, 2, 3], {"partitionIDs": ["partition-99"]}, "partitionIDs"),
        ([0, 1, 2], {}, "partitionSize"),
        ([0, 1, 2, 3], {"virtualizationModel": "SharedNVSwitch"}, "virtualizationModel"),
        ([0, 1, 2, 3], {"virtualizationModel": "FullPassthrough"}, "virtualizationModel"),
    ],
)
def test_refusals_name_the_field(
    node: DriverNode, gpus: list[int], fabric: dict[str, Any], field: str
) -> None:
    """Unknown ids, a size the node lacks, a model its FM mode does not run: refused naming the field."""
    answer = prepare_one(driver(node, None), claim(gpus, **fabric))
    assert f"fabricTopologyConfig.{field}" in answer.error
    assert_untouched(node)


@pytest.mark.parametrize(
    ("fabric", "needle"), [({"minBandwidth": 1000}, "900 GB/s"), ({"maxLatency": 0.001}, "0.0025")]
)
def test_bounds_are_enforced(node: DriverNode, fabric: dict[str, Any], needle: str) -> None:
    """A bandwidth or latency bound the partition misses refuses the claim, quoting what was found."""
    answer = prepare_one(driver(node, None), claim([0, 1, 2, 3], **fabric))
    assert needle in answer.error
    assert_untouched(node)


def test_vgpu_and_disabled_skip_fabric_logic(node: DriverNode) -> None:
    """Under VGPU or Disabled any GPUs prepare: fabric logic is off."""
    d = driver(node, None)
    assert prepare_one(d, claim([0, 5], virtualizationModel="VGPU")).error == ""
    assert prepare_one(d, claim([1, 6], strategy="Disabled")).error == ""


# -- SharedNVSwitch ---------------------------------------------------------------------------------


def test_shared_nvswitch_activates_exactly_the_partition_and_deactivates_it(node: DriverNode) -> None:
    """Prepare activates the partition holding the GPUs (and only it); unprepare deactivates it."""
    fm = make_fm()
    d = driver(node, fm)
    c = claim([4, 5, 6, 7], virtualizationModel="SharedNVSwitch")
    assert prepare_one(d, c).error == ""
    assert fm.active_ids() == {2}
    assert prepare_one(d, c).error == ""  # repeated: the stored answer, no second activation
    assert fm.active_ids() == {2}
    assert d.unprepare_resource_claims([ref_of(c)]) == {uid_of(c): ""}
    assert fm.active_ids() == frozenset()


def test_overlapping_activation_fails_the_claim_cleanly(node: DriverNode) -> None:
    """With partition 0 active (an operator's), a claim for partition 1 fails and changes nothing."""
    fm = make_fm()
    fm.activate(0)
    answer = prepare_one(driver(node, fm), claim([0, 1, 2, 3], virtualizationModel="SharedNVSwitch"))
    assert "FM_ST_IN_USE" in answer.error
    assert fm.active_ids() == {0}
    assert_untouched(node)


def test_kill_and_restart_keeps_fm_and_checkpoint_consistent(node: DriverNode) -> None:
    """A plugin restart (and an FM --restart) keeps the partition; the new plugin's unprepare ends it."""
    fm = make_fm()
    c = claim([0, 2], virtualizationModel="SharedNVSwitch")
    assert prepare_one(driver(node, fm), c).error == ""
    fm.restart(resilient=True)  # FM restarts too, and waits for the live list
    restarted = driver(node, fm)
    assert fm.active_ids() == {3} and fm.partitions()[3].is_active
    assert on_disk(node).claims[uid_of(c)].state == "PrepareCompleted"
    assert restarted.unprepare_resource_claims([ref_of(c)]) == {uid_of(c): ""}
    assert fm.active_ids() == frozenset() and on_disk(node).claims == {}


def test_fm_restart_while_running_is_handed_the_live_list(node: DriverNode) -> None:
    """If FM restarts under a running plugin, the next activation re-asserts the live list first."""
    fm = make_fm()
    d = driver(node, fm)
    assert prepare_one(d, claim([0, 1, 2, 3], virtualizationModel="SharedNVSwitch")).error == ""
    fm.restart(resilient=True)
    assert prepare_one(d, claim([4, 5, 6, 7], virtualizationModel="SharedNVSwitch")).error == ""
    assert fm.active_ids() == {1, 2}


def test_half_done_prepare_is_rolled_back_at_start(node: DriverNode) -> None:
    """A PrepareStarted entry whose partition was activated is deactivated when the plugin starts."""
    fm = make_fm()
    fm.activate(4)
    record = {
        "kind": ACTIVATE_KIND,
        "claim": "u1",
        "partitionId": 4,
        "size": 2,
        "moduleIds": [2, 4],
        "devices": ["gpu-1", "gpu-3"],
        "model": "SharedNVSwitch",
        "activate": True,
        "bandwidthGBps": 900,
    }
    entry = PreparedClaim(uid="u1", namespace="default", name="c", state="PrepareStarted", applied=(record,))
    node.store().save(on_disk(node).with_claim(entry))
    driver(node, fm)
    assert fm.active_ids() == frozenset()
    assert on_disk(node).claims == {}


def test_shared_nvswitch_without_fm_is_refused(node: DriverNode) -> None:
    """A node whose FM runs in bare-metal mode refuses SharedNVSwitch, naming the mode."""
    answer = prepare_one(
        driver(node, make_fm(FabricMode.BARE_METAL)), claim([0, 2], virtualizationModel="SharedNVSwitch")
    )
    assert "FABRIC_MODE=0" in answer.error


def test_the_translated_readme_example_is_prepared_whichever_gpus_are_taken(node: DriverNode) -> None:
    """demo/specs/quickstart/gpu-claim-with-fabric.yaml as shipped, through the allocator and the driver:
    with gpu-4..7 held it gets gpu-0..3 and prepares; with gpu-0..3 held it waits (no allocation) instead
    of getting gpu-4..7 and failing prepare forever (the issue's failure)."""
    spec = Path(__file__).parents[2] / "demo" / "specs" / "quickstart" / "gpu-claim-with-fabric.yaml"
    (readme,) = [d for d in yaml.safe_load_all(spec.read_text()) if d and d["kind"] == "ResourceClaim"]
    gates = f"{GATES},TimeSlicingSettings=true"  # the example time-slices its GPUs too
    planners, executors = fabric_effects(parse_feature_gates(gates), node.inventory, fm=None)
    d = node.driver(gates=gates, effects=Effects(planners, executors))
    slices = [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{name}-{i}"},
            "spec": {
                "driver": "gpu.nvidia.com",
                "nodeName": node.node_name,
                "pool": {"name": name, "generation": 1, "resourceSliceCount": len(pool.slices)},
                "devices": list(content.devices),
            },
        }
        for name, pool in d.resources().pools.items()
        for i, content in enumerate(pool.slices)
    ]

    def allocate(held: list[int]) -> dict[str, Any] | None:
        taken = [("gpu.nvidia.com", node.node_name, f"gpu-{i}") for i in held]
        classes = builtin_device_classes()
        outcome = Allocator(slices, classes, node_name=node.node_name, allocated=taken).allocate([readme])
        return outcome.allocations[0] if outcome.allocations else None

    other = allocated_claim([result(f"gpu-{i}", request="gpus") for i in range(4, 8)])
    assert prepare_one(d, other).error == ""
    allocation = allocate([4, 5, 6, 7])
    assert allocation is not None
    assert [r["device"] for r in allocation["devices"]["results"]] == [f"gpu-{i}" for i in range(4)]
    claim_obj = {
        **readme,
        "metadata": {**readme["metadata"], "uid": "readme-uid"},
        "status": {"allocation": allocation},
    }
    answer = prepare_one(d, claim_obj)
    assert answer.error == ""
    assert "NVDRA_FABRIC_PARTITION_ID=1" in node.spec_path("readme-uid").read_text()
    assert allocate([0, 1, 2, 3]) is None
