"""The DRA health stream is served by both kubelet plugins even with device health checks off.

A 1.36 kubelet opens ``v1alpha1.DRAResourceHealth/NodeWatchResources`` on every DRA plugin whether or
not the plugin announces it (kubernetes/kubernetes#141855) and logs an error every 5 s when the call
is refused. The kubelet reads the stream with ``Recv`` in a loop: a message updates its health cache,
an error is logged, a clean end (EOF) clears the driver's cache. So without NVMLDeviceHealthCheck the
plugins keep the stream open and send nothing: no error, no invented health.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from nvdra.kubeletplugin import FakeKube, KubeletClient
from nvdra.kubeletplugin.client import HealthWatch, PluginRpcError, RegisteredPlugin
from nvdra.kubeletplugin.health import DeviceHealth
from nvdra.kubeletplugin.registration import HEALTH_TOKEN
from nvdra.plugins.computedomain.serve import CdPluginConfig
from nvdra.plugins.computedomain.serve import serve as serve_cd
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve as serve_gpu
from tests.plugin_harness import cd_plugin_config

QUIET_S = 0.5
"""How long the open stream is watched for unexpected messages (not a timing assertion)."""


class Reader:
    """Consumes a health stream in a thread, keeping every message and how the stream ended."""

    def __init__(self, watch: HealthWatch) -> None:
        self.watch = watch
        self.messages: list[list[DeviceHealth]] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self.watch:
                self.messages.append(message)
        except PluginRpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def close(self) -> None:
        """Cancel the stream as the kubelet does when it goes away, and wait for the reader."""
        self.watch.cancel()
        self._thread.join(timeout=10)


def assert_open_and_silent(plugin: RegisteredPlugin) -> None:
    """The stream opens, stays open without messages or errors, and ends cleanly when cancelled."""
    assert plugin.offers_health, plugin.info.supported_versions
    reader = Reader(plugin.watch_health())
    try:
        assert not reader.ended.wait(QUIET_S), f"stream ended: {reader.error}"
        assert reader.messages == []
    finally:
        reader.close()
    assert reader.ended.is_set()
    assert reader.error is None
    assert reader.messages == []


def test_gpu_plugin_serves_an_open_silent_stream_without_health_checks(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPU plugin, NVMLDeviceHealthCheck off: the health service is announced and served, silent."""
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    store = FakeKube()
    store.add_node("n1")
    config = PluginConfig(
        node_name="n1",
        cdi_root=sockdir / "cdi",
        simulate="pcie-l4",
        kubelet_registrar_directory_path=sockdir / "reg",
        kubelet_plugins_directory_path=sockdir / "plugins",
    )
    with serve_gpu(config, kube=store) as running, KubeletClient(sockdir / "reg") as kubelet:
        assert running.helper is not None
        plugin = kubelet.register(running.helper.registration_socket)
        assert HEALTH_TOKEN in plugin.info.supported_versions
        assert_open_and_silent(plugin)
        # A second stream (the kubelet reconnects after a restart) is served the same way.
        assert_open_and_silent(plugin)


def cd_plugin_setup(sockdir: Path) -> tuple[CdPluginConfig, FakeKube]:
    """The CD plugin's settings on a simulated GB200 tray (node n1), and a store with that node."""
    config = cd_plugin_config(sockdir)
    store = FakeKube()
    store.add_node("n1")
    return config, store


def test_cd_plugin_serves_an_open_silent_stream(sockdir: Path) -> None:
    """The CD plugin (no device health of its own) announces and serves the stream too."""
    config, store = cd_plugin_setup(sockdir)
    with serve_cd(config, kube=store) as running, KubeletClient(sockdir / "reg") as kubelet:
        assert running.helper is not None
        assert_open_and_silent(kubelet.register(running.helper.registration_socket))


def test_open_stream_does_not_delay_plugin_stop(sockdir: Path) -> None:
    """A kubelet holding the silent stream open does not hold up the plugin's shutdown."""
    config, store = cd_plugin_setup(sockdir)
    with KubeletClient(sockdir / "reg") as kubelet:
        with serve_cd(config, kube=store) as running:
            assert running.helper is not None
            reader = Reader(kubelet.register(running.helper.registration_socket).watch_health())
            assert not reader.ended.wait(QUIET_S)
            stopping = time.monotonic()
        assert reader.ended.wait(10)
        stopped_in = time.monotonic() - stopping
        reader.close()
        assert reader.messages == []
        print(f"plugin stopped {stopped_in:.2f}s after the context exit with a health stream open")
