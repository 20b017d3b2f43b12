"""FabricTopologySupport rolled out at run time: the plugin watches its Node's label and republishes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin import ApiServer, FakeKube, KubeletClient
from nvdra.kubeletplugin.objects import NODES
from nvdra.plugins.gpu.fabric.node import FABRIC_LABEL
from nvdra.plugins.gpu.nodewatch import FabricLabelWatch, effective_fabric_gate
from nvdra.plugins.gpu.serve import serve_while
from tests.plugin_harness import plugin_config, wait_for
from tests.plugins.conftest import DRIVER, NODE


def test_effective_gate_follows_the_label_over_the_flags() -> None:
    off = parse_feature_gates("")
    assert effective_fabric_gate(off, {}) == (False, "default")
    assert effective_fabric_gate(off, {FABRIC_LABEL: "true"}) == (True, f"node label {FABRIC_LABEL}=true")
    on = parse_feature_gates("FabricTopologySupport=true")
    assert effective_fabric_gate(on, {FABRIC_LABEL: "bogus"})[0] is True  # a typo keeps the flag's value


def test_label_watch_fires_once_on_an_effective_change_only() -> None:
    kube = FakeKube()
    kube.add_node(NODE)
    kube.add_node("other")
    fired: list[int] = []
    watch = FabricLabelWatch(
        kube, NODE, base=parse_feature_gates(""), current=False, on_change=lambda: fired.append(1)
    ).start()
    try:
        kube.patch_object(NODES, "other", {"metadata": {"labels": {FABRIC_LABEL: "true"}}})  # not this node
        kube.patch_object(NODES, NODE, {"metadata": {"labels": {FABRIC_LABEL: "false"}}})  # same value
        time.sleep(0.3)
        assert fired == []
        kube.patch_object(NODES, NODE, {"metadata": {"labels": {FABRIC_LABEL: "true"}}})
        wait_for("the change", lambda: fired)
        kube.patch_object(NODES, NODE, {"metadata": {"labels": {FABRIC_LABEL: "1"}}})
        time.sleep(0.3)
        assert fired == [1]
    finally:
        watch.stop()


def _fabric_attributes(store: FakeKube) -> set[str]:
    names: set[str] = set()
    for item in store.resource_slices():
        for device in item["spec"].get("devices") or []:
            names |= {a for a in device.get("attributes") or {} if a.startswith("fabric")}
    return names


@pytest.mark.slow
def _made(socket: Path) -> tuple[int, int] | None:
    """When and as which inode ``socket`` was made (a freed inode number may be given out again)."""
    try:
        made = socket.stat()
    except FileNotFoundError:
        return None
    return made.st_ino, made.st_mtime_ns


def test_plugin_republishes_when_its_node_label_turns_the_gate_on(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    store = FakeKube()
    store.add_node(NODE)
    with ApiServer(store) as server:
        config = plugin_config(sockdir, server, healthcheck_port=-1)
        stop = threading.Event()
        runner = threading.Thread(target=serve_while, args=(config, stop), daemon=True)
        runner.start()
        socket = config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock"
        try:
            with KubeletClient(config.kubelet_registrar_directory_path) as kubelet:
                wait_for("the registration socket", socket.exists)
                kubelet.register(socket)
                wait_for("the first slice", store.resource_slices)
                assert _fabric_attributes(store) == set()
                store.patch_object(NODES, NODE, {"metadata": {"labels": {FABRIC_LABEL: "true"}}})
                # the plugin serves again: its registration socket is made anew (it may be back before a
                # poll sees it gone, since the sockets are served before the driver is built)
                first = _made(socket)
                wait_for("serving again", lambda: _made(socket) not in (None, first))
            with KubeletClient(config.kubelet_registrar_directory_path) as kubelet:
                kubelet.register(socket)
                wait_for("the fabric attributes", lambda: _fabric_attributes(store))
                assert "fabricManagerMode" in _fabric_attributes(store)
        finally:
            stop.set()
            runner.join(30)
        assert not runner.is_alive()
