"""NVLink partitions published as devices (``--publish-fabric-partitions``): layout, scheduling, prepare.

Real objects throughout: simulated inventories, ``FakeKube`` (the API's slice rules), the ``nvdra.alloc``
allocator (the scheduler's rules, counters included), the GPU driver with real CDI specs and checkpoint
files, and the simulated Fabric Manager of a Shared NVSwitch board.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdra.alloc import Allocator, builtin_device_classes
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import parse_feature_gates
from nvdra.fabric import FabricMode, SimulatedFabricManager, Topology
from nvdra.kubeletplugin import FakeKube
from nvdra.nvml import load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import Effects
from nvdra.plugins.gpu.fabric import ACTIVATE_KIND, fabric_effects
from nvdra.plugins.gpu.main import main as plugin_main
from nvdra.tool.cli import main as cli_main
from nvdra.tool.devices import driver_resources, slice_objects
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

GATES = "FabricTopologySupport=true"
DRIVER = "gpu.nvidia.com"
NODE = "n1"


def published(
    profile: str = "dgx-h100", gates: str = GATES, *, partitions: bool = True
) -> list[dict[str, Any]]:
    """The ResourceSlice objects a node of ``profile`` publishes."""
    resources = driver_resources(
        profile_inventory(profile), NODE, parse_feature_gates(gates), fabric_partitions=partitions
    )
    return slice_objects(resources, driver=DRIVER, node_name=NODE)


def devices_of(slices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every published device, by name."""
    return {d["name"]: d for s in slices for d in s["spec"].get("devices", [])}


def members(device: dict[str, Any]) -> set[str]:
    """The GPUs (``gpu-<minor>``) a published device occupies."""
    attributes = device["attributes"]
    if attributes["type"]["string"] == "partition":
        return {f"gpu-{m}" for m in attributes["gpuMinors"]["string"].split(",")}
    return {device["name"]}


# -- off by default ---------------------------------------------------------------------------------


def test_off_by_default_only_gpus_are_published() -> None:
    """Without the flag (or without the gate) no partition device and no counter set is published."""
    for slices in (published(partitions=False), published(gates="", partitions=True)):
        assert all("sharedCounters" not in s["spec"] for s in slices)
        assert {d["attributes"]["type"]["string"] for d in devices_of(slices).values()} == {"gpu"}
    out = CliRunner().invoke(cli_main, ["devices", "--simulate", "dgx-h100", "--feature-gates", GATES])
    assert out.exit_code == 0, out.output
    assert "partition" not in out.output and out.output.count("gpu-") == 8


def test_plugin_flag_and_env_twin_default_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--publish-fabric-partitions`` is off unless given, or set by NVDRA_PUBLISH_FABRIC_PARTITIONS."""
    assert plugin_main.make_context("p", ["--node-name", "n"]).params["publish_fabric_partitions"] is False
    monkeypatch.setenv("NVDRA_PUBLISH_FABRIC_PARTITIONS", "true")
    assert plugin_main.make_context("p", ["--node-name", "n"]).params["publish_fabric_partitions"] is True


# -- layout -----------------------------------------------------------------------------------------


def test_dgx_h100_publishes_fm_partitions_that_the_api_accepts() -> None:
    """Counters alone in slice 0; GPUs consume their counter; partitions 1-4/5-8 and FM's pairs exist."""
    slices = published()
    kube = FakeKube()
    for body in slices:
        kube.create_resource_slice(body)  # the API server's slice rules
    assert len(kube.resource_slices()) == 2
    [counters] = slices[0]["spec"]["sharedCounters"]
    assert "devices" not in slices[0]["spec"] and counters["name"] == "nvlink-gpus"
    assert sorted(counters["counters"]) == [f"gpu-{i}" for i in range(8)]
    devices = devices_of(slices)
    assert devices["gpu-3"]["consumesCounters"] == [
        {"counterSet": "nvlink-gpus", "counters": {"gpu-3": {"value": "1"}}}
    ]
    modules = {
        name: d["attributes"]["gpuModuleIDs"]["string"]
        for name, d in devices.items()
        if d["attributes"]["type"]["string"] == "partition"
    }
    assert modules == {
        "partition-8-0": "1,2,3,4,5,6,7,8",
        "partition-4-1": "1,2,3,4",
        "partition-4-2": "5,6,7,8",
        "partition-2-3": "1,3",
        "partition-2-4": "2,4",
        "partition-2-5": "5,7",
        "partition-2-6": "6,8",
    }
    p = devices["partition-4-1"]
    assert sorted(p["consumesCounters"][0]["counters"]) == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    attributes = {k: next(iter(v.values())) for k, v in p["attributes"].items()}
    assert attributes["partitionSize"] == 4 and attributes["partitionID"] == 1
    assert attributes["nvlinkBandwidth"] == 900 and attributes["productName"] == "NVIDIA H100 80GB HBM3"
    assert "uuid" not in attributes
    assert p["capacity"]["memory"]["value"] == "326236Mi"  # 4 x 81559Mi


@pytest.mark.parametrize(
    "profile", ["dgx-h100", "hgx-h200", "dgx-a100", "pcie-a100-nvlink", "gb200-nvl72-tray"]
)
def test_every_board_stays_within_the_api_limits(profile: str) -> None:
    """<= 32 counters per set, <= 2 consumptions per device, and FakeKube accepts every slice."""
    slices = published(profile)
    kube = FakeKube()
    for body in slices:
        kube.create_resource_slice(body)
        assert not (body["spec"].get("devices") and body["spec"].get("sharedCounters"))
    for s in slices:
        assert all(len(c["counters"]) <= 32 for c in s["spec"].get("sharedCounters", []))
    assert all(len(d.get("consumesCounters", [])) <= 2 for d in devices_of(slices).values())


def test_dynamic_mig_with_the_flag_is_refused() -> None:
    """DynamicMIG and partition devices cannot share the per-GPU counters: refused, naming the flag."""
    with pytest.raises(ConfigError, match="--publish-fabric-partitions"):
        published(gates=f"{GATES},DynamicMIG=true")
    out = CliRunner().invoke(
        cli_main,
        [
            "devices",
            "--simulate",
            "dgx-h100",
            "--feature-gates",
            f"{GATES},DynamicMIG=true",
            "--fabric-partitions",
        ],
    )
    assert out.exit_code != 0 and "DynamicMIG" in out.output


def test_nvdra_devices_lists_partitions_when_asked() -> None:
    """``nvdra devices --fabric-partitions`` lists the 7 partition devices after the 8 GPUs."""
    out = CliRunner().invoke(
        cli_main, ["devices", "--simulate", "dgx-h100", "--feature-gates", GATES, "--fabric-partitions"]
    )
    assert out.exit_code == 0, out.output
    header, *rows = out.output.splitlines()
    column = header.split().index("DEVICE")
    names = [line.split()[column] for line in rows if line.strip()]
    assert names[:8] == [f"gpu-{i}" for i in range(8)] and len(names) == 15
    assert "partition-4-2" in names


# -- scheduling ---------------------------------------------------------------------------------------


def _request(kind: str, count: int) -> dict[str, Any]:
    if kind == "partition":
        sel = f"device.attributes['{DRIVER}'].partitionSize == {count}"
        body = {
            "deviceClassName": "partition.gpu.nvidia.com",
            "count": 1,
            "selectors": [{"cel": {"expression": sel}}],
        }
    else:
        body = {"deviceClassName": "gpu.nvidia.com", "count": count}
    return {"name": "r", "exactly": body}


def _claim(i: int, kind: str, count: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"c{i}", "namespace": "ns", "uid": f"u{i}"},
        "spec": {"devices": {"requests": [_request(kind, count)]}},
    }


def _schedule(stream: list[tuple[str, int]]) -> list[list[str]]:
    """Allocate the claims one after the other (each sees the earlier ones as in use)."""
    slices = published()
    held: set[tuple[str, str, str]] = set()
    out = []
    for i, (kind, count) in enumerate(stream):
        outcome = Allocator(slices, builtin_device_classes(), node_name=NODE, allocated=held).allocate(
            [_claim(i, kind, count)]
        )
        allocations = outcome.allocations if outcome.ok else None
        got = [r["device"] for r in allocations[0]["devices"]["results"]] if allocations else []
        held |= {(DRIVER, NODE, d) for d in got}
        out.append(got)
    return out


def test_scheduler_keeps_a_partition_and_its_gpus_apart() -> None:
    """After partition-4-1, GPUs come from modules 5-8; partitions overlapping held GPUs are not given."""
    got = _schedule([("partition", 4), ("gpu", 2), ("partition", 4), ("partition", 2), ("gpu", 1)])
    assert got[0] == ["partition-4-1"]
    assert got[1] == ["gpu-4", "gpu-5"]  # gpu-0..3 are the partition's
    assert got[2] == []  # partition-4-2 holds gpu-4 and gpu-5
    assert got[3] == []  # every free pair (modules 5,7 and 6,8) holds one of them too
    assert got[4] == ["gpu-6"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["gpu", "partition"]), st.sampled_from([1, 2, 4, 8])), max_size=6))
def test_scheduler_never_double_books_a_gpu(stream: list[tuple[str, int]]) -> None:
    """Whatever arrives, no GPU is in two allocated devices (a partition and a GPU, or two partitions)."""
    devices = devices_of(published())
    used: list[str] = []
    for got in _schedule(stream):
        for name in got:
            used += members(devices[name])
    assert len(used) == len(set(used))


# -- prepare / unprepare ------------------------------------------------------------------------------


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[GpuDriver]]:
    """Drivers made by a test, closed after it."""
    drivers: list[GpuDriver] = []
    yield drivers
    for d in drivers:
        d.close()


def make_node(tmp_path: Path, profile: str) -> DriverNode:
    """A fresh simulated node of ``profile`` with its driver root."""
    root = make_simulated_driver_root(load_profile(profile), tmp_path / "driver-root")
    return DriverNode(tmp_path / "node", profile_inventory(profile), root)


def partition_driver(
    node: DriverNode, made: list[GpuDriver], fm: SimulatedFabricManager | None = None
) -> GpuDriver:
    """A started driver publishing partitions, with this node's fabric planner and executor."""
    gates = parse_feature_gates(GATES)
    planners, executors = fabric_effects(gates, node.inventory, fm=fm, checkpoint=on_disk(node))
    driver = GpuDriver(
        node_name=node.node_name,
        inventory=node.inventory,
        gates=gates,
        store=node.store(),
        specs=node.specs(),
        effects=Effects(planners, executors),
        fabric_partitions=True,
    )
    made.append(driver)
    driver.start()
    return driver


def claim_for(*names: str, config: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A claim allocated ``names`` (one request)."""
    return allocated_claim([result(n, request="r") for n in names], config=config or ())


def gpu_nodes(node: DriverNode, uid: str) -> list[str]:
    """The GPU nodes (``/dev/nvidia<N>``) of the one device in a claim's CDI spec."""
    [device] = yaml.safe_load(node.spec_path(uid).read_text())["devices"]
    paths = [n["path"] for n in device["containerEdits"]["deviceNodes"]]
    return sorted(p for p in paths if p.removeprefix("/dev/nvidia").isdigit())


def test_prepare_and_unprepare_a_partition_round_trip(tmp_path: Path, made: list[GpuDriver]) -> None:
    """partition-4-1 prepares with all 4 member nodes and its partition env; unprepare leaves nothing."""
    node = make_node(tmp_path, "dgx-h100")
    driver = partition_driver(node, made)
    c = claim_for("partition-4-1")
    answer = prepare_one(driver, c)
    assert answer.error == ""
    assert gpu_nodes(node, uid_of(c)) == [f"/dev/nvidia{i}" for i in range(4)]
    spec = node.spec_path(uid_of(c)).read_text()
    assert "NVDRA_FABRIC_PARTITION_ID=1" in spec and "NVDRA_FABRIC_VIRTUALIZATION_MODEL=BareMetal" in spec
    [record] = on_disk(node).claims[uid_of(c)].applied
    assert (record["kind"], record["partitionId"], record["devices"]) == (
        ACTIVATE_KIND,
        1,
        ["gpu-0", "gpu-1", "gpu-2", "gpu-3"],
    )
    assert driver.unprepare_resource_claims([ref_of(c)]) == {uid_of(c): ""}
    assert spec_files(node.cdi_root) == [] and on_disk(node).claims == {}


def test_members_and_partitions_block_each_other_at_prepare(tmp_path: Path, made: list[GpuDriver]) -> None:
    """A held partition blocks its GPUs and overlapping partitions; a held GPU blocks its partitions."""
    node = make_node(tmp_path, "dgx-h100")
    driver = partition_driver(node, made)
    whole = claim_for("partition-4-1")
    assert prepare_one(driver, whole).error == ""
    for blocked in ("gpu-2", "partition-2-3", "partition-8-0"):
        answer = prepare_one(driver, claim_for(blocked))
        assert "shares GPU" in answer.error and "partition-4-1" in answer.error, blocked
    single = claim_for("gpu-5")
    assert prepare_one(driver, single).error == ""
    assert "gpu-5" in prepare_one(driver, claim_for("partition-4-2")).error
    assert "also allocated to this claim" in prepare_one(driver, claim_for("gpu-4", "partition-2-5")).error
    driver.unprepare_resource_claims([ref_of(whole)])
    assert prepare_one(driver, claim_for("gpu-2")).error == ""
    held = sorted(d.device_name for c in on_disk(node).claims.values() for d in c.devices)
    assert held == ["gpu-2", "gpu-5"]


def test_a_fabric_config_checks_the_partitions_members(tmp_path: Path, made: list[GpuDriver]) -> None:
    """A fabricTopologyConfig sees a partition device as its GPUs: a bound they miss refuses the claim."""
    node = make_node(tmp_path, "dgx-h100")
    driver = partition_driver(node, made)
    config = [opaque(gpu_config(fabricTopologyConfig={"minBandwidth": 1000}), requests=["r"])]
    answer = prepare_one(driver, claim_for("partition-2-4", config=config))
    assert "900 GB/s" in answer.error and "below minBandwidth" in answer.error
    ok = [
        opaque(gpu_config(fabricTopologyConfig={"partitionSize": 2, "partitionIDs": ["4"]}), requests=["r"])
    ]
    assert prepare_one(driver, claim_for("partition-2-4", config=ok)).error == ""


def test_shared_nvswitch_activates_the_partition_of_a_partition_device(
    tmp_path: Path, made: list[GpuDriver]
) -> None:
    """On hgx-h200 (FABRIC_MODE=1) a partition device is activated in FM at prepare, deactivated after."""
    node = make_node(tmp_path, "hgx-h200")
    fm = SimulatedFabricManager.for_topology(
        Topology.from_inventory(node.inventory), mode=FabricMode.SHARED_NVSWITCH
    )
    driver = partition_driver(node, made, fm)
    c = claim_for("partition-4-2")
    assert prepare_one(driver, c).error == ""
    assert fm.active_ids() == {2}
    assert "NVDRA_FABRIC_VIRTUALIZATION_MODEL=SharedNVSwitch" in node.spec_path(uid_of(c)).read_text()
    assert gpu_nodes(node, uid_of(c)) == [f"/dev/nvidia{i}" for i in range(4, 8)]
    assert driver.unprepare_resource_claims([ref_of(c)]) == {uid_of(c): ""}
    assert fm.active_ids() == frozenset()


def test_plugin_refuses_to_start_with_dynamic_mig(tmp_path: Path) -> None:
    """serve() stops at start, before any socket or slice, when the flag meets DynamicMIG."""
    from nvdra.plugins.gpu.config import PluginConfig
    from nvdra.plugins.gpu.serve import serve

    config = PluginConfig(
        node_name=NODE,
        simulate="dgx-h100",
        kubelet_plugins_directory_path=tmp_path / "plugins",
        kubelet_registrar_directory_path=tmp_path / "registry",
        cdi_root=tmp_path / "cdi",
        feature_gates=f"{GATES},DynamicMIG=true",
        publish_fabric_partitions=True,
    )
    kube = FakeKube()
    with pytest.raises(ConfigError, match="DynamicMIG"), serve(config, kube=kube):
        pass
    assert kube.resource_slices() == []


# -- the chart ----------------------------------------------------------------------------------------


def test_chart_renders_the_class_and_env_only_when_asked() -> None:
    """publishFabricPartitions adds partition.gpu.nvidia.com and the plugin's env; off, neither exists."""
    helm = pytest.importorskip("tests.deploy.helm")
    values = {"resources": {"gpus": {"enabled": True}}, "featureGates": {"FabricTopologySupport": True}}
    for on in (False, True):
        docs = helm.render({**values, "publishFabricPartitions": on})
        classes = {d["metadata"]["name"]: d for d in helm.find(docs, "DeviceClass")}
        assert ("partition.gpu.nvidia.com" in classes) is on
        [ds] = helm.find(docs, "DaemonSet")
        [gpus] = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "gpus"]
        assert ("NVDRA_PUBLISH_FABRIC_PARTITIONS" in {e["name"] for e in gpus["env"]}) is on
    expression = classes["partition.gpu.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"]
    assert (
        expression
        == builtin_device_classes()["partition.gpu.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"]
    )
    with pytest.raises(helm.RenderError, match="DynamicMIG"):
        helm.render({**values, "publishFabricPartitions": True, "featureGates": {"DynamicMIG": True}})


def test_an_xid_on_a_member_taints_its_partitions() -> None:
    """Health: an XID on gpu-2 taints gpu-2 and every partition holding it, and nothing else."""
    from nvdra.core.health import EventKind, HealthEvent, HealthPolicy
    from nvdra.plugins.gpu.devices import allocatable_devices
    from nvdra.plugins.gpu.fabric.partitions import partition_devices
    from nvdra.plugins.gpu.health import HealthTracker

    inventory = profile_inventory("dgx-h100")
    devices = allocatable_devices(inventory) | partition_devices(inventory)
    tracker = HealthTracker(devices, pool_name=NODE, policy=HealthPolicy.from_flags("", quiet_period=None))
    gpu2 = next(g for g in inventory.gpus if g.name == "gpu-2")
    tracker.handle(HealthEvent(kind=EventKind.XID, gpu_uuid=gpu2.uuid, at=0.0, xid=79))
    assert sorted(tracker.state.taints) == ["gpu-2", "partition-2-3", "partition-4-1", "partition-8-0"]
