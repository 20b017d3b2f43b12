"""The GPU plugin serves its sockets before it builds its driver: a DRA call that arrives in between
waits and then succeeds; when the start-up fails after registration, the call gets the cause and the
plugin goes away (in-process: ``serve`` raises; as a process: a non-zero exit, sockets removed)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, PluginRpcError, PrepareResult
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
from tests.plugin_harness import clean_env, plugin_config, wait_for
from tests.plugins.conftest import DRIVER, NODE, PROFILE, allocated_claim, result

SCRIPT = Path(sys.executable).parent / "nvdra-gpu-plugin"


class HeldKube(FakeKube):
    """A FakeKube whose ``server_version`` (read while the driver is built, after the sockets are
    served) waits for ``release``, then answers or raises ``fail``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.fail: Exception | None = None

    def server_version(self) -> tuple[int, int]:
        assert self.release.wait(30), "never released"
        if self.fail is not None:
            raise self.fail
        return super().server_version()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="nvdra-") as tmp:
        yield Path(tmp)


def _config(base: Path) -> PluginConfig:
    return PluginConfig(
        node_name=NODE,
        cdi_root=base / "cdi",
        simulate=PROFILE,
        kubelet_registrar_directory_path=base / "reg",
        kubelet_plugins_directory_path=base / "plugins",
    )


def _serve_in_thread(config: PluginConfig, kube: FakeKube, stop: threading.Event) -> futures.Future[None]:
    """Run ``serve`` until ``stop`` in a thread; the future holds what it raised."""

    def run() -> None:
        with serve(config, kube=kube):
            stop.wait(30)

    pool = futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


def _prepare_in_thread(kubelet: KubeletClient, sock: Path, ref: ClaimRef) -> futures.Future[PrepareResult]:
    plugin = kubelet.register(sock)
    pool = futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(lambda: plugin.prepare([ref])[ref.uid])
    pool.shutdown(wait=False)
    return future


@pytest.mark.parametrize("failure", [None, errors.KubeUnavailable("the API server went away", status=503)])
def test_a_call_before_the_driver_is_ready_waits_for_it(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception | None
) -> None:
    """Registered while the driver is still being built, a prepare waits; it succeeds once the driver is
    ready, or, when the start-up fails, gets UNAVAILABLE naming the cause while ``serve`` raises it and
    removes the sockets."""
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    config, kube, stop = _config(sockdir), HeldKube(), threading.Event()
    kube.add_node(NODE)
    meta = kube.add_claim(allocated_claim([result("gpu-0")]))["metadata"]
    ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    sock = config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock"
    serving = _serve_in_thread(config, kube, stop)
    try:
        wait_for("the registration socket", sock.exists)
        with KubeletClient(config.kubelet_registrar_directory_path) as kubelet:
            call = _prepare_in_thread(kubelet, sock, ref)
            time.sleep(0.3)
            assert not call.done() and not kube.resource_slices()  # waiting; nothing published yet
            kube.fail = failure
            kube.release.set()
            if failure is None:
                assert call.result(30).error == ""
                assert wait_for("the ResourceSlice", kube.resource_slices)
            else:
                with pytest.raises(PluginRpcError) as refused:
                    call.result(30)
                assert refused.value.code == "UNAVAILABLE"
                assert "start-up failed: the API server went away" in str(refused.value)
                with pytest.raises(errors.KubeUnavailable):
                    serving.result(30)
                assert not sock.exists() and not kube.resource_slices()
    finally:
        kube.release.set()
        stop.set()
    if failure is None:
        serving.result(30)


@pytest.mark.skipif(not SCRIPT.exists(), reason=f"console script not installed at {SCRIPT}")
def test_a_start_up_failing_after_the_sockets_exits_nonzero(sockdir: Path) -> None:
    """``nvdra-gpu-plugin`` with a flag value only the driver build rejects (--consumable-shares) serves
    its sockets first, then exits 1 with one line naming the value, and leaves no socket behind."""
    store = FakeKube()
    store.add_node(NODE)
    with ApiServer(store) as server:
        config = plugin_config(sockdir, server)
        args = [
            *("--node-name", NODE, "--simulate", PROFILE, "--kubeconfig", config.kubeconfig),
            *("--cdi-root", str(config.cdi_root)),
            *("--kubelet-registrar-directory-path", str(config.kubelet_registrar_directory_path)),
            *("--kubelet-plugins-directory-path", str(config.kubelet_plugins_directory_path)),
            *("--feature-gates", "ConsumableShares=true", "--consumable-shares", "-3"),
        ]
        proc = subprocess.run(
            [str(SCRIPT), *args], env=clean_env(), capture_output=True, text=True, timeout=60, check=False
        )
    assert proc.returncode == 1, proc.stderr
    assert "registration server listening" in proc.stderr  # the sockets were served before it failed
    assert proc.stderr.rstrip().splitlines()[-1].startswith("nvdra-gpu-plugin: ")
    assert "-3" in proc.stderr.rstrip().splitlines()[-1]
    assert not (config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock").exists()
    assert not (config.kubelet_plugins_directory_path / DRIVER / "dra.sock").exists()
