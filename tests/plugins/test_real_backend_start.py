"""Both kubelet plugins started as real processes on the real NVML backend, without a GPU.

``nvdra-gpu-plugin`` and ``nvdra-cd-plugin`` run with ``--nvidia-driver-root`` pointing at a generated
driver root whose ``libnvidia-ml.so.1`` is the fake library at the C ABI (no ``--simulate``): they
load it by the normal search, initialise it like a real node's, and must publish exactly the
ResourceSlices they publish on the simulated profile the library is fed from. A driver root without
NVML must stop the plugin with the first cause, not with the cleanup's error.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient
from nvdra.kubeletplugin.client import RegisteredPlugin
from nvdra.nvml import _backend as b
from nvdra.nvml._fakelib import FAKE_NVML_STATE_FILE, append_fake_nvml_event
from tests.fakenvml import fake_driver_root
from tests.plugin_harness import clean_env
from tests.plugins.conftest import allocated_claim, result

BIN = Path(sys.executable).parent
NODE = "n1"
pytestmark = pytest.mark.skipif(
    not (BIN / "nvdra-gpu-plugin").exists(), reason=f"console scripts not installed in {BIN}"
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="nvdra-real-") as tmp:
        yield Path(tmp)


def _run_on_root(script: str, base: Path, kubeconfig: Path, root: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` to its end (a start that fails) on the driver root ``root``."""
    args = [*_flags(base, kubeconfig), "--nvidia-driver-root", root, "--container-driver-root", root]
    return subprocess.run(
        [str(BIN / script), *args], env=clean_env(), capture_output=True, text=True, timeout=60, check=False
    )


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


def _complete(slices: list[dict[str, Any]]) -> bool:
    """Whether every pool has all the slices its ``resourceSliceCount`` announces."""
    counts: dict[str, int] = {}
    for item in slices:
        counts[item["spec"]["pool"]["name"]] = counts.get(item["spec"]["pool"]["name"], 0) + 1
    return bool(slices) and all(
        counts[item["spec"]["pool"]["name"]] == item["spec"]["pool"]["resourceSliceCount"] for item in slices
    )


class _Plugin:
    """A plugin process registered with a kubelet and publishing to an in-process API server."""

    def __init__(self, proc: subprocess.Popen[bytes], store: FakeKube, log: Path) -> None:
        self.proc = proc
        self.store = store
        self.log = log
        self.kubelet: RegisteredPlugin | None = None

    def wait_for(self, what: str, probe: Callable[[], Any], deadline_s: float = 30.0) -> Any:
        """Poll ``probe`` until truthy; fail with the plugin's log if it exits or the deadline passes."""
        end = time.monotonic() + deadline_s
        while not (value := probe()):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"no {what} (exit {self.proc.poll()}):\n{self.log.read_text()}")
            time.sleep(0.05)
        return value

    def specs(self) -> list[dict[str, Any]]:
        """The published slices' specs, once every pool is complete, in a stable order."""
        slices = self.wait_for(
            "complete ResourceSlice pools", lambda: _complete(self.store.resource_slices())
        )
        assert slices
        return sorted(
            (s["spec"] for s in self.store.resource_slices()),
            key=lambda spec: (spec["pool"]["name"], repr(spec)),
        )


@contextmanager
def _running(script: str, base: Path, node_args: list[str]) -> Iterator[_Plugin]:
    """Start ``script`` against a fresh API server and register it; SIGTERM must end it with 0."""
    store = FakeKube()
    store.add_node(NODE)
    base.mkdir(parents=True, exist_ok=True)
    log = base / f"{script}.log"
    with ApiServer(store) as server, log.open("ab") as out:
        kubeconfig = server.write_kubeconfig(base / "kubeconfig")
        proc = subprocess.Popen(
            [str(BIN / script), *_flags(base, kubeconfig), *node_args],
            env=clean_env(),
            stdout=out,
            stderr=out,
        )
        plugin = _Plugin(proc, store, log)
        try:
            with KubeletClient(base / "reg") as kubelet:
                sockets = plugin.wait_for("registration socket", kubelet.discover)
                plugin.kubelet = kubelet.register(sockets[0])  # slices are published once registered
                yield plugin
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _published(script: str, base: Path, node_args: list[str]) -> list[dict[str, Any]]:
    with _running(script, base, node_args) as plugin:
        return plugin.specs()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "profile", "gates"),
    [
        ("nvdra-gpu-plugin", "dgx-h100", ""),
        ("nvdra-gpu-plugin", "dgx-h100", "DynamicMIG=true"),
        ("nvdra-gpu-plugin", "a100-mig", ""),
        ("nvdra-gpu-plugin", "pcie-l4", ""),
        ("nvdra-cd-plugin", "gb200-nvl72-tray", ""),
        ("nvdra-cd-plugin", "dgx-h100", ""),
    ],
)
def test_real_backend_publishes_what_the_simulated_node_does(
    base: Path, script: str, profile: str, gates: str
) -> None:
    """The same devices, attributes, capacities and counters from the fake library as from --simulate."""
    gate_args = ["--feature-gates", gates] if gates else []
    simulated = _published(script, base / "sim", ["--simulate", profile, *gate_args])
    root = fake_driver_root(base / "root", profile)
    on_root = ["--nvidia-driver-root", str(root), "--container-driver-root", str(root), *gate_args]
    real = _published(script, base / "real", on_root)
    assert [d["name"] for s in real for d in s.get("devices", [])] == [
        d["name"] for s in simulated for d in s.get("devices", [])
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
        done = _run_on_root(script, base, kubeconfig, root)
    assert done.returncode == 1, done.stderr
    assert (
        f"libnvidia-ml.so.1 not found under driver root {root}; searched: {root}/libnvidia-ml.so.1"
        in done.stderr
    )
    assert f"{root}/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1" in done.stderr
    assert "nvmlShutdown" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_an_xid_from_the_library_taints_the_device(base: Path) -> None:
    """An XID the library reports (nvmlEventSetWait_v2) reaches the published slice as a taint."""
    root = fake_driver_root(base / "root", "dgx-h100")
    args = ["--nvidia-driver-root", str(root), "--container-driver-root", str(root)]
    with _running(
        "nvdra-gpu-plugin", base / "real", [*args, "--feature-gates", "NVMLDeviceHealthCheck=true"]
    ) as p:
        p.specs()
        append_fake_nvml_event(root / "usr/lib64" / FAKE_NVML_STATE_FILE, 3, b.EVENT_XID_CRITICAL, 79)

        def taints() -> dict[str, Any]:
            devices = (d for s in p.store.resource_slices() for d in s["spec"].get("devices", []))
            return {d["name"]: d["taints"] for d in devices if d.get("taints")}

        tainted = p.wait_for("the XID taint", taints)
        assert tainted == {"gpu-3": [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]}


@pytest.mark.slow
def test_dynamic_mig_creates_and_destroys_through_the_library(base: Path) -> None:
    """Prepare creates the GI and CI through the C ABI at the allocated placement (the library's kernel
    part adds the capability nodes the CDI spec names); unprepare destroys both and turns MIG off."""
    root = fake_driver_root(base / "root", "dgx-h100")
    state = root / "usr/lib64" / FAKE_NVML_STATE_FILE
    args = ["--nvidia-driver-root", str(root), "--container-driver-root", str(root)]
    with _running("nvdra-gpu-plugin", base / "real", [*args, "--feature-gates", "DynamicMIG=true"]) as p:
        p.specs()
        claim = allocated_claim([result("gpu-0-mig-2g20gb-14-2", request="mig", pool=NODE)])
        meta = p.store.add_claim(claim)["metadata"]
        ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
        assert p.kubelet is not None
        answer = p.kubelet.prepare([ref])[ref.uid]
        assert answer.error == "", p.log.read_text()
        assert "migmode 0 1 1\n" in state.read_text()
        assert "gi 0 4 14 2 2 2\n" in state.read_text()  # GI id 3 + start // 2, as on an 8-slice GPU
        spec = yaml.safe_load((base / "real/cdi" / f"k8s.gpu.nvidia.com-claim_{ref.uid}.yaml").read_text())
        nodes = [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]]
        caps = [f"/dev/nvidia-caps/nvidia-cap{m}" for m in (3 + 9 * 4, 3 + 9 * 4 + 1)]
        assert nodes[0] == "/dev/nvidia0"
        assert [n for n in nodes if n.startswith("/dev/nvidia-caps/")] == caps
        assert p.kubelet.unprepare([ref]) == {ref.uid: ""}
        assert "\ngi 0 " not in state.read_text()
        assert "migmode 0 0 0\n" in state.read_text()  # an empty Hopper GPU: MIG off again


def test_cd_plugin_reads_proc_from_the_kernel_on_a_real_driver_root(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real driver root has no proc/: the IMEX capability and nvidia-caps major come from /proc."""
    from nvdra.plugins.computedomain.serve import CdPluginConfig, serve
    from tests.fakenvml import fresh_pynvml

    fresh_pynvml(monkeypatch)
    root = fake_driver_root(base / "root", "gb200-nvl72-tray")
    shutil.rmtree(root / "proc")  # as on a node: the driver's files, not the kernel's
    store = FakeKube()
    store.add_node(NODE)
    config = CdPluginConfig(
        node_name=NODE,
        cdi_root=base / "cdi",
        nvidia_driver_root=root,
        container_driver_root=root,
        kubelet_registrar_directory_path=base / "reg",
        kubelet_plugins_directory_path=base / "plugins",
    )
    with serve(config, kube=store, sockets=False) as running:
        assert running.driver._specs.proc_root == Path("/")  # the spec writer reads the kernel's /proc


@pytest.mark.parametrize("script", ["nvdra-gpu-plugin", "nvdra-cd-plugin"])
def test_a_failing_shutdown_does_not_hide_why_the_start_failed(base: Path, script: str) -> None:
    """NVML answers GPU_IS_LOST to the device count and then fails its shutdown: the last line says the
    first (the plugin's error), the shutdown's failure is only a logged warning before it."""
    faults = [("nvmlDeviceGetCount_v2", 15), ("nvmlShutdown", 1)]
    root = str(fake_driver_root(base / "root", "dgx-h100", faults=faults))
    store = FakeKube()
    store.add_node(NODE)
    with ApiServer(store) as server:
        kubeconfig = server.write_kubeconfig(base / "kubeconfig")
        done = _run_on_root(script, base, kubeconfig, root)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"{script}: nvmlDeviceGetCount: GPU is lost", done.stderr
    assert any("NVML shutdown after an error failed too: nvmlShutdown" in line for line in lines[:-1])
