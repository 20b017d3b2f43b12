"""Fabric wiring: the per-node gate label, serve's effect builder, ``nvdra partitions``, import footprint."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nvdra.core.featuregates import Gate, GateSource, parse_feature_gates
from nvdra.kubeletplugin import FakeKube
from nvdra.nvml import SimulatedNvml, load_profile
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.fabric import FABRIC_LABEL, build_fabric_effects, fabric_gate_for_node
from nvdra.tool.cli import main


@pytest.mark.parametrize(
    ("flag", "label", "enabled", "source"),
    [
        ("", "true", True, GateSource.OVERRIDE),
        ("FabricTopologySupport=true", "false", False, GateSource.OVERRIDE),
        ("FabricManagerPartitioning=true", None, True, GateSource.FLAG),
        ("", "maybe", False, GateSource.DEFAULT),
    ],
)
def test_node_label_overrides_the_gate(
    caplog: pytest.LogCaptureFixture, flag: str, label: str | None, enabled: bool, source: GateSource
) -> None:
    """The node's label switches the gate for that node; a bad label is ignored; the log names the source."""
    kube = FakeKube()
    kube.add_node("n1", labels={FABRIC_LABEL: label} if label is not None else {})
    with caplog.at_level(logging.INFO, logger="nvdra.plugins.gpu.nodewatch"):
        gates = fabric_gate_for_node(parse_feature_gates(flag), kube, "n1")
    state = gates.state(Gate.FABRIC_TOPOLOGY_SUPPORT)
    assert (state.enabled, state.source) == (enabled, source)
    assert f"decided by {source}" in caplog.text


def test_missing_node_keeps_the_cluster_value() -> None:
    """Without a readable Node the gate keeps its cluster-wide value."""
    gates = fabric_gate_for_node(parse_feature_gates("FabricTopologySupport=true"), FakeKube(), "gone")
    assert gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT)


def test_serve_builder_reads_a_shared_nvswitch_fm(tmp_path: Path) -> None:
    """On the simulated hgx-h200 (FABRIC_MODE=1) the builder lists FM's partitions; gate off: nothing."""
    config = PluginConfig(node_name="n1", simulate="hgx-h200", kubelet_plugins_directory_path=tmp_path)
    backend = SimulatedNvml(load_profile("hgx-h200"))
    backend.init()
    try:
        planners, executors = build_fabric_effects(
            config, parse_feature_gates("FabricTopologySupport=true"), backend, {}
        )
        assert planners[0].node.catalog.source == "fabric-manager"
        assert planners[0].node.catalog.get(1) is not None and executors[0].fm is not None
        assert build_fabric_effects(config, parse_feature_gates(""), backend, {}) == ([], [])
    finally:
        backend.shutdown()


def test_partitions_command_prints_the_catalog() -> None:
    """``nvdra partitions --simulate dgx-h100`` prints all 15 partitions with size, GPUs, bandwidth, state."""
    out = CliRunner().invoke(main, ["partitions", "--simulate", "dgx-h100"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["ID", "SIZE", "GPUS", "MODULES", "BANDWIDTH", "STATE"]
    assert len(lines) == 16
    assert lines[2].split() == ["1", "4", "gpu-0,gpu-1,gpu-2,gpu-3", "1,2,3,4", "900", "GB/s", "free"]


def test_fabric_package_loads_no_sdk() -> None:
    """Importing nvdra.fabric loads neither grpc, kubernetes, pynvml, click nor libnvfm."""
    code = (
        "import sys, nvdra.fabric; "
        "bad = [m for m in ('grpc', 'kubernetes', 'pynvml', 'click') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
