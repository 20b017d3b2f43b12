"""``nvdra demo`` through the real CLI: every quickstart scenario runs and shows the state it read back.

The demo runs once per module (a few seconds); each test checks one scenario's lines. The values
asserted (time slice, compute modes, MIG placements, leftovers) are read by the demo from the
simulated node and the API after the plugin's calls, so a plugin that skipped a step fails here.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from nvdra.nvml import PROFILE_NAMES
from nvdra.tool.cli import main


@pytest.fixture(scope="module")
def demo_output() -> str:
    """The output of one ``nvdra demo`` run."""
    result = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def section(output: str, title: str) -> str:
    """The lines of the section whose heading contains ``title``."""
    match = re.search(r"\n\[\d+\] [^\n]*" + re.escape(title) + r"[^\n]*\n(.*?)(?=\n\n|\Z)", output, re.S)
    assert match, f"no section {title!r} in:\n{output}"
    return match.group(1)


def test_demo_runs_both_plugin_configurations(demo_output: str) -> None:
    """The plugin starts with the sharing gates, then again with DynamicMIG, and the demo finishes."""
    assert "nvdra-gpu-plugin started (TimeSlicingSettings=true,MPSSupport=true)" in demo_output
    assert "nvdra-gpu-plugin started (DynamicMIG=true)" in demo_output
    assert re.search(r"\ndone in \d+\.\d s\n?$", demo_output)


def test_gpu_test1_gives_each_pod_its_own_gpu(demo_output: str) -> None:
    """Two pods with one claim each get two different GPUs."""
    lines = section(demo_output, "gpu-test1").splitlines()
    devices = [re.search(r"-> (gpu-\d+)", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert len(devices) == 2
    assert devices[0] != devices[1]


def test_gpu_test2_shares_one_gpu_between_containers(demo_output: str) -> None:
    """Both containers get the one device of the claim, and its CDI spec is shown."""
    text = section(demo_output, "gpu-test2")
    assert "containers ctr0, ctr1" in text
    assert len(re.findall(r"k8s\.gpu\.nvidia\.com/claim=\S+-gpu-\d+", text)) >= 1
    assert "kind: k8s.gpu.nvidia.com/claim" in text


def test_gpu_test3_second_pod_gets_the_same_devices(demo_output: str) -> None:
    """Preparing the shared claim for the second pod returns the same CDI ids and keeps one entry."""
    text = section(demo_output, "gpu-test3")
    ids = re.findall(r"k8s\.gpu\.nvidia\.com/claim=\S+", text)
    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert "checkpoint entries for it: 1" in text


def test_time_slicing_is_read_back_from_the_simulated_gpu(demo_output: str) -> None:
    """After prepare the GPU runs in DEFAULT compute mode with time slice 3 (Long)."""
    text = section(demo_output, "TimeSlicing with interval Long")
    assert "compute mode DEFAULT, time slice 3 (Long)" in text


def test_mps_daemon_is_created_readied_and_wired(demo_output: str) -> None:
    """The MPS Deployment exists and is ready, the GPU is EXCLUSIVE_PROCESS, the pipe dir is mounted."""
    text = section(demo_output, "MPS, 50 %")
    assert re.search(r"Deployment nvdra/mps-control-daemon-\S+ on node demo-node, readyReplicas 1", text)
    assert "MPS_ACTIVE_THREAD_PERCENTAGE=50" in text
    assert re.search(r"MPS_PINNED_MEMORY_LIMITS=GPU-[0-9a-f-]+=10240M", text)
    assert "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps" in text
    assert "compute mode EXCLUSIVE_PROCESS" in text


def test_bad_config_is_refused_without_leftovers(demo_output: str) -> None:
    """The typo is named with its field path and no CDI file is left for the claim."""
    text = section(demo_output, "typo")
    assert "unknown field 'timeSlicingConfg'" in text
    assert "CDI files left for it: none" in text


def test_unprepare_resets_the_gpus_and_removes_everything(demo_output: str) -> None:
    """After unprepare: time slice and compute mode reset, no Deployment, CDI spec or checkpoint entry."""
    text = section(demo_output, "NodeUnprepareResources for the 6 prepared claims")
    gpu_lines = [line for line in text.splitlines() if "simulated GPU" in line]
    assert len(gpu_lines) == 2
    assert all("compute mode DEFAULT, time slice 0 (Default)" in line for line in gpu_lines)
    assert "MPS Deployments left: none; CDI specs left: none; checkpoint entries: 0" in text


def test_dynamic_mig_publishes_every_placement(demo_output: str) -> None:
    """With DynamicMIG the 8 H100s publish their full GPUs and every MIG placement on counter sets."""
    assert "8 full GPUs and 200 MIG placements, all consuming 8 counter sets" in demo_output


def test_dynamic_mig_creates_instances_at_the_allocated_placements(demo_output: str) -> None:
    """Each allocated slice appears in the NVML snapshot with its profile, at its placement start."""
    text = section(demo_output, "MIG slice of one GPU")
    allocated = re.findall(r"gpu-(\d+)-mig-(\w+?)-\d+-(\d+) \((small|medium)\)", text)
    assert len(allocated) == 2
    for gpu, profile, start, _ in allocated:
        name = profile.replace("g", "g.", 1)  # 1g10gb -> 1g.10gb
        row = rf"\n\s+{gpu}\s+on\s+\d+\s+{re.escape(name)}\s+{start}\.\.\d+\s+\d+\s+MIG-"
        assert re.search(row, text), text


def test_dynamic_mig_unprepare_destroys_the_instances(demo_output: str) -> None:
    """After unprepare no MIG device is left and MIG mode is off again."""
    text = section(demo_output, "NodeUnprepareResources for the MIG claim")
    assert "MIG devices left: 0; GPUs with MIG mode on: none; CDI specs left: none" in text


@pytest.mark.slow
@pytest.mark.parametrize("profile", [p for p in PROFILE_NAMES if p != "dgx-h100"])
def test_demo_runs_on_every_profile(profile: str) -> None:
    """Every built-in profile finishes the demo: a scenario the node cannot serve says why it is skipped."""
    result = CliRunner().invoke(main, ["demo", "--simulate", profile], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert re.search(r"\ndone in \d+\.\d s\n?$", result.output)
    assert "Traceback" not in result.output
    for line in result.output.splitlines():
        if "skipped on this node:" in line:
            assert len(line.split("skipped on this node:", 1)[1].strip()) > 20  # a reason, not a stub


def test_demo_names_the_reason_when_a_node_cannot_serve_a_scenario() -> None:
    """An L4 node has no MIG: the dynamic-MIG scenario is skipped with that reason; the rest runs."""
    result = CliRunner().invoke(main, ["demo", "--simulate", "pcie-l4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "skipped on this node: no MIG placement published" in result.output
    assert "gpu-test3: one claim shared by two pods" in result.output


def test_unknown_profile_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["demo", "--simulate", "dgx-h900"])
    assert result.exit_code == 2
    assert "dgx-h900" in result.output and "pcie-l4" in result.output
