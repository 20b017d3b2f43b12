"""Simulated host trees are kept per profile: one profile's sysfs never shows up on another's node.

The simulated sysfs (VFIO passthrough) and driver root live in ``<--simulate-state>/<profile>/`` when
the flag is set, else in ``<plugin dir>/simulated/<profile>/``. Before, the sysfs was laid out once in
the plugin directory and reused, so a pcie-l4 node run after a dgx-h100 one published eight
``gpu-vfio-*`` devices of the H100s' PCI functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nvdra.kubeletplugin import FakeKube, KubeletClient
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
from nvdra.plugins.pluginconfig import simulated_profile_dir
from tests.plugin_harness import wait_for

JsonObject = dict[str, Any]


def profile_addresses(profile: str) -> set[str]:
    """The PCI addresses of a profile's GPUs, lower case as sysfs spells them."""
    backend = SimulatedNvml(load_profile(profile))
    backend.init()
    try:
        return {g.pci_bus_id.lower() for g in discover_inventory(backend).gpus}
    finally:
        backend.shutdown()


def run_once(sockdir: Path, profile: str, state: str) -> list[JsonObject]:
    """Start the plugin on ``profile`` with PassthroughSupport, register it, return its devices, stop."""
    store = FakeKube()
    store.add_node("n1")
    config = PluginConfig(
        node_name="n1",
        cdi_root=sockdir / "cdi",
        simulate=profile,
        simulate_state=state,
        kubelet_registrar_directory_path=sockdir / "reg",
        kubelet_plugins_directory_path=sockdir / "plugins",
        feature_gates="PassthroughSupport=true",
    )
    with serve(config, kube=store) as running, KubeletClient(sockdir / "reg") as kubelet:
        kubelet.register(running.helper.registration_socket)
        slices = wait_for("the ResourceSlice", store.resource_slices)
    return [d for s in slices for d in s["spec"]["devices"]]


def vfio_addresses(devices: list[JsonObject]) -> dict[str, str]:
    """PCI address of every published ``gpu-vfio-*`` device."""
    out = {}
    for device in devices:
        if device["name"].startswith("gpu-vfio-"):
            attributes = device["attributes"]
            out[device["name"]] = str(attributes["resource.kubernetes.io/pciBusID"]["string"]).lower()
    return out


@pytest.mark.parametrize("with_state", [False, True], ids=["plugin-dir", "simulate-state"])
def test_pcie_l4_after_dgx_h100_publishes_only_its_own_vfio_device(
    sockdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_state: bool
) -> None:
    """dgx-h100, then pcie-l4 in the same plugins dir (and state dir): pcie-l4's vfio devices are its
    own GPU's only; then dgx-h100 again finds its own tree where it left it."""
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    state = str(tmp_path / "state") if with_state else ""
    h100, l4 = profile_addresses("dgx-h100"), profile_addresses("pcie-l4")
    assert not h100 & l4

    first = vfio_addresses(run_once(sockdir, "dgx-h100", state))
    assert set(first.values()) == h100 and len(first) == len(h100)

    second = vfio_addresses(run_once(sockdir, "pcie-l4", state))
    assert set(second.values()) == l4 and len(second) == len(l4), second

    base = Path(state) if with_state else sockdir / "plugins" / "gpu.nvidia.com" / "simulated"
    for profile in ("dgx-h100", "pcie-l4"):
        tree = simulated_profile_dir(base, profile)
        assert (tree / "sysfs" / "sys" / "bus" / "pci" / "devices").is_dir()
        assert (tree / "driver-root" / "dev").is_dir()
    assert vfio_addresses(run_once(sockdir, "dgx-h100", state)) == first


def test_profile_files_are_keyed_apart(tmp_path: Path) -> None:
    """Two profile files with the same name in different directories get different state dirs."""
    a = simulated_profile_dir(tmp_path, str(tmp_path / "a" / "node.yaml"))
    b = simulated_profile_dir(tmp_path, str(tmp_path / "b" / "node.yaml"))
    assert a != b and a.parent == b.parent == tmp_path
    assert a.name.startswith("node-") and b.name.startswith("node-")
    assert simulated_profile_dir(tmp_path, "dgx-h100") == tmp_path / "dgx-h100"
