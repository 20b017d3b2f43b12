"""The kind demo scripts and the kubelet-plugin init script, run for real with fake tools on PATH.

``kind``, ``docker``, ``helm`` and ``nvidia-smi`` are replaced by small scripts that record their
arguments (the boundary: no Docker engine or cluster here); the scripts under test run unmodified.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.helm import REPO

KIND = REPO / "demo" / "clusters" / "kind"
PRESTART = REPO / "deployments" / "container" / "kubelet-plugin-prestart.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is needed to run the shell scripts")


def _tool(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    """A bin dir whose kind/docker/helm append their argv to a log; returns (bin dir, log)."""
    bindir, log = tmp_path / "bin", tmp_path / "calls.log"
    bindir.mkdir()
    for tool in ("kind", "docker", "helm"):
        _tool(bindir, tool, f'echo "{tool} $*" >> "{log}"')
    return bindir, log


def run_demo(bindir: Path, *scripts: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(bindir), **env}
    for script in scripts:
        result = subprocess.run(
            [BASH or "bash", str(KIND / script)], env=base, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    return result


def test_scripts_parse() -> None:
    """Every shell script of the demo and the image passes ``bash -n``."""
    for script in [*KIND.glob("*.sh"), PRESTART]:
        subprocess.run([BASH or "bash", "-n", str(script)], check=True)


def test_three_steps_without_gpus_build_create_and_install_simulated(fake_tools: tuple[Path, Path]) -> None:
    """README steps with KIND_CLUSTER_NAME: build the image, create+load the cluster, install simulated."""
    bindir, log = fake_tools
    scripts = ("build-dra-driver-gpu.sh", "create-cluster.sh", "install-dra-driver-gpu.sh")
    out = run_demo(bindir, *scripts, KIND_CLUSTER_NAME="kind-dra-1")
    calls = log.read_text().splitlines()
    assert calls[0].startswith("docker build --file ")
    assert calls[0].endswith(f"deployments/container/Dockerfile --tag nvdra:v0.1.0 {REPO}")
    create = next(c for c in calls if c.startswith("kind create cluster"))
    assert "--name kind-dra-1" in create
    assert create.endswith("kind-cluster-config.yaml --wait 2m")
    assert "kind load docker-image --name kind-dra-1 nvdra:v0.1.0" in calls
    helm = calls[-1]
    assert helm.startswith(f"helm upgrade --install nvdra {REPO}/deployments/helm/nvdra")
    for part in (
        "--kube-context kind-kind-dra-1",
        "--set resources.gpus.enabled=true",
        "--set simulate=dgx-h100",
    ):
        assert part in helm
    assert "simulated profile dgx-h100" in out.stdout


def test_with_gpus_the_cluster_gets_them_and_nothing_is_simulated(fake_tools: tuple[Path, Path]) -> None:
    """With a working nvidia-smi the GPU kind config is used and the chart runs on real GPUs."""
    bindir, log = fake_tools
    _tool(bindir, "nvidia-smi", "echo 'GPU 0: NVIDIA A100'")
    run_demo(bindir, "create-cluster.sh", "install-dra-driver-gpu.sh", KIND_CLUSTER_NAME="gpus")
    calls = log.read_text().splitlines()
    assert any(c.endswith("kind-cluster-config-gpus.yaml --wait 2m") for c in calls)
    assert "simulate=" not in calls[-1]


def test_kind_configs_enable_cdi_and_label_the_worker() -> None:
    """Both kind configs turn CDI on in containerd and label the worker as a GPU node."""
    for name in ("kind-cluster-config.yaml", "kind-cluster-config-gpus.yaml"):
        config = yaml.safe_load((KIND / name).read_text())
        assert "enable_cdi = true" in config["containerdConfigPatches"][0]
        (worker,) = [n for n in config["nodes"] if n["role"] == "worker"]
        assert worker["labels"]["nvidia.com/gpu.present"] == "true"


def _driver_root(tmp_path: Path, *, smi_exit: int = 0) -> Path:
    root = tmp_path / "driver-root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "lib64").mkdir(parents=True)
    _tool(root / "usr" / "bin", "nvidia-smi", f'echo "NVIDIA-SMI version  : 580.105.08"; exit {smi_exit}')
    # Preloading the C library is harmless and lets the real `env -i LD_PRELOAD=...` path run.
    libc = next(
        (p for p in (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib64/libc.so.6")) if p.exists()), None
    )
    target = root / "usr" / "lib64" / "libnvidia-ml.so.1"
    if libc is not None:
        shutil.copy(libc, target)
    else:
        target.write_bytes(b"")
    return root


def run_prestart(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "DRIVER_ROOT_CTR_PATH": str(root),
        "NVIDIA_DRIVER_ROOT": "/run/nvidia/driver",
        "PRESTART_INTERVAL_SECONDS": "0",
        "PRESTART_MAX_ATTEMPTS": "2",
        **env,
    }
    return subprocess.run(
        [BASH or "bash", str(PRESTART)], env=base, capture_output=True, text=True, timeout=60, check=False
    )


def test_prestart_passes_when_the_driver_root_is_ready(tmp_path: Path) -> None:
    """nvidia-smi and libnvidia-ml.so.1 found and nvidia-smi runs: exit 0, naming both."""
    result = run_prestart(_driver_root(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is ready" in result.stdout
    assert "580.105.08" in result.stdout


def test_prestart_waits_and_explains_when_the_driver_is_missing(tmp_path: Path) -> None:
    """An empty driver root: it retries, says what is missing and which nvidiaDriverRoot to set."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_prestart(empty)
    assert result.returncode == 1
    assert "nvidia-smi: not found; libnvidia-ml.so.1: not found" in result.stdout
    assert "nvidiaDriverRoot=/run/nvidia/driver" in result.stdout
    assert "/home/kubernetes/bin/nvidia" in result.stdout
    assert "giving up after 2 attempts" in result.stdout


def test_prestart_reports_a_failing_nvidia_smi(tmp_path: Path) -> None:
    """Files present but nvidia-smi failing is not ready: the failure is shown."""
    result = run_prestart(_driver_root(tmp_path, smi_exit=3))
    assert result.returncode == 1
    assert "--version failed" in result.stdout


def test_scripts_are_executable() -> None:
    """The scripts the README runs directly carry the executable bit."""
    for script in [*KIND.glob("*.sh"), PRESTART]:
        assert os.access(script, os.X_OK), script
