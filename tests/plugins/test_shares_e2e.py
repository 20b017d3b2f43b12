"""Consumable shares end to end: the GPU plugin (serve) on an HTTP API server, driven over its sockets.

The node publishes shareable GPUs; the allocator packs two claims on gpu-0 as the scheduler would; the
kubelet stand-in prepares both, each gets its own CDI device and a status entry with its shareID; an
admin-access claim on the same GPU is prepared too and consumes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.alloc import Allocator, allocated_devices, builtin_device_classes, consumed_capacity
from nvdra.kubeletplugin import ClaimRef, FakeKube
from nvdra.kubeletplugin.objects import RESOURCE_CLAIMS
from tests.plugin_harness import serving_plugin
from tests.plugins.conftest import DRIVER, NODE

JsonObject = dict[str, Any]


@pytest.fixture
def cluster(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeKube, Any]]:
    settings = {"feature_gates": "ConsumableShares=true", "consumable_shares": "memory"}
    with serving_plugin(sockdir, monkeypatch, **settings) as cluster:
        yield cluster.store, cluster.register()


def wait_slices(store: FakeKube) -> list[JsonObject]:
    end = time.monotonic() + 15
    while not store.resource_slices():
        assert time.monotonic() < end, "no ResourceSlice published"
        time.sleep(0.02)
    return store.resource_slices()


def status_devices(store: FakeKube, ref: ClaimRef) -> list[JsonObject]:
    """The claim's ``status.devices`` once the plugin wrote them (it does so after answering prepare)."""
    end = time.monotonic() + 15
    while True:
        devices: list[JsonObject] = (
            store.get_object(RESOURCE_CLAIMS, ref.name, ref.namespace).get("status", {}).get("devices") or []
        )
        if devices:
            return devices
        assert time.monotonic() < end, f"no status.devices on claim {ref.name}"
        time.sleep(0.02)


def request(name: str, **exactly: Any) -> JsonObject:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER, **exactly}}]}
        },
    }


def test_two_shares_and_an_observer_on_one_gpu(cluster: tuple[FakeKube, Any]) -> None:
    store, kubelet = cluster
    slices = wait_slices(store)  # the API server accepted the policies and allowMultipleAllocations
    gpu0 = next(d for s in slices for d in s["spec"]["devices"] if d["name"] == "gpu-0")
    assert gpu0["allowMultipleAllocations"] is True
    assert gpu0["capacity"]["memory"]["requestPolicy"]["validRange"]["step"] == "1Mi"

    done: list[JsonObject] = []
    refs: list[ClaimRef] = []
    for name, extra in (
        ("a", {"capacity": {"requests": {"memory": "30Gi"}}}),
        ("b", {"capacity": {"requests": {"memory": "30Gi"}}}),
        ("watch", {"adminAccess": True}),
    ):
        claim = request(name, **extra)
        alloc = Allocator(
            slices,
            builtin_device_classes(),
            node_name=NODE,
            allocated=allocated_devices(done),
            consumed=consumed_capacity(done),
        )
        outcome = alloc.allocate([claim])
        assert outcome.allocations is not None, name
        claim["status"] = {"allocation": outcome.allocations[0]}
        done.append(claim)
        meta = store.add_claim(claim)["metadata"]
        refs.append(ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"]))
    assert [c["status"]["allocation"]["devices"]["results"][0]["device"] for c in done] == ["gpu-0"] * 3

    answers = kubelet.prepare(refs)
    assert [answers[r.uid].error for r in refs] == ["", "", ""]
    ids = [answers[r.uid].devices[0].cdi_device_ids for r in refs]
    assert len(set(ids)) == 3  # one CDI device per claim
    shares = []
    for ref in refs[:2]:
        (entry,) = status_devices(store, ref)
        shares.append(entry["shareID"])
    assert shares == [c["status"]["allocation"]["devices"]["results"][0]["shareID"] for c in done[:2]]
    observer = status_devices(store, refs[2])[0]
    assert observer["data"]["adminAccess"] is True and "shareID" not in observer
    assert kubelet.unprepare(refs) == {r.uid: "" for r in refs}
