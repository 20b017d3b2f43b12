"""Binding conditions (nvdra gate DeviceBindingConditions, KEP-5007) for VFIO devices: the plugin over its
sockets against an HTTP API server publishes the conditions, binds an allocated GPU to vfio-pci before
the kubelet prepares it and says so in the claim's status, binds back a GPU whose claim went away, and
reports a failure condition after its bounded retries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.errors import HostError
from nvdra.kubeletplugin import ClaimRef, FakeKube
from nvdra.kubeletplugin.objects import RESOURCE_CLAIMS
from nvdra.plugins.gpu.binding import BIND_FAILED, BOUND, Binder
from nvdra.plugins.gpu.serve import RunningPlugin
from nvdra.plugins.gpu.vfio import passthrough_host
from tests.plugin_harness import serving_plugin, wait_for
from tests.plugins.conftest import DRIVER, NODE, allocated_claim, opaque, result

JsonObject = dict[str, Any]


@pytest.fixture
def running(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningPlugin, FakeKube, Any]]:
    gates = "PassthroughSupport=true,DeviceBindingConditions=true"
    with serving_plugin(sockdir, monkeypatch, feature_gates=gates) as cluster:
        yield cluster.plugin, cluster.store, cluster.register_and_publish()


def conditioned(device: str) -> JsonObject:
    return {
        **result(device, request="vm"),
        "bindingConditions": [BOUND],
        "bindingFailureConditions": [BIND_FAILED],
    }


def vfio_claim(store: FakeKube, device: str) -> ClaimRef:
    config = opaque({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "VfioDeviceConfig"})
    meta = store.add_claim(allocated_claim([conditioned(device)], config=[config]))["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def condition(store: FakeKube, ref: ClaimRef, kind: str) -> str | None:
    claim = store.get_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
    for entry in (claim.get("status") or {}).get("devices") or []:
        for c in entry.get("conditions") or []:
            if c["type"] == kind:
                return str(c["status"])
    return None


def test_vfio_devices_are_bound_before_prepare(running: tuple[RunningPlugin, FakeKube, Any]) -> None:
    plugin, store, kubelet = running
    vfio = {
        d["name"]: d
        for s in store.resource_slices()
        for d in s["spec"]["devices"]
        if d["name"].startswith("gpu-vfio-")
    }
    assert vfio["gpu-vfio-0"]["bindingConditions"] == [BOUND]
    assert vfio["gpu-vfio-0"]["bindingFailureConditions"] == [BIND_FAILED]
    host = passthrough_host(plugin.config)
    address = next(g.pci_bus_id for g in plugin.inventory.gpus if g.name == "gpu-0")

    ref = vfio_claim(store, "gpu-vfio-0")
    wait_for("VfioBound", lambda: condition(store, ref, BOUND) == "True")
    assert host.driver_of(address) == "vfio-pci"  # bound before the kubelet asked

    answer = kubelet.prepare([ref])[ref.uid]
    assert answer.error == ""
    assert kubelet.unprepare([ref]) == {ref.uid: ""}
    assert host.driver_of(address) == "nvidia"  # the checkpoint owned it after prepare


def test_a_claim_gone_before_prepare_gives_the_gpu_back(running: tuple[RunningPlugin, FakeKube, Any]) -> None:
    plugin, store, _ = running
    host = passthrough_host(plugin.config)
    address = next(g.pci_bus_id for g in plugin.inventory.gpus if g.name == "gpu-1")
    ref = vfio_claim(store, "gpu-vfio-1")
    wait_for("VfioBound", lambda: condition(store, ref, BOUND) == "True")
    store.delete_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
    wait_for("the bind back to nvidia", lambda: host.driver_of(address) == "nvidia")


def test_failures_are_retried_then_reported(tmp_path: Path) -> None:
    """A bind that keeps failing: VfioBound False with the reason on each pass, then VfioBindFailed True."""
    store = FakeKube()
    ref = vfio_claim(store, "gpu-vfio-2")
    calls: list[str] = []

    def bind(_uid: str, name: str) -> None:
        calls.append(name)
        raise HostError("/dev/nvidia2 is still in use by PIDs [4242]")

    binder = Binder(
        store,
        driver_name=DRIVER,
        node_name=NODE,
        bind=bind,
        unbind=lambda _uid, _name: None,
        prepared=set,
        state_path=tmp_path / "binder.json",
        max_attempts=2,
    )
    binder.reconcile_once()
    assert condition(store, ref, BOUND) == "False" and condition(store, ref, BIND_FAILED) is None
    binder.reconcile_once()
    assert condition(store, ref, BIND_FAILED) == "True"
    binder.reconcile_once()  # a verdict is final: no third attempt
    assert calls == ["gpu-vfio-2", "gpu-vfio-2"]
