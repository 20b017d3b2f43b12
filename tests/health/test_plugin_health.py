"""Device health in the running GPU plugin: injected XIDs and lost GPUs become slice taints and the
DRA health stream, ignored XIDs stay informational, and the recovery rules clear taints again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.health import HealthPolicy
from nvdra.kubeletplugin import FakeKube, HealthStatus, KubeletClient
from nvdra.nvml import SimulatedNvml
from nvdra.plugins.gpu.health import HealthTracker
from nvdra.plugins.gpu.serve import RunningPlugin
from tests.plugin_harness import serving_plugin, wait_for
from tests.plugins.conftest import DRIVER

JsonObject = dict[str, Any]


@pytest.fixture
def plugin(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RunningPlugin, FakeKube, KubeletClient]]:
    """The plugin on a simulated dgx-h100 with NVMLDeviceHealthCheck on, registered with a kubelet."""
    settings = {"feature_gates": "NVMLDeviceHealthCheck=true", "additional_xids_to_ignore": "94,nonsense"}
    with serving_plugin(sockdir, monkeypatch, **settings) as cluster:
        cluster.register_and_publish()
        yield cluster.plugin, cluster.store, cluster.kubelet


def taints(store: FakeKube) -> dict[str, list[JsonObject]]:
    """Published taints per device name."""
    return {d["name"]: d.get("taints", []) for s in store.resource_slices() for d in s["spec"]["devices"]}


def nvml(running: RunningPlugin) -> SimulatedNvml:
    assert isinstance(running.backend, SimulatedNvml)
    return running.backend


def tracker(running: RunningPlugin) -> HealthTracker:
    return next(v for v in running.driver.views if isinstance(v, HealthTracker))


def test_xid_on_gpu_3_taints_gpu_3_and_the_health_stream_says_unhealthy(plugin: Any) -> None:
    """XID 79 on simulated GPU 3 → gpu-3 carries gpu.nvidia.com/xid=79:NoSchedule in the published
    slice (printed: how long it took), and the kubelet's health stream reports gpu-3 UNHEALTHY."""
    running, store, kubelet = plugin
    reg = kubelet.register(running.config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock")
    with reg.watch_health() as watch:
        stream = iter(watch)
        first = next(stream)
        assert {d.device_name for d in first} == {f"gpu-{i}" for i in range(8)}
        assert all(d.health is HealthStatus.HEALTHY for d in first)
        started = time.monotonic()
        assert nvml(running).inject_xid(3, 79)
        published = wait_for("the taint", lambda: taints(store)["gpu-3"])
        print(f"XID → taint in the published slice: {(time.monotonic() - started) * 1000:.1f} ms")
        assert published == [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]
        assert all(not t for name, t in taints(store).items() if name != "gpu-3")
        report = next(d for d in next(stream) if d.device_name == "gpu-3")
        assert report.health is HealthStatus.UNHEALTHY
        assert report.message == "gpu.nvidia.com/xid=79:NoSchedule"


def test_ignored_xids_give_effect_none(plugin: Any) -> None:
    """XID 43 (upstream's list) and 94 (--additional-xids-to-ignore) are published with effect None."""
    running, store, _ = plugin
    nvml(running).inject_xid(1, 43)
    nvml(running).inject_xid(2, 94)
    wait_for("both taints", lambda: taints(store)["gpu-1"] and taints(store)["gpu-2"])
    assert taints(store)["gpu-1"] == [{"key": "gpu.nvidia.com/xid", "value": "43", "effect": "None"}]
    assert taints(store)["gpu-2"] == [{"key": "gpu.nvidia.com/xid", "value": "94", "effect": "None"}]
    assert tracker(running).state.healthy("gpu-1")


def test_lost_gpu_taints_every_device(plugin: Any) -> None:
    """A GPU falling off the bus (NVML cannot say which) taints all eight devices gpu-lost:NoSchedule."""
    running, store, _ = plugin
    nvml(running).mark_gpu_lost(5)
    wait_for("every device tainted", lambda: all(taints(store).values()))
    for name, device_taints in taints(store).items():
        assert {"key": "gpu.nvidia.com/gpu-lost", "effect": "NoSchedule"} in device_taints, name


def test_quiet_period_clears_the_published_taint(plugin: Any) -> None:
    """With a short quiet period the recovery timer removes the XID taint and republishes the slice."""
    running, store, _ = plugin
    health = tracker(running)
    health.policy = HealthPolicy(quiet_period=0.3)
    nvml(running).inject_xid(3, 79)
    wait_for("the taint", lambda: taints(store)["gpu-3"])
    wait_for("the taint to clear", lambda: not taints(store)["gpu-3"])
    assert health.state.taints == {}
