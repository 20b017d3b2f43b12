"""The real ``nvdra-gpu-plugin`` console script as a child process, spoken to like a kubelet would.

Each test starts the installed entry point (next to ``sys.executable``) on a simulated dgx-h100
against an in-process :class:`ApiServer`, and talks to it only through its files: the kubeconfig,
the registration and DRA sockets, the CDI directory and the checkpoint. Signals are real: SIGTERM
must end it cleanly, SIGKILL must not lose prepared claims.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.checkpoint import Checkpoint, ClaimState, DeviceRecord, PreparedClaim
from nvdra.core.devices import Inventory
from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient
from nvdra.nvml import load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.cdi import GpuClaimSpecs
from nvdra.plugins.gpu.devices import allocatable_devices
from nvdra.plugins.pluginconfig import simulated_profile_dir
from nvdra.plugins.state import CheckpointStore, read_boot_id
from tests.plugin_harness import clean_env, wait_for
from tests.plugins.conftest import DRIVER, NODE, PROFILE, allocated_claim, result, spec_files

SCRIPT = Path(sys.executable).parent / "nvdra-gpu-plugin"
DRIVER_READY = f"DRA plugin {DRIVER}: driver ready".encode()  # the helper's line once start-up is done
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason=f"console script not installed at {SCRIPT}")


JsonObject = dict[str, Any]


def accepts(path: Path) -> bool:
    """Whether a unix socket at ``path`` accepts a connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class Node:
    """The directories of one simulated node plus the API server the plugin talks to."""

    def __init__(self, base: Path, server: ApiServer) -> None:
        self.base = base
        self.server = server
        self.kubeconfig = server.write_kubeconfig(base / "kubeconfig")
        self.cdi_root = base / "cdi"
        self.registrar = base / "reg"
        self.plugins = base / "plugins"
        self.plugin_dir = self.plugins / DRIVER
        self.registration_socket = self.registrar / f"{DRIVER}-reg.sock"
        self.dra_socket = self.plugin_dir / "dra.sock"
        self.log = base / "plugin.log"

    @property
    def store(self) -> FakeKube:
        """The API server's objects."""
        return self.server.store

    def flags(self) -> list[str]:
        """The command line of a plugin for this node, all settings given as flags."""
        return [
            "--simulate",
            PROFILE,
            "--node-name",
            NODE,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cdi-root",
            str(self.cdi_root),
            "--kubelet-registrar-directory-path",
            str(self.registrar),
            "--kubelet-plugins-directory-path",
            str(self.plugins),
        ]

    def add_claim(self, claim: JsonObject) -> ClaimRef:
        """Store an allocated claim; return the kubelet's reference to it."""
        meta = self.store.add_claim(claim)["metadata"]
        return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def spec(self, uid: str) -> Path:
        """Where the plugin writes claim ``uid``'s CDI spec."""
        return self.cdi_root / f"k8s.gpu.nvidia.com-claim_{uid}.yaml"


class PluginProcess:
    """A running ``nvdra-gpu-plugin`` child; its output goes to the node's log file."""

    def __init__(self, node: Node, args: list[str], env: Mapping[str, str]) -> None:
        self.node = node
        with node.log.open("ab") as log:
            self.log_start = log.tell()  # this process's lines come after it
            self.proc = subprocess.Popen([str(SCRIPT), *args], env=dict(env), stdout=log, stderr=log)

    def output(self) -> str:
        """Everything the plugin logged so far (for failure messages)."""
        return self.node.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        """Wait until both sockets accept connections and the driver is ready (the sockets are served
        first; the start-up repair is done once the helper logs the driver ready).

        Accepting, not just existing: a SIGKILLed predecessor leaves its socket files behind.
        """

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"plugin exited with {self.proc.returncode}:\n{self.output()}")
            logged = self.node.log.read_bytes()[self.log_start :]
            sockets = accepts(self.node.registration_socket) and accepts(self.node.dra_socket)
            return sockets and DRIVER_READY in logged

        wait_for("the plugin's sockets", ready)

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` and return the exit status."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"plugin did not exit after {sig.name}:\n{self.output()}") from None

    def ensure_dead(self) -> None:
        """Kill the child if a test left it running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def node(sockdir: Path) -> Iterator[Node]:
    """A node (n1) known to a fresh in-process API server."""
    store = FakeKube()
    store.add_node(NODE)
    with ApiServer(store) as server:
        yield Node(sockdir, server)


@pytest.fixture
def launch(node: Node) -> Iterator[Callable[..., PluginProcess]]:
    """Start plugin processes (flags by default); every one is killed at teardown if still alive."""
    started: list[PluginProcess] = []

    def start(args: list[str] | None = None, env: Mapping[str, str] | None = None) -> PluginProcess:
        process = PluginProcess(node, node.flags() if args is None else args, env or clean_env())
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.ensure_dead()


def prepare_and_unprepare(node: Node, api: str) -> None:
    """Register over ``api``, prepare a fresh one-GPU claim, find its spec, unprepare, spec gone."""
    ref = node.add_claim(allocated_claim([result("gpu-1")]))
    with KubeletClient(node.registrar) as kubelet:
        plugin = kubelet.register(node.registration_socket, api=api)
        assert plugin.api_version == api
        assert plugin.info.endpoint == str(node.dra_socket)
        answer = plugin.prepare([ref])[ref.uid]
        assert answer.error == ""
        assert answer.devices[0].cdi_device_ids == (f"k8s.gpu.nvidia.com/claim={ref.uid}-gpu-1",)
        assert node.spec(ref.uid).is_file()
        assert plugin.unprepare([ref]) == {ref.uid: ""}
        assert not node.spec(ref.uid).exists()


def test_script_serves_both_api_versions_publishes_and_stops_on_sigterm(
    node: Node, launch: Callable[..., PluginProcess]
) -> None:
    """Flags only: register, slice gpu-0…gpu-7, prepare/unprepare over v1 and v1beta1, SIGTERM exits 0."""
    process = launch()

    prepare_and_unprepare(node, "v1")
    prepare_and_unprepare(node, "v1beta1")
    slices = wait_for("the ResourceSlice", node.store.resource_slices)
    assert [d["name"] for d in slices[0]["spec"]["devices"]] == [f"gpu-{i}" for i in range(8)]
    assert slices[0]["spec"]["nodeName"] == NODE

    assert process.stop(signal.SIGTERM) == 0, process.output()
    assert not node.registration_socket.exists()
    assert not node.dra_socket.exists()


def test_environment_twins_replace_the_flags(node: Node, launch: Callable[..., PluginProcess]) -> None:
    """Upstream's env names (NODE_NAME, CDI_ROOT, NVDRA_SIMULATE, …) configure the plugin without flags."""
    env = clean_env(
        NODE_NAME=NODE,
        CDI_ROOT=str(node.cdi_root),
        NVDRA_SIMULATE=PROFILE,
        KUBECONFIG=str(node.kubeconfig),
        KUBELET_REGISTRAR_DIRECTORY_PATH=str(node.registrar),
        KUBELET_PLUGINS_DIRECTORY_PATH=str(node.plugins),
    )
    process = launch(args=[], env=env)

    prepare_and_unprepare(node, "v1")
    assert wait_for("the ResourceSlice", node.store.resource_slices)[0]["spec"]["pool"]["name"] == NODE
    assert process.stop(signal.SIGTERM) == 0, process.output()


UPSTREAM_FLAGS = (
    "--node-name",
    "--namespace",
    "--cdi-root",
    "--nvidia-driver-root",
    "--container-driver-root",
    "--nvidia-cdi-hook-path",
    "--image-name",
    "--kubelet-registrar-directory-path",
    "--kubelet-plugins-directory-path",
    "--healthcheck-port",
    "--additional-xids-to-ignore",
    "--http-endpoint",
    "--metrics-path",
    "--kubeconfig",
    "--kube-api-qps",
    "--kube-api-burst",
    "--feature-gates",
)


def test_help_lists_upstream_flags_and_env_names() -> None:
    """--help names every upstream flag and its environment twin, plus --simulate."""
    done = subprocess.run(
        [str(SCRIPT), "--help"], env=clean_env(), capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # undo click's line wrapping
    for flag in (*UPSTREAM_FLAGS, "--simulate"):
        assert flag in text, flag
    for env in ("NODE_NAME", "CDI_ROOT", "KUBELET_PLUGINS_DIRECTORY_PATH", "FEATURE_GATES", "NVDRA_SIMULATE"):
        assert env in text, env


@pytest.mark.parametrize(
    ("gates", "named"),
    [("NoSuchGate=true", "NoSuchGate"), ("MPSSupport=maybe", "MPSSupport")],
    ids=["unknown-gate", "bad-value"],
)
def test_bad_feature_gates_exit_nonzero_naming_the_gate(node: Node, gates: str, named: str) -> None:
    """A bad --feature-gates value stops the plugin at once with a message naming the gate."""
    done = subprocess.run(
        [str(SCRIPT), *node.flags(), "--feature-gates", gates],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert not node.registration_socket.exists()


def test_prepared_claim_survives_sigkill(node: Node, launch: Callable[..., PluginProcess]) -> None:
    """After SIGKILL following a prepare, a restarted plugin still unprepares the claim (spec removed)."""
    ref = node.add_claim(allocated_claim([result("gpu-6")]))
    first = launch()
    with KubeletClient(node.registrar) as kubelet:
        assert kubelet.register(node.registration_socket).prepare([ref])[ref.uid].error == ""
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert node.spec(ref.uid).is_file()
    assert node.registration_socket.is_socket()  # left behind: the new process must replace it

    second = launch()
    with KubeletClient(node.registrar) as kubelet:
        plugin = kubelet.register(node.registration_socket)
        # The claim is still held: another claim cannot get gpu-6.
        other = node.add_claim(allocated_claim([result("gpu-6")]))
        assert "gpu-6" in plugin.prepare([other])[other.uid].error
        assert plugin.unprepare([ref]) == {ref.uid: ""}
    assert not node.spec(ref.uid).exists()
    assert second.stop(signal.SIGTERM) == 0, second.output()


def seed_half_done_prepare(node: Node, inventory: Inventory, completed_uid: str, started_uid: str) -> None:
    """Leave what a plugin killed mid-prepare leaves: a PrepareStarted entry with its spec written.

    A completed claim (entry + spec) is seeded next to it. Specs are rendered over the same driver
    root the plugin will generate, so they are exactly what the plugin itself would have written.
    """
    node.plugin_dir.mkdir(parents=True)
    root = make_simulated_driver_root(
        load_profile(PROFILE), simulated_profile_dir(node.plugin_dir / "simulated", PROFILE) / "driver-root"
    )
    specs = GpuClaimSpecs(
        cdi_root=node.cdi_root,
        host_driver_root=root,
        container_driver_root=root,
        driver_version=inventory.driver_version,
    )
    devices = allocatable_devices(inventory)
    seeds: list[tuple[str, str, ClaimState]] = [
        (completed_uid, "gpu-0", ClaimState.PREPARE_COMPLETED),
        (started_uid, "gpu-1", ClaimState.PREPARE_STARTED),
    ]
    checkpoint = Checkpoint(node_boot_id=read_boot_id())
    for uid, device, state in seeds:
        specs.write(uid, [devices[device]])
        record = DeviceRecord(
            requests=("gpu",),
            pool_name=NODE,
            device_name=device,
            cdi_device_ids=(specs.device_id(uid, device),),
        )
        checkpoint = checkpoint.with_claim(
            PreparedClaim(
                uid=uid, namespace="default", name=f"claim-{device}", state=state, devices=(record,)
            )
        )
    CheckpointStore(node.plugin_dir / "checkpoint.json", boot_id=read_boot_id()).save(checkpoint)


def test_restart_rolls_back_a_prepare_that_never_completed(
    node: Node, inventory: Inventory, launch: Callable[..., PluginProcess]
) -> None:
    """A PrepareStarted entry and its spec are gone once the plugin is up; a completed claim is kept."""
    completed = "aaaaaaaa-0000-0000-0000-000000000001"
    started = "bbbbbbbb-0000-0000-0000-000000000002"
    seed_half_done_prepare(node, inventory, completed, started)
    assert {p.name for p in spec_files(node.cdi_root)} == {node.spec(completed).name, node.spec(started).name}

    process = launch()

    assert spec_files(node.cdi_root) == [node.spec(completed)]
    checkpoint, _ = CheckpointStore(node.plugin_dir / "checkpoint.json", boot_id=read_boot_id()).load()
    assert set(checkpoint.claims) == {completed}
    with KubeletClient(node.registrar) as kubelet:
        plugin = kubelet.register(node.registration_socket)
        ref = ClaimRef(namespace="default", name="claim-gpu-0", uid=completed)
        assert plugin.unprepare([ref]) == {completed: ""}
    assert spec_files(node.cdi_root) == []
    assert process.stop(signal.SIGTERM) == 0, process.output()
