"""ResourceSlicePublisher: pools, splitting, generations, minimal writes, drift repair and retries."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tenacity

from nvdra.core import errors
from nvdra.kubeletplugin.fake import FakeKube, KubeCall
from nvdra.kubeletplugin.publisher import (
    DroppedFieldsError,
    PoolTarget,
    ResourceSlicePublisher,
    RetryPolicy,
    plan_pool,
    split_pool,
)
from nvdra.kubeletplugin.types import DriverResources, Pool, Slice

DRIVER = "gpu.nvidia.com"
NODE = "node-a"
NODE_UID = "98e3adbb-f89f-49f0-9e29-ef752d30db0a"
FAST = RetryPolicy(wait=tenacity.wait_none(), stop=tenacity.stop_after_attempt(4), after_error=0.01)


def gpus(n: int, **extra: object) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "name": f"gpu-{i}",
            "attributes": {"index": {"int": i}},
            "capacity": {"memory": {"value": "80Gi"}},
            **extra,
        }
        for i in range(n)
    )


def resources(*slices: Slice, generation: int | None = None, pool: str = NODE) -> DriverResources:
    return DriverResources(pools={pool: Pool(slices=slices, generation=generation)})


def make(kube: FakeKube | None = None, **kwargs: Any) -> tuple[FakeKube, ResourceSlicePublisher, list[Any]]:
    kube = kube or FakeKube()
    kube.add_node(NODE, uid=NODE_UID)
    reported: list[Any] = []
    publisher = ResourceSlicePublisher(
        kube,
        driver_name=DRIVER,
        node_name=NODE,
        retry=FAST,
        on_error=lambda exc, msg: reported.append((exc, msg)),
        **kwargs,
    )
    return kube, publisher, reported


def writes(kube: FakeKube) -> list[str]:
    return [c.verb for c in kube.calls() if c.verb in ("create", "update", "delete")]


def test_first_publish_creates_one_slice_like_upstream() -> None:
    """One slice, generation 1, count 1, 1.36 name prefix, nodeName and a controller owner ref to the Node."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(8))))
    pub.sync_now()
    (obj,) = kube.resource_slices()
    assert obj["metadata"]["generateName"] == f"00000-{DRIVER}-{NODE}-"
    assert obj["metadata"]["name"].startswith(f"00000-{DRIVER}-{NODE}-")
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE_UID, "controller": True}
    ]
    assert obj["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert obj["spec"]["nodeName"] == NODE and obj["spec"]["driver"] == DRIVER
    assert [d["name"] for d in obj["spec"]["devices"]] == [f"gpu-{i}" for i in range(8)]
    assert pub.statistics().generations == {NODE: 1}


def test_node_uid_is_looked_up_once() -> None:
    """Without node_uid the Node is read once, not on every sync."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(1))))
    for _ in range(3):
        pub.sync_now()
    assert [c for c in kube.calls() if c.resource == "nodes"] == [
        KubeCall(verb="get", resource="nodes", name=NODE)
    ]


def test_given_node_uid_skips_the_lookup() -> None:
    """A node_uid passed in is used as is."""
    kube, pub, _ = make(node_uid="given")
    pub.update(resources(Slice(devices=gpus(1))))
    pub.sync_now()
    assert all(c.resource != "nodes" for c in kube.calls())
    assert kube.resource_slices()[0]["metadata"]["ownerReferences"][0]["uid"] == "given"


def test_200_devices_become_two_index_named_slices() -> None:
    """200 devices split at 128 into slices 00000 and 00001, both generation 1 and count 2."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(200))))
    pub.sync_now()
    objs = kube.resource_slices()
    assert [o["metadata"]["name"][:6] for o in objs] == ["00000-", "00001-"]
    assert [len(o["spec"]["devices"]) for o in objs] == [128, 72]
    assert {(o["spec"]["pool"]["generation"], o["spec"]["pool"]["resourceSliceCount"]) for o in objs} == {
        (1, 2)
    }


def test_unchanged_resync_writes_nothing() -> None:
    """A second sync with the same desired state only lists."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(200))))
    pub.sync_now()
    kube.clear_calls()
    pub.sync_now()
    assert [c.verb for c in kube.calls()] == ["list"]


def test_changed_device_is_updated_in_place_without_new_generation() -> None:
    """One changed slice is one update: same name, same generation (no bump for a single update)."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(200))))
    pub.sync_now()
    before = {o["metadata"]["name"] for o in kube.resource_slices()}
    changed = list(gpus(200))
    changed[5] = {**changed[5], "attributes": {"index": {"int": 500}}}
    kube.clear_calls()
    pub.update(resources(Slice(devices=tuple(changed))))
    pub.sync_now()
    assert writes(kube) == ["update"]
    objs = kube.resource_slices()
    assert {o["metadata"]["name"] for o in objs} == before
    assert objs[0]["spec"]["devices"][5]["attributes"]["index"] == {"int": 500}
    assert {o["spec"]["pool"]["generation"] for o in objs} == {1}


def test_two_changed_slices_bump_the_generation() -> None:
    """Changes in two slices update both with generation 2."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(200))))
    pub.sync_now()
    changed = [{**d, "attributes": {"index": {"int": 1000}}} for d in gpus(200)]
    pub.update(resources(Slice(devices=tuple(changed))))
    pub.sync_now()
    assert {o["spec"]["pool"]["generation"] for o in kube.resource_slices()} == {2}
    assert pub.statistics().updates == 2


def test_growing_the_pool_bumps_generation_and_count() -> None:
    """A create (pool grows from 1 to 2 slices) bumps the generation; every slice gets count 2."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(100))))
    pub.sync_now()
    pub.update(resources(Slice(devices=gpus(150))))
    pub.sync_now()
    objs = kube.resource_slices()
    assert [(o["spec"]["pool"]["generation"], o["spec"]["pool"]["resourceSliceCount"]) for o in objs] == [
        (2, 2),
        (2, 2),
    ]


def test_shrinking_the_pool_deletes_the_extra_slice() -> None:
    """Going from 2 slices to 1 deletes slice 00001 and sets the survivor's count to 1."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(200))))
    pub.sync_now()
    pub.update(resources(Slice(devices=gpus(10))))
    pub.sync_now()
    (obj,) = kube.resource_slices()
    assert obj["metadata"]["name"].startswith("00000-")
    assert obj["spec"]["pool"]["resourceSliceCount"] == 1 and len(obj["spec"]["devices"]) == 10


def test_deleted_slice_is_recreated_on_drift() -> None:
    """A slice deleted behind the publisher's back comes back on the next sync."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(200))))
    pub.sync_now()
    victim = kube.resource_slices()[1]
    kube.delete_resource_slice(victim["metadata"]["name"])
    pub.sync_now()
    objs = kube.resource_slices()
    assert [o["metadata"]["name"][:6] for o in objs] == ["00000-", "00001-"]
    assert victim["metadata"]["name"] not in {o["metadata"]["name"] for o in objs}
    assert {o["spec"]["pool"]["generation"] for o in objs} == {2}


def test_background_resync_repairs_drift_without_update() -> None:
    """With a short resync period the background thread recreates a wiped pool on its own."""
    kube, pub, _ = make(resync_period=0.02)
    pub.start()
    try:
        pub.update(resources(Slice(devices=gpus(4))))
        assert wait_for(lambda: len(kube.resource_slices()) == 1)
        kube.delete_resource_slice(kube.resource_slices()[0]["metadata"]["name"])
        assert wait_for(lambda: len(kube.resource_slices()) == 1)
    finally:
        pub.stop()
    assert pub.statistics().creates == 2


def wait_for(condition: Callable[[], object], limit: float = 10.0) -> bool:
    """Poll a condition (a generous limit; no timing is asserted)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return False


def test_devices_and_counters_never_share_a_slice() -> None:
    """A desired slice with devices and counter sets publishes the counters in a slice of their own."""
    kube, pub, _ = make()
    counters = ({"name": "gpu-0-counter-set", "counters": {"memory": {"value": "80Gi"}}},)
    consuming = gpus(
        2, consumesCounters=[{"counterSet": "gpu-0-counter-set", "counters": {"memory": {"value": "1Gi"}}}]
    )
    pub.update(resources(Slice(devices=consuming, shared_counters=counters)))
    pub.sync_now()
    objs = kube.resource_slices()
    assert [sorted(k for k in ("devices", "sharedCounters") if k in o["spec"]) for o in objs] == [
        ["sharedCounters"],
        ["devices"],
    ]


def test_advanced_devices_split_at_64() -> None:
    """Devices with taints go at most 64 to a slice; a chunk without them may hold 128."""
    tainted = gpus(100, taints=[{"key": "k", "effect": "NoSchedule"}])
    assert [len(s.devices) for s in split_pool(Pool(slices=(Slice(devices=tainted),)))] == [64, 36]
    mixed = gpus(100) + gpus(1, taints=[{"key": "k", "effect": "NoSchedule"}])
    assert [len(s.devices) for s in split_pool(Pool(slices=(Slice(devices=mixed),)))] == [100, 1]


def test_empty_pool_publishes_one_empty_slice() -> None:
    """A pool with no devices still exists as one slice with count 1."""
    kube, pub, _ = make()
    pub.update(resources())
    pub.sync_now()
    (obj,) = kube.resource_slices()
    assert "devices" not in obj["spec"] and obj["spec"]["pool"]["resourceSliceCount"] == 1


def test_driver_generation_is_honoured_and_stays_monotonic() -> None:
    """A driver-given generation above the current one is used; a lower one does not go back."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(1)), generation=7))
    pub.sync_now()
    assert kube.resource_slices()[0]["spec"]["pool"]["generation"] == 7
    pub.update(resources(Slice(devices=gpus(2)), generation=3))
    pub.sync_now()
    assert kube.resource_slices()[0]["spec"]["pool"]["generation"] == 7


def test_removed_pool_is_deleted_and_other_nodes_are_untouched() -> None:
    """Slices of a pool no longer desired go; another node's slices stay."""
    kube, pub, _ = make()
    other = FakeKube()
    other_pub = ResourceSlicePublisher(kube, driver_name=DRIVER, node_name="node-b", node_uid="u", retry=FAST)
    other_pub.update(resources(Slice(devices=gpus(1)), pool="node-b"))
    other_pub.sync_now()
    pub.update(DriverResources(pools={"p1": Pool(slices=(Slice(devices=gpus(1)),)), "p2": Pool(slices=())}))
    pub.sync_now()
    pub.update(DriverResources(pools={"p1": Pool(slices=(Slice(devices=gpus(1)),))}))
    pub.sync_now()
    pools = sorted(o["spec"]["pool"]["name"] for o in kube.resource_slices())
    assert pools == ["node-b", "p1"] and other.resource_slices() == []


def test_old_generation_and_unnamed_slices_are_deleted() -> None:
    """Slices of an older generation, and current ones without an index prefix, are removed."""
    kube, pub, _ = make()
    for name, gen in (("legacy-x", 3), ("00000-old", 1)):
        kube.create_resource_slice(
            {
                "metadata": {"name": name},
                "spec": {
                    "driver": DRIVER,
                    "nodeName": NODE,
                    "pool": {"name": NODE, "generation": gen, "resourceSliceCount": 1},
                    "devices": gpus(1),
                },
            }
        )
    pub.update(resources(Slice(devices=gpus(1))))
    pub.sync_now()
    (obj,) = kube.resource_slices()
    assert obj["metadata"]["name"].startswith("00000-") and obj["spec"]["pool"]["generation"] == 4


def test_conflict_is_retried_with_a_fresh_list() -> None:
    """A 409 on update makes the publisher re-list and succeed on the next try."""
    kube, pub, reported = make()
    pub.update(resources(Slice(devices=gpus(2))))
    pub.sync_now()
    kube.fail_next("update", status=409)
    pub.update(resources(Slice(devices=gpus(3))))
    kube.clear_calls()
    pub.sync_now()
    assert [c.verb for c in kube.calls()] == ["list", "update", "list", "update"]
    assert len(kube.resource_slices()[0]["spec"]["devices"]) == 3 and reported == []


def test_unavailable_is_retried_until_the_stop_policy() -> None:
    """Transient errors are retried up to the policy's attempts, then raised and counted."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(1))))
    kube.fail_next("list", times=10, status=503)
    with pytest.raises(errors.KubeUnavailable):
        pub.sync_now()
    assert [c.verb for c in kube.calls()].count("list") == 4
    assert pub.statistics().errors == 1


def test_non_transient_error_is_not_retried() -> None:
    """A 422 is raised at once (retrying the same body fails again)."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=({"name": "Bad_Name"},))))
    with pytest.raises(errors.KubeApiError) as info:
        pub.sync_now()
    assert info.value.status == 422 and [c.verb for c in kube.calls()].count("create") == 1


def test_duplicate_device_names_in_a_pool_are_refused_before_writing() -> None:
    """A pool naming one device twice (across slices) is a ConfigError; nothing is written."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=gpus(1)), Slice(devices=gpus(1))))
    with pytest.raises(errors.ConfigError, match="gpu-0"):
        pub.sync_now()
    assert kube.resource_slices() == []


def test_background_errors_go_to_on_error_and_publishing_recovers() -> None:
    """In the background, an exhausted retry is reported and a later sync succeeds."""
    kube, pub, reported = make()
    kube.fail_next("list", times=5, status=500)
    pub.start()
    try:
        pub.update(resources(Slice(devices=gpus(1))))
        assert wait_for(lambda: len(kube.resource_slices()) == 1)
    finally:
        pub.stop()
    assert reported and isinstance(reported[0][0], errors.KubeUnavailable)


def test_update_coalesces_while_a_sync_runs() -> None:
    """Updates made while a sync is busy collapse into one further sync with the last state."""
    gate, entered = threading.Event(), threading.Event()

    class SlowKube(FakeKube):
        def list_resource_slices(
            self, *, driver: str | None, node_name: str | None = None
        ) -> list[dict[str, Any]]:
            entered.set()
            gate.wait(10)
            return super().list_resource_slices(driver=driver, node_name=node_name)

    kube, pub, _ = make(SlowKube())
    pub.start()
    try:
        pub.update(resources(Slice(devices=gpus(1))))
        assert entered.wait(10)
        for n in (2, 3, 4):
            pub.update(resources(Slice(devices=gpus(n))))
        gate.set()
        assert wait_for(
            lambda: len((kube.resource_slices() or [{"spec": {}}])[0]["spec"].get("devices", [])) == 4
        )
    finally:
        pub.stop()
    assert pub.statistics().syncs <= 3


class DroppingKube(FakeKube):
    """A server with DRADeviceTaints off: it silently drops device taints."""

    def _strip(self, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        for device in body["spec"].get("devices", []):
            device.pop("taints", None)
        return body

    def create_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return super().create_resource_slice(self._strip(body))

    def update_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return super().update_resource_slice(self._strip(body))


def test_dropped_fields_are_reported_once_and_adopted() -> None:
    """When the server drops taints, the publisher reports DroppedFieldsError once and does not loop."""
    kube, pub, reported = make(DroppingKube())
    pub.update(resources(Slice(devices=gpus(1, taints=[{"key": "k", "effect": "NoSchedule"}]))))
    pub.sync_now()
    kube.clear_calls()
    pub.sync_now()
    pub.sync_now()
    assert writes(kube) == []
    assert [type(e) for e, _ in reported] == [DroppedFieldsError]


def test_quantities_compare_by_value() -> None:
    """A server that canonicalises 1024Mi to 1Gi causes no update loop (semantic comparison)."""
    kube, pub, _ = make()
    pub.update(resources(Slice(devices=({"name": "gpu-0", "capacity": {"memory": {"value": "1Gi"}}},))))
    pub.sync_now()
    pub.update(resources(Slice(devices=({"name": "gpu-0", "capacity": {"memory": {"value": "1024Mi"}}},))))
    kube.clear_calls()
    pub.sync_now()
    assert writes(kube) == []


def test_nothing_is_published_before_the_first_update() -> None:
    """sync_now before update() makes no API calls at all."""
    kube, pub, _ = make()
    pub.sync_now()
    assert kube.calls() == ()


def test_stop_leaves_slices_in_place() -> None:
    """Stopping does not delete what was published (the kubelet wipes slices when the driver is gone)."""
    kube, pub, _ = make()
    pub.start()
    pub.update(resources(Slice(devices=gpus(1))))
    assert wait_for(lambda: len(kube.resource_slices()) == 1)
    pub.stop()
    assert len(kube.resource_slices()) == 1


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_publishing_over_http_through_the_adapter(tmp_path: Path, version: str) -> None:
    """End to end over HTTP: 200 devices publish as two slices; a resync writes nothing (no shape drift)."""
    from nvdra.kubeletplugin._kube import KubernetesKubeApi
    from nvdra.kubeletplugin.testing_apiserver import ApiServer

    store = FakeKube(served_versions=(version,))
    store.add_node(NODE, uid=NODE_UID)
    with ApiServer(store) as srv:
        api = KubernetesKubeApi.from_kubeconfig(str(srv.write_kubeconfig(tmp_path / "kc")), qps=0)
        pub = ResourceSlicePublisher(api, driver_name=DRIVER, node_name=NODE, retry=FAST)
        pub.update(resources(Slice(devices=gpus(200))))
        pub.sync_now()
        store.clear_calls()
        pub.sync_now()
        api.close()
    assert [c.verb for c in store.calls()] == ["list"]
    assert [len(o["spec"]["devices"]) for o in store.resource_slices()] == [128, 72]


def _existing(name: str, generation: int, count: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {
            "driver": DRIVER,
            "nodeName": NODE,
            "pool": {"name": NODE, "generation": generation, "resourceSliceCount": count},
            "devices": list(gpus(1)),
        },
    }


def test_plan_writes_before_deleting_when_the_generation_moves() -> None:
    """With a bump, new-generation slices are written first and old ones deleted after (no empty pool)."""
    target = PoolTarget(driver=DRIVER, node_name=NODE, pool_name=NODE, owner={})
    plan = plan_pool(
        target,
        [Slice(devices=gpus(2))],
        [_existing("legacy", 1)],
        unchanged=lambda i, spec, obj: False,
    )
    assert plan.generation == 2 and not plan.delete_first
    assert [o["metadata"]["name"] for o in plan.deletes] == ["legacy"]
    assert [i for i, _ in plan.creates] == [0] and plan.updates == ()


def test_plan_deletes_first_when_the_generation_stays() -> None:
    """Shrinking with one update keeps the generation and deletes the surplus slice first."""
    target = PoolTarget(driver=DRIVER, node_name=NODE, pool_name=NODE, owner={})
    plan = plan_pool(
        target,
        [Slice(devices=gpus(1))],
        [_existing("00000-a", 1, 2), _existing("00001-b", 1, 2)],
        unchanged=lambda i, spec, obj: spec == obj["spec"],
    )
    assert plan.generation == 1 and plan.delete_first
    assert [o["metadata"]["name"] for o in plan.deletes] == ["00001-b"]
    assert [(i, b["spec"]["pool"]["resourceSliceCount"]) for i, b in plan.updates] == [(0, 1)]
    assert not plan.empty
