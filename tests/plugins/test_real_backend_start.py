"""Both kubelet plugins started as real processes on the real NVML backend, without a GPU.

``nvdra-gpu-plugin`` and ``nvdra-cd-plugin`` run with ``--nvidia-driver-root`` pointing at a generated
driver root whose ``libnvidia-ml.so.1`` is the fake library at the C ABI (no ``--simulate``): they
load it by the normal search, initialise it like a real node's, and must publish exactly the
ResourceSlices they publish on the simulated profile the library is fed from. A driver root without
NVML must stop the plugin with the first cause, not with the cleanup's error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.kubeletplugin import ApiServer, FakeKube, KubeletClient
from tests.fakenvml import fake_driver_root

BIN = Path(sys.executable).parent
NODE = "n1"
pytestmark = pytest.mark.skipif(
    not (BIN / "nvdra-gpu-plugin").exists(), reason=f"console scripts not installed in {BIN}"
)
# The settings' environment twins, scrubbed so the developer's shell cannot leak into a test.
_TWINS = (
    "NODE_NAME",
    "NAMESPACE",
    "CDI_ROOT",
    "NVIDIA_DRIVER_ROOT",
    "HOST_DRIVER_ROOT",
    "DRIVER_ROOT_CTR_PATH",
    "NVIDIA_CDI_HOOK_PATH",
    "KUBELET_REGISTRAR_DIRECTORY_PATH",
    "KUBELET_PLUGINS_DIRECTORY_PATH",
    "KUBECONFIG",
    "FEATURE_GATES",
    "NVDRA_SIMULATE",
    "NVDRA_FAKE_NVML_STATE",
    "POD_UID",
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="nvdra-real-") as tmp:
        yield Path(tmp)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _TWINS}


def _flags(base: Path, kubeconfig: Path) -> list[str]:
    return [
        "--node-name",
        NODE,
        "--kubeconfig",
        str(kubeconfig),
        "--cdi-root",
        str(base / "cdi"),
        "--kubelet-registrar-directory-path",
        str(base / "reg"),
        "--kubelet-plugins-directory-path",
        str(base / "plugins"),
    ]


def _published(script: str, base: Path, node_args: list[str]) -> list[dict[str, Any]]:
    """Start ``script`` against a fresh API server, wait for its slices, stop it; the slices' specs."""
    store = FakeKube()
    store.add_node(NODE)
    base.mkdir(parents=True, exist_ok=True)
    log = base / f"{script}.log"
    with ApiServer(store) as server, log.open("ab") as out:
        kubeconfig = server.write_kubeconfig(base / "kubeconfig")
        proc = subprocess.Popen(
            [str(BIN / script), *_flags(base, kubeconfig), *node_args], env=_env(), stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + 30

            def waiting(what: str) -> None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{script}: no {what} (exit {proc.poll()}):\n{log.read_text()}")
                time.sleep(0.05)

            with KubeletClient(base / "reg") as kubelet:
                while not kubelet.discover():
                    waiting("registration socket")
                kubelet.register(kubelet.discover()[0])  # slices are published once registered
                while not store.resource_slices():
                    waiting("ResourceSlice")
                time.sleep(0.3)  # let a multi-slice pool finish
                slices = store.resource_slices()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return sorted((s["spec"] for s in slices), key=lambda spec: (spec["pool"]["name"], repr(spec)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "profile"),
    [
        ("nvdra-gpu-plugin", "dgx-h100"),
        ("nvdra-gpu-plugin", "a100-mig"),
        ("nvdra-cd-plugin", "gb200-nvl72-tray"),
    ],
)
def test_real_backend_publishes_what_the_simulated_node_does(base: Path, script: str, profile: str) -> None:
    """The same devices, attributes, capacities and counters from the fake library as from --simulate."""
    simulated = _published(script, base / "sim", ["--simulate", profile])
    root = fake_driver_root(base / "root", profile)
    on_root = ["--nvidia-driver-root", str(root), "--container-driver-root", str(root)]
    real = _published(script, base / "real", on_root)
    assert [d["name"] for s in real for d in s["devices"]] == [
        d["name"] for s in simulated for d in s["devices"]
    ]
    assert real == simulated


@pytest.mark.parametrize("script", ["nvdra-gpu-plugin", "nvdra-cd-plugin"])
def test_a_driver_root_without_nvml_names_the_cause(base: Path, script: str) -> None:
    """No libnvidia-ml.so.1 under the root: exit 1 naming every path searched, not the shutdown error."""
    store = FakeKube()
    store.add_node(NODE)
    (base / "empty-root").mkdir()
    root = str(base / "empty-root")
    with ApiServer(store) as server:
        kubeconfig = server.write_kubeconfig(base / "kubeconfig")
        done = subprocess.run(
            [
                str(BIN / script),
                *_flags(base, kubeconfig),
                "--nvidia-driver-root",
                root,
                "--container-driver-root",
                root,
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert (
        f"libnvidia-ml.so.1 not found under driver root {root}; searched: {root}/libnvidia-ml.so.1"
        in done.stderr
    )
    assert f"{root}/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1" in done.stderr
    assert "nvmlShutdown" not in done.stderr
    assert "Traceback" not in done.stderr
