"""Device status in the claim (KEP-4817): the GPU plugin over its sockets, against an HTTP API server,
reports each prepared device in ``status.devices`` through the /status subresource and clears it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.checkpoint import DeviceRecord
from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube
from nvdra.kubeletplugin.objects import RESOURCE_CLAIMS
from nvdra.plugins.devicestatus import ClaimStatusReporter
from tests.plugin_harness import serving_plugin
from tests.plugins.conftest import DRIVER, NODE, PreparesEverything, allocated_claim, result

JsonObject = dict[str, Any]


@pytest.fixture
def running(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeKube, Any, Any, ApiServer]]:
    with serving_plugin(sockdir, monkeypatch) as cluster:
        yield cluster.store, cluster.plugin, cluster.register(), cluster.server


def status_devices(store: FakeKube, ref: ClaimRef) -> list[JsonObject]:
    claim = store.get_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
    return list((claim.get("status") or {}).get("devices") or [])


def test_prepare_reports_devices_and_unprepare_clears_them(
    running: tuple[FakeKube, Any, Any, ApiServer],
) -> None:
    """After prepare the claim says which GPU it got (UUID, PCI bus id, Ready); another driver's entry
    stays; after unprepare only that entry is left."""
    store, plugin, kubelet, server = running
    claim = allocated_claim([result("gpu-3"), result("cd-0", driver="other.example.com")])
    claim["status"]["devices"] = [
        {"driver": "other.example.com", "pool": NODE, "device": "cd-0", "data": {"mine": True}}
    ]
    meta = store.add_claim(claim)["metadata"]
    ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    assert kubelet.prepare([ref])[ref.uid].error == ""
    assert plugin.status.flush()  # the plugin writes the status after answering

    other, mine = status_devices(store, ref)
    assert other == {"driver": "other.example.com", "pool": NODE, "device": "cd-0", "data": {"mine": True}}
    gpu = next(g for g in plugin.inventory.gpus if g.name == "gpu-3")
    assert (mine["driver"], mine["pool"], mine["device"]) == (DRIVER, NODE, "gpu-3")
    assert mine["data"]["uuid"] == gpu.uuid and mine["data"]["pciBusIDs"] == [gpu.pci_bus_id]
    (ready,) = mine["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Prepared")
    assert ready["lastTransitionTime"].endswith("Z")
    writes = [a for a in server.audit() if a.resource == "resourceclaims" and a.subresource == "status"]
    assert [a.verb for a in writes] == ["update"]

    assert kubelet.unprepare([ref]) == {ref.uid: ""}
    assert plugin.status.flush()
    assert [d["driver"] for d in status_devices(store, ref)] == ["other.example.com"]


def test_a_conflict_is_retried_on_a_fresh_copy() -> None:
    """The claim changed between the kubelet's GET and the status write: 409, read again, write."""
    from nvdra.plugins.gpu.devicestatus import gpu_device_status

    store = FakeKube()
    stale = store.add_claim(allocated_claim([result("gpu-0")]))
    store.clear_calls()
    fresh = dict(store.get_object(RESOURCE_CLAIMS, stale["metadata"]["name"], stale["metadata"]["namespace"]))
    fresh["metadata"] = {**fresh["metadata"], "labels": {"touched": "yes"}}
    store.update_object(RESOURCE_CLAIMS, fresh)
    record = DeviceRecord(requests=("gpu",), pool_name=NODE, device_name="gpu-0", cdi_device_ids=("x",))
    reporter = ClaimStatusReporter(
        PreparesEverything(),
        store,
        driver_name=DRIVER,
        describe=lambda uid: [gpu_device_status(DRIVER, record, None)],
    )
    reporter.prepare_resource_claims([stale])
    verbs = [c.verb for c in store.calls() if c.resource == "resourceclaims"]
    assert verbs[-3:] == ["update-status", "get", "update-status"]  # stale (409), read again, written
    ref = ClaimRef(namespace=stale["metadata"]["namespace"], name=stale["metadata"]["name"], uid="")
    (entry,) = status_devices(store, ref)
    assert entry["device"] == "gpu-0" and entry["conditions"][0]["status"] == "True"
