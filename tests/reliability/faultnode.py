"""The crash-test harness: the real ``nvdra-gpu-plugin`` process on a simulated node whose hardware
outlives it, killed at named fault points, restarted, and checked.

A :class:`FaultNode` is one node: its directories, an in-process API server (which outlives every plugin
process, as the real one does), a fake Deployment controller (MPS daemons become ready), and
``--simulate-state`` so MIG devices, compute modes, time slices and Fabric Manager partitions survive a
SIGKILL. :meth:`FaultNode.observe` reads back everything a prepare can change — the simulated hardware, the
Fabric Manager, vfio bindings, MPS Deployments and directories, CDI specs, leftover temp files and the
checkpoint — as plain data with the node's paths normalised away, so that two nodes can be compared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from nvdra.core.checkpoint import decode_checkpoint
from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, PluginRpcError, PrepareResult
from nvdra.kubeletplugin.objects import DEPLOYMENTS
from nvdra.plugins.pluginconfig import simulated_profile_dir
from tests.plugin_harness import wait_for

SCRIPT = Path(sys.executable).parent / "nvdra-gpu-plugin"
DRIVER = "gpu.nvidia.com"
DRIVER_READY = f"DRA plugin {DRIVER}: driver ready".encode()  # the helper's line once start-up is done
NODE = "n1"
NAMESPACE = "nvdra"
JsonObject = dict[str, Any]

# The script's environment twins and the fault switches: scrubbed so a developer's shell cannot leak in.
_SCRUB = (
    "NODE_NAME",
    "NAMESPACE",
    "CDI_ROOT",
    "KUBECONFIG",
    "FEATURE_GATES",
    "NVDRA_SIMULATE",
    "NVDRA_SIMULATE_STATE",
    "NVDRA_FAULT_POINT",
    "POD_UID",
    "FABRIC_TOPOLOGY_SUPPORT",
    "NVDRA_SIMULATE_FABRIC_MODE",
    "KUBELET_REGISTRAR_DIRECTORY_PATH",
    "KUBELET_PLUGINS_DIRECTORY_PATH",
    "HEALTHCHECK_PORT",
    "HTTP_ENDPOINT",
)


@attrs.frozen(kw_only=True)
class Scenario:
    """One kind of claim on one simulated node: what the fault matrix prepares, crashes and checks."""

    name: str
    profile: str
    gates: str
    claims: tuple[JsonObject, ...]
    hidden: frozenset[str] = frozenset()  # published devices hidden while the claims are prepared
    env: Mapping[str, str] = attrs.field(factory=dict)
    cdi_in_memory: bool = False  # the CDI root on tmpfs, as /var/run/cdi is on most nodes

    def refs(self) -> list[ClaimRef]:
        """The kubelet's references to the scenario's claims."""
        return [
            ClaimRef(
                namespace=c["metadata"]["namespace"], name=c["metadata"]["name"], uid=c["metadata"]["uid"]
            )
            for c in self.claims
        ]

    def devices(self) -> list[tuple[str, str]]:
        """(request, device) of every allocated device of the scenario's claims."""
        return [
            (r["request"], r["device"])
            for c in self.claims
            for r in c["status"]["allocation"]["devices"]["results"]
        ]


class Plugin:
    """One plugin process; its output goes to the node's log."""

    def __init__(self, node: FaultNode, fault: str, env: Mapping[str, str]) -> None:
        self.node = node
        self.fault = fault
        with node.log.open("ab") as log:
            log.write(f"\n===== start (fault {fault or 'none'}) =====\n".encode())
            log.flush()
            self.log_start = log.tell()  # this process's lines come after it
            self.proc = subprocess.Popen([str(SCRIPT), *node.flags()], env=dict(env), stdout=log, stderr=log)

    def output(self) -> str:
        """The node's whole log (every process so far)."""
        return self.node.log.read_text(errors="replace")

    def wait_registered(self) -> KubeletClient:
        """Wait for the sockets and the end of the start-up repair (the sockets are served before it:
        the helper logs the driver ready after it); returns a kubelet client (caller closes it)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"plugin exited with {self.proc.returncode}:\n{self.output()}")
            logged = self.node.log.read_bytes()[self.log_start :]
            sockets = _accepts(self.node.registration_socket) and _accepts(self.node.dra_socket)
            return sockets and DRIVER_READY in logged

        wait_for("the plugin's sockets", ready)
        return KubeletClient(self.node.registrar)

    def wait_killed(self) -> None:
        """The process must die of its own SIGKILL at the armed fault point."""
        code = self.proc.wait(timeout=30)
        assert code == -signal.SIGKILL, f"exit {code}, expected SIGKILL at {self.fault}:\n{self.output()}"
        name = self.fault.split(":", 1)[0]
        assert f"fault point '{name}' reached" in self.output(), self.output()

    def stop(self) -> None:
        """SIGTERM and a clean exit."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0, self.output()

    def ensure_dead(self) -> None:
        """Kill it if a failing test left it running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _accepts(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class FaultNode:
    """One simulated node, its API server and its plugin processes (see the module docstring)."""

    def __init__(self, base: Path, scenario: Scenario, server: ApiServer) -> None:
        self.base = base
        self.scenario = scenario
        self.server = server
        self.kubeconfig = server.write_kubeconfig(base / "kubeconfig")
        self.cdi_root = base / "cdi"
        self.registrar = base / "reg"
        self.plugins = base / "plugins"
        self.plugin_dir = self.plugins / DRIVER
        self.state = base / "hw"  # --simulate-state; this node's files are in hw/<profile> (self.hw)
        self.hw = simulated_profile_dir(self.state, scenario.profile)
        self.registration_socket = self.registrar / f"{DRIVER}-reg.sock"
        self.dra_socket = self.plugin_dir / "dra.sock"
        self.log = base / "plugin.log"
        self.processes: list[Plugin] = []
        for claim in scenario.claims:
            self.store.add_claim(claim)

    @property
    def store(self) -> FakeKube:
        """The API server's objects."""
        return self.server.store

    def flags(self) -> list[str]:
        """The plugin's command line."""
        return [
            "--simulate",
            self.scenario.profile,
            "--simulate-state",
            str(self.state),
            "--node-name",
            NODE,
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cdi-root",
            str(self.cdi_root),
            "--kubelet-registrar-directory-path",
            str(self.registrar),
            "--kubelet-plugins-directory-path",
            str(self.plugins),
            "--feature-gates",
            self.scenario.gates,
        ]

    def start(self, fault: str = "", **env: str) -> Plugin:
        """Start a plugin process, armed at ``fault`` (``name`` or ``name:N``) if given."""
        environ = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        environ.update(self.scenario.env)
        environ.update(env)
        if fault:
            environ["NVDRA_FAULT_POINT"] = fault
        plugin = Plugin(self, fault, environ)
        self.processes.append(plugin)
        return plugin

    # -- the kubelet's calls -------------------------------------------------------------------------

    def prepare(
        self, kubelet: KubeletClient, refs: Sequence[ClaimRef] | None = None
    ) -> dict[str, PrepareResult] | None:
        """Register and prepare (the scenario's claims by default); None when the plugin died mid-call."""
        try:
            return kubelet.register(self.registration_socket).prepare(refs or self.scenario.refs())
        except PluginRpcError:
            return None

    def unprepare(
        self, kubelet: KubeletClient, refs: Sequence[ClaimRef] | None = None
    ) -> dict[str, str] | None:
        """Register and unprepare; None when the plugin died mid-call."""
        try:
            return kubelet.register(self.registration_socket).unprepare(refs or self.scenario.refs())
        except PluginRpcError:
            return None

    # -- what the node looks like ----------------------------------------------------------------------

    def published(self) -> set[str]:
        """Device names in this node's ResourceSlices."""
        return {d["name"] for s in self.store.resource_slices() for d in s["spec"].get("devices", [])}

    def _norm(self, text: str) -> str:
        return text.replace(str(self.base), "<base>")

    def hardware(self) -> JsonObject:
        """The simulated GPUs as their state file holds them (GI/CI ids included)."""
        path = self.hw / "nvml.json"
        doc = json.loads(path.read_text()) if path.exists() else {"gpus": []}
        return {g["uuid"]: {k: v for k, v in g.items() if k != "uuid"} for g in doc["gpus"]}

    def fabric_active(self) -> list[int]:
        """Fabric Manager's active partitions."""
        path = self.hw / "fabric-manager.json"
        return sorted(json.loads(path.read_text())["active"]) if path.exists() else []

    def vfio(self) -> JsonObject:
        """Driver bound to each GPU function, and persistence mode, in the simulated sysfs."""
        root = self.hw / "sysfs"
        devices = root / "sys" / "bus" / "pci" / "devices"
        if not devices.is_dir():
            return {}
        drivers = {}
        for dev in sorted(devices.iterdir()):
            link = dev / "driver"
            drivers[dev.name] = os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else None
        state_file = root / "host-state.json"
        persistence = json.loads(state_file.read_text()).get("persistence", {}) if state_file.exists() else {}
        return {"drivers": drivers, "persistence": persistence}

    def deployments(self) -> dict[str, JsonObject]:
        """MPS Deployments in the API (server-set metadata and status dropped, paths normalised)."""
        out = {}
        for dep in self.store.list_objects(DEPLOYMENTS, NAMESPACE):
            out[dep["metadata"]["name"]] = json.loads(self._norm(json.dumps(dep["spec"], sort_keys=True)))
        return out

    def mps_dirs(self) -> list[str]:
        """``<plugin dir>/mps/<id>`` directories."""
        root = self.plugin_dir / "mps"
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    def specs(self) -> dict[str, str]:
        """CDI spec files and their content (paths normalised)."""
        if not self.cdi_root.is_dir():
            return {}
        return {p.name: self._norm(p.read_text()) for p in sorted(self.cdi_root.iterdir()) if p.is_file()}

    def temp_files(self) -> list[str]:
        """Temp files of interrupted atomic writes in the CDI root and the plugin dir."""
        found = []
        for d in (self.cdi_root, self.plugin_dir):
            if d.is_dir():
                found += [p.name for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        return sorted(found)

    def checkpoint(self) -> JsonObject:
        """The checkpoint's claims (boot id left out: it is per node)."""
        path = self.plugin_dir / "checkpoint.json"
        if not path.exists():
            return {}
        cp = decode_checkpoint(path.read_bytes())
        return {
            uid: {
                "state": c.state,
                "devices": sorted((d.device_name, d.cdi_device_ids) for d in c.devices),
                "applied": [dict(a) for a in c.applied],
            }
            for uid, c in sorted(cp.claims.items())
        }

    def observe(self) -> JsonObject:
        """Everything above, one dict."""
        return {
            "hardware": self.hardware(),
            "fabric": self.fabric_active(),
            "vfio": self.vfio(),
            "deployments": self.deployments(),
            "mps_dirs": self.mps_dirs(),
            "specs": self.specs(),
            "temp_files": self.temp_files(),
            "checkpoint": self.checkpoint(),
        }


@contextmanager
def deployment_controller(store: FakeKube) -> Iterator[None]:
    """What the kube controller does once an MPS daemon pod runs: mark new Deployments ready."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.02):
            for dep in store.list_objects(DEPLOYMENTS, NAMESPACE):
                if not (dep.get("status") or {}).get("readyReplicas"):
                    dep["status"] = {"readyReplicas": 1, "replicas": 1}
                    store.update_object(DEPLOYMENTS, dep, status=True)

    thread = threading.Thread(target=run, name="fake-deployment-controller", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- invariants --------------------------------------------------------------------------------------

_MIG = "mig.create"


def records(obs: JsonObject, *, completed_only: bool = False) -> list[JsonObject]:
    """Every effect record in an observed checkpoint."""
    return [
        r
        for c in obs["checkpoint"].values()
        if not completed_only or c["state"] == "PrepareCompleted"
        for r in c["applied"]
    ]


def live(obs: JsonObject) -> JsonObject:
    """What exists on the node that a prepare makes, keyed like the records that make it."""
    mig = sorted(
        (uuid, gi["profileId"], gi["start"])
        for uuid, gpu in obs["hardware"].items()
        for gi in gpu["gpuInstances"]
    )
    vfio = obs["vfio"].get("drivers", {}) if obs["vfio"] else {}
    return {
        "mig": mig,
        "fabric": obs["fabric"],
        "vfio": sorted(a for a, d in vfio.items() if d == "vfio-pci"),
        "mps": sorted(obs["deployments"]),
        "mps_dirs": obs["mps_dirs"],
        "timeslice": sorted(u for u, g in obs["hardware"].items() if g["timeslice"]),
        "exclusive": sorted(u for u, g in obs["hardware"].items() if g["computeMode"] == 3),
        "specs": sorted(obs["specs"]),
    }


def accounted(obs: JsonObject, *, completed_only: bool) -> JsonObject:
    """What the checkpoint's records say should exist (``completed_only``: after a start's rollback)."""
    rs = records(obs, completed_only=completed_only)
    claims = [
        u for u, c in obs["checkpoint"].items() if not completed_only or c["state"] == "PrepareCompleted"
    ]
    return {
        "mig": sorted((r["parent"], r["profileId"], r["start"]) for r in rs if r["kind"] == _MIG),
        "fabric": sorted(
            {r["partitionId"] for r in rs if r["kind"] == "fabric-partition" and r.get("activate")}
        ),
        "vfio": sorted(r["address"] for r in rs if r["kind"] == "vfio-pci"),
        "mps": sorted(f"mps-control-daemon-{r['id']}" for r in rs if r["kind"] == "mps"),
        "mps_dirs": sorted(r["id"] for r in rs if r["kind"] == "mps"),
        "timeslice": sorted({g for r in rs if r["kind"] == "timeslice" and r["interval"] for g in r["gpus"]}),
        "exclusive": sorted({g for r in rs if r["kind"] == "mps" for g in r["computeModeGpus"]}),
        "specs": sorted(f"k8s.gpu.nvidia.com-claim_{u}.yaml" for u in claims),
    }


def check_agreement(obs: JsonObject) -> None:
    """After a start: no half-done entry, no temp file; the node holds exactly what the checkpoint says."""
    assert obs["temp_files"] == [], obs["temp_files"]
    states = {u: c["state"] for u, c in obs["checkpoint"].items()}
    assert all(s == "PrepareCompleted" for s in states.values()), states
    assert live(obs) == accounted(obs, completed_only=True)


def check_nothing_unaccounted(obs: JsonObject) -> None:
    """Mid-unprepare: everything on the node is accounted for by a checkpoint entry (undo may be partial)."""
    assert obs["temp_files"] == [], obs["temp_files"]
    have, known = live(obs), accounted(obs, completed_only=False)
    for key, items in have.items():
        assert set(items) <= set(known[key]), (key, items, known[key])


def no_double_allocation(node: FaultNode, kubelet: KubeletClient, prepared: bool) -> None:
    """A second claim for the same devices is refused while the first is held (naming the device)."""
    from tests.plugins.conftest import allocated_claim, result

    results = [result(device, request=request, pool=NODE) for request, device in node.scenario.devices()]
    other = allocated_claim(
        results, config=node.scenario.claims[0]["status"]["allocation"]["devices"]["config"]
    )
    meta = node.store.add_claim(other)["metadata"]
    ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    answer = node.prepare(kubelet, [ref])
    assert answer is not None
    if prepared:
        assert "already prepared for claim" in answer[ref.uid].error, answer[ref.uid]
    else:
        assert answer[ref.uid].error == "", answer[ref.uid]
        assert node.unprepare(kubelet, [ref]) == {ref.uid: ""}


def expect_published(node: FaultNode, expected: set[str]) -> None:
    """The node's slices come to hold exactly ``expected`` (the publisher runs in the background)."""
    wait_for(f"published devices to be {len(expected)} names", lambda: node.published() == expected)
