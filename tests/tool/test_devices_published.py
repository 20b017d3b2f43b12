"""``nvdra devices -o yaml`` shows exactly what the plugin writes to the API server.

For every built-in profile and a spread of gate sets (flags and environment), the plugin runs as
``nvdra-gpu-plugin --simulate`` does (:func:`nvdra.plugins.gpu.serve.serve`, registered by a kubelet
client, publishing into the in-memory API store); its ResourceSlices, less the names the API server
generates, must equal the ``items`` of ``nvdra devices -o yaml`` run with the same flags and environment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from nvdra.kubeletplugin import FakeKube, KubeletClient
from nvdra.nvml import PROFILE_NAMES
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
from nvdra.tool.cli import main

NODE = "n1"

# (flags, environment, node labels, --publish-fabric-partitions)
GATE_SETS: list[tuple[str, dict[str, str], dict[str, str], bool]] = [
    ("", {}, {}, False),
    ("DynamicMIG=true", {}, {}, False),
    ("PassthroughSupport=true", {}, {}, False),
    ("FabricTopologySupport=true", {}, {}, True),
    ("NVMLDeviceHealthCheck=true,TimeSlicingSettings=true,MPSSupport=true", {}, {}, False),
    ("", {"FABRIC_TOPOLOGY_SUPPORT": "true"}, {}, False),
    ("FabricTopologySupport=true", {}, {"resource.nvidia.com/fabric-topology-support": "false"}, False),
]


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    """A slice without its metadata: names are generated, uid, resourceVersion, owner and times too."""
    return {
        "apiVersion": obj.get("apiVersion", "resource.k8s.io/v1"),
        "kind": obj.get("kind", "ResourceSlice"),
        "spec": obj["spec"],
    }


def published_by_plugin(
    tmp: Path, profile: str, gates: str, labels: dict[str, str], partitions: bool, state: str = ""
) -> list[dict[str, Any]]:
    store = FakeKube()
    store.add_node(NODE, labels=labels)
    config = PluginConfig(
        node_name=NODE,
        cdi_root=tmp / "cdi",
        simulate=profile,
        feature_gates=gates,
        publish_fabric_partitions=partitions,
        simulate_state=state,
        kubelet_registrar_directory_path=tmp / "registry",
        kubelet_plugins_directory_path=tmp / "plugins",
    )
    with serve(config, kube=store), KubeletClient(tmp / "registry") as kubelet:
        kubelet.register(kubelet.discover()[0])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            slices = store.resource_slices()
            if slices and len(slices) == slices[0]["spec"]["pool"]["resourceSliceCount"]:
                return slices
            time.sleep(0.01)
    raise AssertionError("the plugin published nothing within 10 s")


def shown_by_tool(profile: str, gates: str, labels: dict[str, str], partitions: bool) -> list[dict[str, Any]]:
    args = ["devices", "--simulate", profile, "--node-name", NODE, "-o", "yaml", "--feature-gates", gates]
    args += [a for k, v in labels.items() for a in ("--node-label", f"{k}={v}")]
    args += ["--fabric-partitions"] if partitions else []
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    listed = yaml.safe_load(result.output)
    assert listed["kind"] == "List"
    return list(listed["items"])


def _key(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=True)


@pytest.mark.slow
@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize(("gates", "env", "labels", "partitions"), GATE_SETS)
def test_devices_yaml_equals_what_the_plugin_publishes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    profile: str,
    gates: str,
    env: dict[str, str],
    labels: dict[str, str],
    partitions: bool,
) -> None:
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    monkeypatch.delenv("FEATURE_GATES", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = sorted(
        (_strip(o) for o in published_by_plugin(tmp_path, profile, gates, labels, partitions)), key=_key
    )
    tool = sorted((_strip(o) for o in shown_by_tool(profile, gates, labels, partitions)), key=_key)
    assert tool == plugin


def test_devices_shows_vfio_devices_and_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decorations the old rendering missed: VFIO devices, FABRIC_TOPOLOGY_SUPPORT from the env."""
    vfio = CliRunner().invoke(
        main, ["devices", "--simulate", "pcie-a100-nvlink", "--feature-gates", "PassthroughSupport=true"]
    )
    assert vfio.exit_code == 0, vfio.output
    assert "gpu-vfio-0" in vfio.output
    monkeypatch.setenv("FABRIC_TOPOLOGY_SUPPORT", "true")
    fabric = CliRunner().invoke(main, ["devices", "--simulate", "gb200-nvl72-tray", "-o", "yaml"])
    assert fabric.exit_code == 0, fabric.output
    assert "fabricManagerMode" in fabric.output  # a fabric attribute: the gate came from the environment
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT")
    plain = CliRunner().invoke(main, ["devices", "--simulate", "gb200-nvl72-tray", "-o", "yaml"])
    assert "fabricManagerMode" not in plain.output


def test_devices_bad_values_are_usage_errors() -> None:
    """An unknown profile or gate exits 2 with the option named."""
    bad_profile = CliRunner().invoke(main, ["devices", "--simulate", "dgx-h900"])
    assert bad_profile.exit_code == 2
    assert "--simulate" in bad_profile.output and "dgx-h100" in bad_profile.output
    bad_gate = CliRunner().invoke(main, ["devices", "--simulate", "dgx-h100", "--feature-gates", "Nope=true"])
    assert bad_gate.exit_code == 2
    assert "--feature-gates" in bad_gate.output and "Nope" in bad_gate.output


def test_devices_reads_a_simulated_nodes_state_directory(tmp_path: Path) -> None:
    """--simulate-state: a node whose MIG layout changed since its profile was written (a MIG device
    made on GPU 2) shows that layout, as the plugin started on the same state publishes it."""
    from nvdra.nvml import SimulatedNvml, load_profile
    from nvdra.plugins.gpu.simnode import simulated_nvml_state

    state = tmp_path / "state"
    where = simulated_nvml_state(PluginConfig(node_name=NODE, simulate="a100-mig", simulate_state=str(state)))
    assert where is not None
    where.parent.mkdir(parents=True)
    sim = SimulatedNvml(load_profile("a100-mig"), state_path=where)
    sim.init()
    gi = sim.create_gpu_instance(2, 19, 0)  # GPU 2 is in MIG mode without devices: a 1g.5gb at slice 0
    sim.create_compute_instance(2, gi)
    sim.shutdown()  # the hardware outlives the process that changed it
    plugin = sorted(
        (_strip(o) for o in published_by_plugin(tmp_path / "p", "a100-mig", "", {}, False, str(state))),
        key=_key,
    )
    args = [
        "devices",
        "--simulate",
        "a100-mig",
        "--node-name",
        NODE,
        "-o",
        "yaml",
        "--simulate-state",
        str(state),
    ]
    shown = CliRunner().invoke(main, args, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    tool = sorted((_strip(o) for o in yaml.safe_load(shown.output)["items"]), key=_key)
    assert tool == plugin
    assert "gpu-2-mig-1g5gb-19-0" in shown.output
    fresh = CliRunner().invoke(main, ["devices", "--simulate", "a100-mig"], catch_exceptions=False)
    assert "gpu-2-mig-1g5gb-19-0" not in fresh.output
