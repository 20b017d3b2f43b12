"""One partition table: what is published comes from Fabric Manager's live listing (the one prepare
activates from); the board table stands in only without FM, and then the slice and the log say so.
Activation retries transient failures with back-off and leaves nothing half-active."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
import yaml

from nvdra.core.errors import ClaimError
from nvdra.fabric import (
    FabricMode,
    FmGpuInfo,
    FmInUse,
    FmPartitionInfo,
    PartitionCatalog,
    SimulatedFabricManager,
    Topology,
)
from nvdra.fabric.catalog import cross_check
from nvdra.fabric.manager import FmConnectionNotValid, FmNvlinkError, FmTimeout
from nvdra.plugins.gpu.fabric import (
    FabricExecutor,
    FabricManagerWatch,
    FabricPartition,
    NodeFabric,
    fabric_attributes,
    fabric_manager_watch,
)
from nvdra.plugins.gpu.fabric.partitions import partition_devices
from tests.fabric.conftest import profile_inventory, profile_topology

H100 = "dgx-h100"


def gpus(modules: Sequence[int], links: int = 18, rate: int = 26_562) -> tuple[FmGpuInfo, ...]:
    """FM's per-GPU records for these modules."""
    return tuple(
        FmGpuInfo(physical_id=m, num_nvlinks_available=links, max_num_nvlinks=18, nvlink_line_rate_mbps=rate)
        for m in modules
    )


def custom_fm(mode: FabricMode = FabricMode.SHARED_NVSWITCH) -> SimulatedFabricManager:
    """An FM whose live listing is not the default table: ids 40/41 for the halves, 50 for a pair."""
    listing = (
        FmPartitionInfo(partition_id=40, is_active=False, gpus=gpus(range(1, 5))),
        FmPartitionInfo(partition_id=41, is_active=False, gpus=gpus(range(5, 9))),
        FmPartitionInfo(partition_id=50, is_active=False, gpus=gpus((1, 2), links=12)),
    )
    return SimulatedFabricManager(listing, mode=mode)


def test_published_partitions_are_fms_live_listing() -> None:
    """partition4 names FM's ids, bandwidth uses FM's link count, and the source says fabric-manager."""
    node = NodeFabric.build(profile_inventory(H100), custom_fm())
    attributes = fabric_attributes(profile_inventory(H100), node)
    gpu0, gpu5 = attributes["gpu-0"], attributes["gpu-5"]
    assert (gpu0["partition4"], gpu5["partition4"]) == ({"int": 40}, {"int": 41})
    assert gpu0["partition2"] == {"int": 50} and gpu0["partition2Bandwidth"] == {"int": 12 * 50}
    assert "partition8" not in gpu0 and "partition2" not in gpu5
    assert gpu0["fabricPartitionSource"] == {"string": "fabric-manager"}
    assert gpu0["fabricManagerMode"] == {"string": "shared-nvswitch"}
    assert "partition4PassthroughBandwidth" not in gpu0  # no FullPassthrough where FM runs on the host


def test_without_fm_the_board_table_stands_in_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """FM configured in Shared NVSwitch mode but unreachable: the mode is still published, the table is
    the board's, the source attribute names it, and a warning says why."""
    with caplog.at_level(logging.WARNING):
        node = NodeFabric.build(
            profile_inventory(H100),
            None,
            fm_problem="FM_ST_CONNECTION_NOT_VALID",
            configured_mode=FabricMode(1),
        )
    attributes = fabric_attributes(profile_inventory(H100), node)["gpu-0"]
    assert attributes["fabricPartitionSource"] == {"string": "hgx-h100"}
    assert attributes["fabricManagerMode"] == {"string": "shared-nvswitch"}
    assert (
        "cannot be reached (FM_ST_CONNECTION_NOT_VALID); publishing the board's hgx-h100 partition table"
        in caplog.text
    )


def test_fm_and_nvml_disagreements_are_named() -> None:
    """More links than NVML sees active, another line rate, or an unknown module: one line each."""
    topology = profile_topology(H100)
    lines = cross_check(topology, [(1, (1, 2, 3, 4), 20, 26_562), (2, (5, 6), 18, 53_125), (3, (9,), 0, 0)])
    assert any("lists 20 NVLinks for module 1 (gpu-0), NVML reports 18 active" in x for x in lines)
    assert any("line rate for module 5 is 53125 MB/s" in x and "26562 MB/s" in x for x in lines)
    assert any("modules [9] are not GPUs NVML reports" in x for x in lines)
    assert cross_check(topology, [(1, (1, 2, 3, 4), 18, 26_562)]) == []


def test_bandwidth_is_capped_by_the_links_nvml_reports_active() -> None:
    """A GPU with links down: its partitions' bandwidth uses what is up, whatever the table says."""
    inventory = profile_inventory(H100)
    degraded = inventory.gpus[0]
    gpu0 = attrs.evolve(degraded, nvlinks=degraded.nvlinks[:10])
    catalog = PartitionCatalog.for_topology(Topology.from_gpus([gpu0, *inventory.gpus[1:]]))
    first, second = catalog.get(1), catalog.get(2)
    assert first is not None and second is not None
    assert (first.bandwidth_gbps, second.bandwidth_gbps) == (10 * 50, 18 * 50)


class Flaky:
    """An FM whose first ``failures`` activations fail; ``leave_active`` makes a failure leave it on."""

    def __init__(self, fm: SimulatedFabricManager, failures: int, error: type[Exception], leave_active: bool):
        self.fm, self.failures, self.error, self.leave_active = fm, failures, error, leave_active
        self.attempts = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.fm, name)

    def activate(self, partition_id: int) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            if self.leave_active:
                self.fm.activate(partition_id)
            raise self.error(f"activating partition {partition_id}: simulated failure")
        self.fm.activate(partition_id)


RECORD = FabricPartition(
    claim="uid-1",
    partition_id=1,
    size=4,
    module_ids=(),
    devices=(),
    model="SharedNVSwitch",
    activate=True,
    bandwidth_gbps=900,
)


def base_fm() -> SimulatedFabricManager:
    return SimulatedFabricManager.for_topology(profile_topology(H100), mode=FabricMode.SHARED_NVSWITCH)


def test_transient_activation_failures_are_retried_with_back_off() -> None:
    """Two timeouts, then success: waits 0.25 s then 0.5 s, and the partition is active once."""
    fm = Flaky(base_fm(), failures=2, error=FmTimeout, leave_active=False)
    waits: list[float] = []
    executor = FabricExecutor(fm, sleep=waits.append)  # type: ignore[arg-type]
    executor.apply(RECORD)
    assert waits == [0.25, 0.5] and fm.attempts == 3
    assert fm.fm.active_ids() == {1}


def test_giving_up_leaves_nothing_half_active() -> None:
    """A failure that left the partition on is undone each time; after the last attempt nothing is active."""
    fm = Flaky(base_fm(), failures=99, error=FmNvlinkError, leave_active=True)
    executor = FabricExecutor(fm, attempts=3, sleep=lambda _: None)  # type: ignore[arg-type]
    with pytest.raises(ClaimError, match=r"did not activate partition 1 after 3 attempts.*FM_ST|simulated"):
        executor.apply(RECORD)
    assert fm.fm.active_ids() == frozenset() and fm.attempts == 3


def test_a_partition_in_use_is_not_retried() -> None:
    """IN_USE is permanent (another tenant holds the GPUs): no retry, no sleep."""
    fm = Flaky(base_fm(), failures=99, error=FmInUse, leave_active=False)
    waits: list[float] = []
    executor = FabricExecutor(fm, sleep=waits.append)  # type: ignore[arg-type]
    with pytest.raises(FmInUse):
        executor.apply(RECORD)
    assert waits == [] and fm.attempts == 1


def test_partition_devices_follow_the_live_listing() -> None:
    """--publish-fabric-partitions devices are FM's partitions too (ids 40, 41, 50), not the board's."""
    node = NodeFabric.build(profile_inventory(H100), custom_fm())
    names = sorted(partition_devices(profile_inventory(H100), node.catalog))
    assert names == ["partition-2-50", "partition-4-40", "partition-4-41"]


def test_devices_share_no_attribute_values() -> None:
    """Each device gets its own value dicts: YAML output has no anchors, and editing one edits no other."""
    attributes = fabric_attributes(profile_inventory(H100), NodeFabric.build(profile_inventory(H100), None))
    assert "&id" not in yaml.safe_dump(attributes)
    attributes["gpu-0"]["partition8"]["int"] = -1
    assert attributes["gpu-1"]["partition8"] == {"int": 0}


def test_a_watch_serves_again_once_fabric_manager_answers() -> None:
    """While the board table stands in, FM is retried; the first answer calls on_answer once."""
    attempts: list[int] = []
    answered = threading.Event()

    def connect() -> SimulatedFabricManager:
        attempts.append(1)
        if len(attempts) < 3:
            raise FmConnectionNotValid("connecting to /run/nvidia-fabricmanager/socket: not listening")
        return base_fm()

    watch = FabricManagerWatch(connect, answered.set, interval=0.01).start()
    try:
        assert answered.wait(5)
    finally:
        watch.stop()
    assert len(attempts) == 3


def test_the_watch_runs_only_for_a_board_table_fallback(tmp_path: Path) -> None:
    """No watch with a connected FM, on a simulated node, or where no multitenancy mode is configured."""
    inventory = profile_inventory(H100)

    def watch(node: NodeFabric, simulate: str = "") -> FabricManagerWatch | None:
        return fabric_manager_watch(
            node, simulate=simulate, driver_root=tmp_path, env={}, on_answer=lambda: None
        )

    fallback = NodeFabric.build(inventory, None, configured_mode=FabricMode.SHARED_NVSWITCH)
    assert isinstance(watch(fallback), FabricManagerWatch)
    assert watch(fallback, simulate="dgx-h100") is None
    assert watch(NodeFabric.build(inventory, base_fm())) is None
    assert watch(NodeFabric.build(inventory, None, configured_mode=FabricMode.BARE_METAL)) is None
