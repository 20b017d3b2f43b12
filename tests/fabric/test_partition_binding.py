"""Binding conditions (gate DeviceBindingConditions, KEP-5007) for SharedNVSwitch partition devices:
the plugin on the simulated hgx-h200 (Fabric Manager in SharedNVSwitch mode) over its sockets against an
HTTP API server publishes the conditions on its partition devices, activates an allocated partition before
the kubelet prepares it and says so in the claim's status, hands the activation to prepare (unprepare
deactivates), reports an FM failure after bounded retries without leaving anything active, and
deactivates a partition whose claim goes away before prepare, also across a plugin restart."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nvdra.alloc import Allocator, builtin_device_classes
from nvdra.core.faults import arm
from nvdra.fabric import FabricManager
from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, RegisteredPlugin
from nvdra.kubeletplugin.objects import RESOURCE_CLAIMS
from nvdra.plugins.gpu.binding import Binder
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.fabric import ACTIVATE_KIND, FabricExecutor
from nvdra.plugins.gpu.fabric.activation import ACTIVE, FABRIC_CONDITIONS, FAILED
from nvdra.plugins.gpu.publication import offline_publication
from nvdra.plugins.gpu.serve import RunningPlugin, serve
from tests.plugin_harness import plugin_config, wait_for
from tests.plugins.conftest import DRIVER, NODE, allocated_claim, gpu_config, opaque, result

JsonObject = dict[str, Any]
GATES = "FabricTopologySupport=true,DeviceBindingConditions=true"
PARTITION = "partition-4-2"  # FM partition 2: GPUs 4-7 of the hgx-h200 board table


@contextmanager
def plugin(sockdir: Path, store: FakeKube, state: Path) -> Iterator[tuple[RunningPlugin, RegisteredPlugin]]:
    """The plugin on hgx-h200 publishing partition devices, its simulated FM kept in ``state`` (so a
    restarted plugin finds the partitions the last one left active), registered and published."""
    with ApiServer(store) as server:
        config = plugin_config(
            sockdir,
            server,
            simulate="hgx-h200",
            simulate_state=str(state),
            feature_gates=GATES,
            publish_fabric_partitions=True,
        )
        with serve(config) as running, KubeletClient(config.kubelet_registrar_directory_path) as kubelet:
            registered = kubelet.register(
                config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock", api="v1"
            )
            # the pool has several slices, written one after another: wait for the partition device itself
            wait_for(
                f"{PARTITION} to be published",
                lambda: any(
                    d["name"] == PARTITION
                    for s in store.resource_slices()
                    for d in s["spec"].get("devices") or []
                ),
            )
            yield running, registered


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    monkeypatch.delenv("NVDRA_SIMULATE_FABRIC_MODE", raising=False)
    kube = FakeKube()
    kube.add_node(NODE)
    return kube


def fm_of(running: RunningPlugin) -> FabricManager:
    assert running.effects is not None
    executor = running.effects.executor(ACTIVATE_KIND)
    assert isinstance(executor, FabricExecutor) and executor.fm is not None
    return executor.fm


def active(running: RunningPlugin) -> set[int]:
    return {p.partition_id for p in fm_of(running).partitions() if p.is_active}


def partition_claim(store: FakeKube, device: str = PARTITION, config: Sequence[JsonObject] = ()) -> ClaimRef:
    conditioned = {
        **result(device, request="r"),
        "bindingConditions": [ACTIVE],
        "bindingFailureConditions": [FAILED],
    }
    meta = store.add_claim(allocated_claim([conditioned], config=config))["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def scheduled_claim(store: FakeKube, partition_id: int) -> ClaimRef:
    """A claim for partition ``partition_id`` (class partition.gpu.nvidia.com), allocated by the scheduler
    stand-in from the slices the plugin published: the results carry the conditions the devices do."""
    claim = allocated_claim([], name=f"partition-{partition_id}")
    claim["spec"]["devices"]["requests"] = [
        {
            "name": "r",
            "exactly": {
                "deviceClassName": "partition.gpu.nvidia.com",
                "selectors": [
                    {"cel": {"expression": f"device.attributes['{DRIVER}'].partitionID == {partition_id}"}}
                ],
            },
        }
    ]
    outcome = Allocator(store.resource_slices(), builtin_device_classes(), node_name=NODE).allocate([claim])
    assert outcome.allocations is not None, outcome.error
    claim["status"] = {"allocation": outcome.allocations[0]}
    meta = store.add_claim(claim)["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def condition(store: FakeKube, ref: ClaimRef, kind: str) -> JsonObject | None:
    claim = store.get_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
    for entry in (claim.get("status") or {}).get("devices") or []:
        for c in entry.get("conditions") or []:
            if c["type"] == kind:
                return dict(c)
    return None


def is_(store: FakeKube, ref: ClaimRef, kind: str, status: str) -> bool:
    found = condition(store, ref, kind)
    return found is not None and found["status"] == status


def test_partition_devices_carry_the_conditions_and_gpus_do_not(
    sockdir: Path, store: FakeKube, tmp_path: Path
) -> None:
    with plugin(sockdir, store, tmp_path / "state"):
        devices = {d["name"]: d for s in store.resource_slices() for d in s["spec"].get("devices") or []}
        assert devices[PARTITION]["bindingConditions"] == [ACTIVE]
        assert devices[PARTITION]["bindingFailureConditions"] == [FAILED]
        assert devices[PARTITION]["bindsToNode"] is True
        assert "bindingConditions" not in devices["gpu-4"] and "bindsToNode" not in devices["gpu-4"]


def test_activated_before_prepare_then_prepare_owns_it(
    sockdir: Path, store: FakeKube, tmp_path: Path
) -> None:
    with plugin(sockdir, store, tmp_path / "state") as (running, kubelet):
        ref = scheduled_claim(store, 2)
        [allocated] = store.get_object(RESOURCE_CLAIMS, ref.name, ref.namespace)["status"]["allocation"][
            "devices"
        ]["results"]
        assert (allocated["device"], allocated["bindingConditions"]) == (PARTITION, [ACTIVE])
        wait_for("FabricPartitionActive", lambda: is_(store, ref, ACTIVE, "True"))
        assert active(running) == {2}  # before the kubelet asked
        answer = kubelet.prepare([ref])[ref.uid]
        assert answer.error == ""
        assert active(running) == {2}
        assert kubelet.unprepare([ref]) == {ref.uid: ""}
        assert active(running) == set()  # the checkpoint's record owned it: the last claim went


def test_fm_failure_sets_the_failure_condition_and_leaves_nothing_active(
    sockdir: Path, store: FakeKube, tmp_path: Path
) -> None:
    """Partition 0 (all 8 GPUs) active outside the plugin: FM refuses partition 2 (in use) on every pass."""
    with plugin(sockdir, store, tmp_path / "state") as (running, _):
        fm_of(running).activate(0)
        ref = partition_claim(store)
        wait_for("FabricPartitionFailed", lambda: is_(store, ref, FAILED, "True"))
        failed = condition(store, ref, FAILED)
        assert (
            failed is not None
            and failed["reason"] == "ActivationFailed"
            and "3 attempts" in failed["message"]
        )
        ready = condition(store, ref, ACTIVE)
        assert ready is not None and ready["status"] == "False"
        assert active(running) == {0}


def test_claim_deleted_before_prepare_deactivates(sockdir: Path, store: FakeKube, tmp_path: Path) -> None:
    with plugin(sockdir, store, tmp_path / "state") as (running, _):
        ref = partition_claim(store)
        wait_for("FabricPartitionActive", lambda: is_(store, ref, ACTIVE, "True"))
        assert active(running) == {2}
        store.delete_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
        wait_for("the deactivation", lambda: not active(running))


def test_restart_between_activation_and_prepare_leaks_nothing(
    sockdir: Path, store: FakeKube, tmp_path: Path
) -> None:
    """Activated, plugin stops; restarted: prepare takes the still-active partition over, unprepare ends it.
    Activated again, plugin stops, the claim is deleted while it is down; restarted: deactivated at start."""
    state = tmp_path / "state"
    with plugin(sockdir, store, state) as (running, _):
        ref = partition_claim(store)
        wait_for("FabricPartitionActive", lambda: is_(store, ref, ACTIVE, "True"))
    with plugin(sockdir, store, state) as (running, kubelet):
        assert active(running) == {2}  # FM (the daemon) kept it across the plugin's restart
        assert kubelet.prepare([ref])[ref.uid].error == ""
        assert kubelet.unprepare([ref]) == {ref.uid: ""}
        assert active(running) == set()

        other = partition_claim(store, "partition-4-1")
        wait_for("FabricPartitionActive", lambda: is_(store, other, ACTIVE, "True"))
    store.delete_object(RESOURCE_CLAIMS, other.name, other.namespace)
    with plugin(sockdir, store, state) as (running, _):
        wait_for("the sweep at start", lambda: not active(running))


def test_prepare_without_fabric_logic_hands_the_partition_back(
    sockdir: Path, store: FakeKube, tmp_path: Path
) -> None:
    """fabricTopologyConfig strategy Disabled: prepare plans no activation, so it does not take the
    partition over; the loop deactivates what it activated once the claim is prepared."""
    disabled = [opaque(gpu_config(fabricTopologyConfig={"strategy": "Disabled"}), requests=["r"])]
    with plugin(sockdir, store, tmp_path / "state") as (running, kubelet):
        ref = partition_claim(store, config=disabled)
        wait_for("FabricPartitionActive", lambda: is_(store, ref, ACTIVE, "True"))
        assert kubelet.prepare([ref])[ref.uid].error == ""
        wait_for("the hand-back", lambda: not active(running))
        assert kubelet.unprepare([ref]) == {ref.uid: ""}


@pytest.mark.parametrize(("profile", "conditioned"), [("hgx-h200", True), ("dgx-h100", False)])
def test_only_a_shared_nvswitch_node_conditions_its_partitions(
    profile: str, conditioned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``nvdra devices`` shows: hgx-h200 (FM mode 1) conditions its partitions; dgx-h100 (bare
    metal: prepare activates nothing) publishes the same kind of devices without conditions."""
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    config = PluginConfig(
        node_name=NODE, simulate=profile, feature_gates=GATES, publish_fabric_partitions=True
    )
    published = offline_publication(config, env={})
    devices = [d for pool in published.resources.pools.values() for s in pool.slices for d in s.devices]
    partitions = [d for d in devices if d["name"].startswith("partition-")]
    assert partitions
    assert all(("bindingConditions" in d) is conditioned for d in partitions)
    assert all("bindingConditions" not in d for d in devices if d["name"].startswith("gpu-"))


class Calls:
    """A binder's bind/unbind/handover calls, by name, as (claim UID, device)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, str]] = []

    def __call__(self, what: str) -> Callable[[str, str], None]:
        return lambda uid, device: self.made.append((what, uid, device))


def test_a_claim_whose_status_is_cleared_is_not_activated_again(tmp_path: Path) -> None:
    """Unprepare clears status.devices while the claim stays allocated: neither a claim prepare took over
    nor one made ready whose prepare the loop never saw is activated a second time."""
    store = FakeKube()
    taken, unseen = partition_claim(store), partition_claim(store, "partition-4-1")
    calls, prepared = Calls(), set[str]()
    binder = Binder(
        store,
        driver_name=DRIVER,
        node_name=NODE,
        bind=calls("bind"),
        unbind=calls("unbind"),
        prepared=lambda: prepared,
        state_path=tmp_path / "fabric-binder.json",
        kinds=FABRIC_CONDITIONS,
        handover=calls("handover"),
    )
    binder.reconcile_once()
    assert is_(store, taken, ACTIVE, "True") and is_(store, unseen, ACTIVE, "True")
    prepared.add(taken.uid)
    binder.reconcile_once()
    prepared.clear()
    for ref in (taken, unseen):
        claim = store.get_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
        store.update_object(
            RESOURCE_CLAIMS, {**claim, "status": {**claim["status"], "devices": []}}, status=True
        )
    binder.reconcile_once()
    expected = [
        ("bind", taken.uid, PARTITION),
        ("bind", unseen.uid, "partition-4-1"),
        ("handover", taken.uid, PARTITION),
    ]
    assert sorted(calls.made) == sorted(expected)  # one activation each, in whichever UID order
    store.delete_object(RESOURCE_CLAIMS, unseen.name, unseen.namespace)
    binder.reconcile_once()
    assert calls.made[-1] == ("unbind", unseen.uid, "partition-4-1")


def test_a_state_file_of_the_first_layout_is_still_cleaned_up(tmp_path: Path) -> None:
    """binder.json as the first VFIO binder wrote it (claim UID -> devices): a claim gone is undone."""
    state = tmp_path / "binder.json"
    state.write_text(json.dumps({"gone-uid": ["gpu-vfio-3"]}))
    calls = Calls()
    binder = Binder(
        FakeKube(),
        driver_name=DRIVER,
        node_name=NODE,
        bind=calls("bind"),
        unbind=calls("unbind"),
        prepared=set,
        state_path=state,
    )
    binder.reconcile_once()
    assert calls.made == [("unbind", "gone-uid", "gpu-vfio-3")]
    assert json.loads(state.read_text()) == {"bound": {}, "ready": {}, "handedOver": []}


class Crash(BaseException):
    """Ends the binding loop's thread where the process would have died."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("deleted", [False, True], ids=["claim-kept", "claim-deleted-while-down"])
def test_a_crash_right_after_activation_leaks_nothing(
    sockdir: Path, store: FakeKube, tmp_path: Path, deleted: bool
) -> None:
    """The loop dies right after Fabric Manager activated the partition (fault point after-fm-activated):
    no condition, no owner, only the intent in fabric-binder.json. Restarted: a kept claim gets its
    condition without a second activation and prepare/unprepare end the partition; a claim deleted while
    the plugin was down has its partition deactivated by the first pass."""
    state = tmp_path / "state"
    fired = threading.Event()

    def crash(name: str, _seen: int) -> None:
        fired.set()
        raise Crash(name)

    arm(("after-fm-activated", 1), crash)
    try:
        with plugin(sockdir, store, state) as (running, _):
            ref = partition_claim(store)
            wait_for("the crash", fired.is_set)
            assert active(running) == {2} and condition(store, ref, ACTIVE) is None
    finally:
        arm(None, crash)
    if deleted:
        store.delete_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
    with plugin(sockdir, store, state) as (running, kubelet):
        if deleted:
            wait_for("the sweep at start", lambda: not active(running))
            return
        wait_for("FabricPartitionActive", lambda: is_(store, ref, ACTIVE, "True"))
        assert kubelet.prepare([ref])[ref.uid].error == ""
        assert kubelet.unprepare([ref]) == {ref.uid: ""}
        assert active(running) == set()
