"""A simulated multi-node cluster for ComputeDomains: the real plugin, controller and daemon code, in-process.

What is simulated is only what Kubernetes itself would do: the DaemonSet controller (a daemon pod per
node matching the DaemonSet's node selector, removed when the node stops matching or the DaemonSet goes),
the ResourceClaim controller and scheduler (a claim from a template, allocated to ``daemon-0`` /
``channel-0`` of the node's pool), the kubelet (NodePrepareResources over the plugin's real unix
sockets — or straight into the driver object when ``sockets=False``, for scale runs — applying the CDI
spec the plugin wrote to start the daemon container, running the ``check`` probe, setting the pod's
Ready condition) and the container runtime (per-pod ``/etc/hosts``, the fake ``nvidia-imex``).

Everything moves in rounds (:meth:`SimCluster.step`): the controller's pass, the DaemonSet controller,
then each node's kubelet and daemons. Each node is a simulated ``gb200-nvl72-tray``; ``clique_of(i)``
picks its NVLink clique (default: 18 trays per clique, an NVL72 rack each). API traffic of the drivers
goes through :class:`~nvdra.plugins.computedomain.kube.CountingApi` so writes and conflicts are measured.
"""

from __future__ import annotations

__all__ = ["CLUSTER_UUID", "ProcessDaemon", "SimCluster", "SimNode", "rack_clique"]

import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import attrs

from nvdra.cdi import ContainerEdits, read_spec
from nvdra.core.errors import KubeNotFound
from nvdra.imex import CD_DRIVER_NAME, DOMAIN_LABEL, Settings, daemon_set_name, pod_ready
from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, RegisteredPlugin
from nvdra.kubeletplugin.objects import (
    DAEMON_SETS,
    NODES,
    PODS,
    RESOURCE_CLAIM_TEMPLATES,
    RESOURCE_CLAIMS,
)
from nvdra.kubeletplugin.store.selectors import match_labels
from nvdra.kubeletplugin.types import JsonObject
from nvdra.plugins.computedomain.controller import ComputeDomainController
from nvdra.plugins.computedomain.daemon import DaemonSettings, ImexDaemon
from nvdra.plugins.computedomain.fakeimex import FakeImexRunner, ImexFabric
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS, CountingApi
from nvdra.plugins.computedomain.serve import CdPluginConfig, RunningCdPlugin, serve

CLUSTER_UUID = "8c1f3e52-6a0d-4b7e-9f24-3d95a1c7e0b6"


def rack_clique(index: int, per_clique: int = 18) -> int:
    """Clique id of node ``index`` when racks of ``per_clique`` trays each form one clique (ids from 1)."""
    return index // per_clique + 1


class _DaemonHandle(Protocol):
    """A running daemon container as the kubelet stand-in drives it."""

    def step(self) -> None: ...

    def check(self) -> bool: ...

    def shutdown(self) -> None: ...


@attrs.define
class _Pod:
    name: str
    claim: ClaimRef
    daemon: _DaemonHandle


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of a command word (``$$`` escapes, unknown names stay)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


class ProcessDaemon:
    """A daemon container run as an OS process, from the pod the DaemonSet controller made.

    The container is what a runtime would build from the pod spec and the claim's CDI spec: the
    command, ``$(VAR)``-expanded, with the pod's env (values and downward-API fields) plus the CDI
    env; the CDI mounts as symlinks under a directory standing in for the container's root
    (``NVDRA_DAEMON_ROOT``), next to the kubelet-managed ``etc/hosts``; ``PATH`` is this
    interpreter's bin directory and ``/usr/bin:/bin``, so the IMEX binaries are found only where the
    spec mounts them. The probe is the pod's readiness ``exec`` command in the same environment.
    Device nodes are symlinks to the simulated host's regular files, like the mounts.
    """

    def __init__(self, pod: JsonObject, edits: ContainerEdits, root: Path, env: Mapping[str, str]) -> None:
        container = pod["spec"]["containers"][0]
        self.user = (container.get("securityContext") or {}).get("runAsUser")
        self.root = root
        # Mounts and device nodes alike: the simulated host's nodes are regular files.
        for path, host_path in [(m.container_path, m.host_path) for m in edits.mounts] + [
            (d.path, d.host_path or d.path) for d in edits.device_nodes
        ]:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():
                target.symlink_to(host_path)
        values: dict[str, str] = {}
        fields = {
            "spec.nodeName": pod["spec"]["nodeName"],
            "status.podIP": (pod.get("status") or {}).get("podIP", ""),
            "metadata.uid": pod["metadata"].get("uid", ""),
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"],
        }
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("fieldRef")
            values[item["name"]] = fields[ref["fieldPath"]] if ref else _expand(item.get("value", ""), values)
        values.update(e.partition("=")[::2] for e in edits.env)
        self.env = {**values, **env, "NVDRA_DAEMON_ROOT": str(root)}
        self.command = [_expand(word, self.env) for word in container["command"]]
        self.probe = [_expand(w, self.env) for w in container["readinessProbe"]["exec"]["command"]]
        self.log_path = root.parent / "daemon.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=self._log)

    def step(self) -> None:
        """Nothing: the process runs its own loop."""

    def check(self) -> bool:
        """The readiness probe: exit status 0."""
        done = subprocess.run(self.probe, env=self.env, capture_output=True, check=False, timeout=30)
        return done.returncode == 0

    def shutdown(self) -> None:
        """SIGTERM, as the kubelet stops a container, then wait (SIGKILL after 30 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class SimNode:
    """One node: its CD plugin, its kubelet stand-in, its daemon containers."""

    def __init__(self, cluster: SimCluster, index: int, clique: int) -> None:
        self.cluster = cluster
        self.name = f"node-{index:04d}"
        n = index + 1
        self.ip = f"{cluster.ip_base}.{(n >> 8) & 255}.{n & 255}"
        self.clique = clique
        self.base = cluster.base / self.name
        self.plugin: RunningCdPlugin | None = None
        self.kubelet: RegisteredPlugin | None = None
        self.pods: dict[str, _Pod] = {}
        self.pending: dict[str, ClaimRef] = {}  # workload claims not prepared yet
        self.prepared: dict[str, float] = {}  # workload claim uid -> when its channel was handed out
        self.daemon_ready_at: float | None = None
        self.errors: list[str] = []

    def config(self) -> CdPluginConfig:
        """The node's plugin flags (own directories under the cluster's base)."""
        short = self.cluster.sock_base / f"{self.name[-4:]}"
        return CdPluginConfig(
            node_name=self.name,
            namespace=self.cluster.namespace,
            cdi_root=self.base / "cdi",
            simulate="gb200-nvl72-tray",
            kubelet_registrar_directory_path=short / "reg",
            kubelet_plugins_directory_path=short / "plugins",
            feature_gates=self.cluster.feature_gates,
        )

    def start(self, stack: ExitStack, kubelet: KubeletClient | None) -> None:
        """Start the plugin (and register it with the kubelet stand-in)."""
        overrides = {"fabric": {"cluster_uuid": CLUSTER_UUID, "clique_id": self.clique}}
        api = self.cluster.api("plugin")
        self.plugin = stack.enter_context(
            serve(
                self.config(),
                kube=api,
                profile_overrides=overrides,
                ready_timeout_s=0.0,
                sockets=kubelet is not None,
            )
        )
        if kubelet is not None:
            assert self.plugin.helper is not None
            self.kubelet = kubelet.register(self.plugin.helper.registration_socket)

    def prepare(self, ref: ClaimRef) -> tuple[list[str], str]:
        """NodePrepareResources for one claim: (CDI ids, error)."""
        assert self.plugin is not None
        if self.kubelet is not None:
            res = self.kubelet.prepare([ref])[ref.uid]
        else:
            claim = self.cluster.store.objects.peek(RESOURCE_CLAIMS, ref.name, ref.namespace)
            res = self.plugin.driver.prepare_resource_claims([claim])[ref.uid]
        return [i for d in res.devices for i in d.cdi_device_ids], res.error

    def unprepare(self, ref: ClaimRef) -> str:
        """NodeUnprepareResources for one claim."""
        assert self.plugin is not None
        if self.kubelet is not None:
            return self.kubelet.unprepare([ref])[ref.uid]
        return self.plugin.driver.unprepare_resource_claims([ref])[ref.uid]

    def _start_pod(self, pod: JsonObject) -> None:
        name = pod["metadata"]["name"]
        tmpl = pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"]
        ref = self.cluster.claim_from_template(tmpl, pod["metadata"]["namespace"], self.name, "daemon-0")
        ids, error = self.prepare(ref)
        if error:
            self.errors.append(error)
            return
        # The container runtime applies the CDI spec: env and the /imexd mount come from it.
        spec = read_spec(self.plugin.driver.spec_path(ref.uid)) if self.plugin else None
        assert spec is not None and ids
        edits = spec.container_edits + spec.devices[0].container_edits
        env = dict(e.split("=", 1) for e in edits.env)
        imexd = Path(next(m.host_path for m in edits.mounts if m.container_path == "/imexd"))
        pod_dir = self.base / "pods" / name
        # The kubelet-managed hosts file, where a process container's root has its etc/hosts.
        hosts = pod_dir / "root/etc/hosts" if self.cluster.kubeconfig is not None else pod_dir / "hosts"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(f"127.0.0.1\tlocalhost\n{self.ip}\t{name}\n")
        settings = DaemonSettings(
            clique_id=env["CLIQUE_ID"],
            domain_uid=env["COMPUTE_DOMAIN_UUID"],
            domain_name=env["COMPUTE_DOMAIN_NAME"],
            domain_namespace=env["COMPUTE_DOMAIN_NAMESPACE"],
            node_name=self.name,
            pod_ip=self.ip,
            pod_name=name,
            pod_namespace=pod["metadata"]["namespace"],
            max_nodes=self.cluster.max_nodes,
            feature_gates=self.cluster.feature_gates,
            imexd_dir=imexd,
            hosts_path=hosts,
        )
        self.cluster.kubelet_write(
            PODS, name, pod["metadata"]["namespace"], {"status": {"phase": "Running", "podIP": self.ip}}
        )
        if self.cluster.kubeconfig is not None:
            pod = self.cluster.store.objects.peek(PODS, name, pod["metadata"]["namespace"])
            env = {
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
                "KUBECONFIG": str(self.cluster.kubeconfig),
            }
            process = ProcessDaemon(pod, edits, pod_dir / "root", env)
            self.pods[name] = _Pod(name=name, claim=ref, daemon=process)
            return
        daemon = ImexDaemon(settings, self.cluster.api("daemon"), FakeImexRunner(self.cluster.fabric, hosts))
        daemon.register()
        if "daemon" in self.cluster.apis:
            daemon.watch()
        self.pods[name] = _Pod(name=name, claim=ref, daemon=daemon)

    def _stop_pod(self, pod: _Pod) -> None:
        pod.daemon.shutdown()
        error = self.unprepare(pod.claim)
        if error:
            self.errors.append(error)
        self.cluster.store.objects.delete_object(RESOURCE_CLAIMS, pod.claim.name, pod.claim.namespace)
        del self.pods[pod.name]

    def step(self, pods: list[JsonObject] | None = None) -> None:
        """One kubelet round: start/stop daemon pods, run daemons and probes, retry pending prepares.

        ``pods``: this node's daemon pods when the caller listed them already (one list per round).
        """
        if pods is None:
            pods = self.cluster.daemon_pods().get(self.name, [])
        mine = {p["metadata"]["name"]: p for p in pods}
        for name in [n for n in self.pods if n not in mine]:
            self._stop_pod(self.pods[name])
        for name, pod in mine.items():
            if name not in self.pods:
                self._start_pod(pod)
        for name, running in self.pods.items():
            running.daemon.step()
            ready = running.daemon.check()
            if ready and self.daemon_ready_at is None:
                self.daemon_ready_at = time.monotonic()
            if ready != pod_ready(mine[name]):
                cond = {"type": "Ready", "status": "True" if ready else "False"}
                self.cluster.kubelet_write(
                    PODS, name, self.cluster.namespace, {"status": {"conditions": [cond]}}
                )
        for uid, ref in list(self.pending.items()):
            _, error = self.prepare(ref)
            if not error:
                self.prepared[uid] = time.monotonic()
                del self.pending[uid]
            elif "permanent" in error:
                self.errors.append(error)
                del self.pending[uid]


class SimCluster:
    """N simulated GB200 trays, one API store, the controller, and the Kubernetes stand-ins."""

    def __init__(
        self,
        base: Path,
        sock_base: Path,
        *,
        nodes: int,
        clique_of: Callable[[int], int] = rack_clique,
        sockets: bool = True,
        namespace: str = "nvdra",
        max_nodes: int = 18,
        feature_gates: str = "",
        process_daemons: bool = False,
        store: FakeKube | None = None,
        apis: Mapping[str, Any] | None = None,
        background_controller: bool = False,
    ) -> None:
        """``process_daemons``: run each daemon pod as an ``nvdra-cd-daemon`` process (see
        :class:`ProcessDaemon`) against an HTTP API server over the store, on loopback pod IPs
        ``127.<random>.<random>.<n>`` (unique per cluster), instead of in-process over the fake IMEX.

        ``store``: the objects (default: a new FakeKube). ``apis``: the API client each role
        ("controller", "plugin", "daemon") uses instead of the store itself — e.g. HTTP clients under
        the chart's ServiceAccounts; with them the daemons also watch, as the console script's do.
        ``background_controller``: the controller runs its own loop (informers, as in production) in a
        thread while rounds step only the Kubernetes stand-ins."""
        self.base, self.sock_base = base, sock_base
        # The first two octets of the pod IPs (the node index fills the other two).
        self.ip_base = f"127.{random.randrange(1, 255)}" if process_daemons else "10.0"
        self.kubeconfig: Path | None = None
        self._api_server: ApiServer | None = None
        self.namespace = namespace
        self.max_nodes = max_nodes
        self.feature_gates = feature_gates
        self.sockets = sockets
        self.store = store if store is not None else FakeKube()
        self.apis = dict(apis or {})
        self.background_controller = background_controller
        self._controller_stop = threading.Event()
        self._controller_thread: threading.Thread | None = None
        if process_daemons:
            self._api_server = ApiServer(self.store)
            for rt in (CLIQUES, COMPUTE_DOMAINS):
                self._api_server.register(rt)
        self.counter: Counter[tuple[str, str, str]] = Counter()
        self._count_lock = threading.Lock()
        self.fabric = ImexFabric()
        self.nodes = [SimNode(self, i, clique_of(i)) for i in range(nodes)]
        for node in self.nodes:
            self.store.add_node(node.name)
        self.controller = self.new_controller()
        self._stack = ExitStack()

    def api(self, role: str) -> Any:
        """The shared store (or the role's own client from ``apis``), counted under ``role``."""
        return CountingApi(self.apis.get(role, self.store), role, self.counter, self._count_lock)

    def new_controller(self) -> ComputeDomainController:
        """A fresh controller (as after a restart) over the shared store."""
        settings = Settings(
            namespace=self.namespace, max_nodes=self.max_nodes, feature_gates=self.feature_gates
        )
        return ComputeDomainController(self.api("controller"), settings)

    def __enter__(self) -> SimCluster:
        if self._api_server is not None:
            self._stack.enter_context(self._api_server)
            self.base.mkdir(parents=True, exist_ok=True)
            self.kubeconfig = self._api_server.write_kubeconfig(self.base / "kubeconfig")
        kubelet = None
        if self.sockets:
            kubelet = self._stack.enter_context(KubeletClient(self.sock_base / "kubelet"))
        try:
            for node in self.nodes:
                node.start(self._stack, kubelet)
        except BaseException:
            self._stack.close()
            raise
        if self.background_controller:
            self._controller_thread = threading.Thread(
                target=self.controller.run, args=(self._controller_stop,), name="controller", daemon=True
            )
            self._controller_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller_stop.set()
        if self._controller_thread is not None:
            self._controller_thread.join(10)
        for node in self.nodes:
            for pod in list(node.pods.values()):
                pod.daemon.shutdown()
        self._stack.close()

    # -- what Kubernetes does ---------------------------------------------------------------------

    def kubelet_write(self, rt: Any, name: str, namespace: str, patch: JsonObject) -> None:
        """A write the kubelet makes (not counted as a driver write)."""
        try:  # the kubelet writes pod status through the status subresource
            self.store.objects.patch_object(rt, name, patch, namespace, status="status" in patch)
        except KubeNotFound:
            return

    def claim_from_template(self, template: str, namespace: str, node: str, device: str) -> ClaimRef:
        """The claim controller and scheduler: a claim from ``template``, allocated on ``node``."""
        rct = self.store.objects.peek(RESOURCE_CLAIM_TEMPLATES, template, namespace)
        spec = rct["spec"]["spec"]
        request = spec["devices"]["requests"][0]["name"]
        config = [dict(c, source="FromClaim") for c in spec["devices"].get("config") or []]
        claim = {"metadata": {"generateName": f"{template[:40]}-", "namespace": namespace}, "spec": spec}
        made = self.store.objects.create_object(RESOURCE_CLAIMS, claim)
        meta = made["metadata"]
        allocation = {
            "devices": {
                "results": [{"request": request, "driver": CD_DRIVER_NAME, "pool": node, "device": device}],
                "config": config,
            }
        }
        # A create drops status; the scheduler writes the allocation through the status subresource.
        self.store.objects.patch_object(
            RESOURCE_CLAIMS,
            meta["name"],
            {"status": {"allocation": allocation}},
            meta["namespace"],
            status=True,
        )
        return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def daemon_set_step(self) -> None:
        """The DaemonSet controller: one pod per matching node; none for gone DaemonSets or nodes."""
        store = self.store.objects
        sets = {
            d["metadata"]["name"]: d
            for d in store.list_objects(DAEMON_SETS, self.namespace)
            if not d["metadata"].get("deletionTimestamp")
        }
        nodes = store.list_objects(NODES, label_selector=DOMAIN_LABEL)
        want: dict[str, JsonObject] = {}
        for ds_name, ds in sets.items():
            selector = ",".join(f"{k}={v}" for k, v in ds["spec"]["template"]["spec"]["nodeSelector"].items())
            for node in nodes:
                if match_labels(node["metadata"].get("labels") or {}, selector):
                    pod_name = f"{ds_name[:40]}-{node['metadata']['name']}"
                    want[pod_name] = {
                        "metadata": {
                            "name": pod_name,
                            "namespace": self.namespace,
                            "labels": dict(ds["spec"]["template"]["metadata"]["labels"]),
                        },
                        "spec": dict(ds["spec"]["template"]["spec"], nodeName=node["metadata"]["name"]),
                        "status": {"phase": "Pending"},
                    }
        have = {
            p["metadata"]["name"]
            for p in store.list_objects(PODS, self.namespace, label_selector=DOMAIN_LABEL)
        }
        for name in sorted(have - set(want)):
            store.delete_object(PODS, name, self.namespace)
        for name in sorted(set(want) - have):
            store.create_object(PODS, want[name])

    def daemon_pods(self) -> dict[str, list[JsonObject]]:
        """Live daemon pods by node name (what each kubelet's pod watch would deliver)."""
        out: dict[str, list[JsonObject]] = {}
        for p in self.store.objects.list_objects(PODS, self.namespace, label_selector=DOMAIN_LABEL):
            if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp"):
                out.setdefault(p["spec"]["nodeName"], []).append(p)
        return out

    def step(self) -> None:
        """One round: controller pass, DaemonSet controller, every node's kubelet."""
        if self.background_controller:
            time.sleep(0.02)  # the controller acts on its watch events in its own thread
        else:
            self.controller.reconcile_once()
        self.daemon_set_step()
        pods = self.daemon_pods()
        for node in self.nodes:
            node.step(pods.get(node.name, []))

    def run_until(self, what: str, done: Callable[[], bool], *, max_rounds: int = 200) -> int:
        """Step until ``done()``; the number of rounds it took. Raises AssertionError after ``max_rounds``."""
        for rounds in range(max_rounds):
            if done():
                return rounds
            self.step()
        raise AssertionError(f"not converged after {max_rounds} rounds: {what}")

    # -- what users do ----------------------------------------------------------------------------

    def create_domain(
        self, name: str, namespace: str = "default", *, num_nodes: int = 0, mode: str = "Single"
    ) -> JsonObject:
        """Create a ComputeDomain (its workload template is ``<name>-channel``)."""
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "numNodes": num_nodes,
                "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}, "allocationMode": mode},
            },
        }
        return self.store.objects.create_object(COMPUTE_DOMAINS, body)

    def domain(self, name: str, namespace: str = "default") -> JsonObject:
        """The stored ComputeDomain."""
        return self.store.objects.peek(COMPUTE_DOMAINS, name, namespace)

    def schedule_workload(self, cd: JsonObject, nodes: list[SimNode]) -> list[ClaimRef]:
        """One workload pod per node: a channel claim from the domain's template, allocated there."""
        template = cd["spec"]["channel"]["resourceClaimTemplate"]["name"]
        ns = cd["metadata"]["namespace"]
        self.run_until(
            "workload template",
            lambda: bool(
                self.store.objects.list_objects(
                    RESOURCE_CLAIM_TEMPLATES, ns, label_selector=f"{DOMAIN_LABEL}={cd['metadata']['uid']}"
                )
            ),
        )
        refs = []
        for node in nodes:
            ref = self.claim_from_template(template, ns, node.name, "channel-0")
            node.pending[ref.uid] = ref
            refs.append(ref)
        return refs

    def release_workload(self, refs: list[ClaimRef], nodes: list[SimNode]) -> None:
        """Workload pods end: unprepare and delete their claims."""
        for ref, node in zip(refs, nodes, strict=True):
            node.pending.pop(ref.uid, None)
            error = node.unprepare(ref)
            if error:
                node.errors.append(error)
            self.store.objects.delete_object(RESOURCE_CLAIMS, ref.name, ref.namespace)

    def delete_domain(self, name: str, namespace: str = "default") -> None:
        """Delete the ComputeDomain (marked until the controller drops its finalizer)."""
        self.store.objects.delete_object(COMPUTE_DOMAINS, name, namespace)

    def leftovers(self, uid: str) -> list[str]:
        """Everything of domain ``uid`` still in the API or on disk (empty once cleaned up)."""
        store = self.store.objects
        out = [
            f"daemonset {d['metadata']['name']}"
            for d in store.list_objects(DAEMON_SETS, None)
            if d["metadata"]["name"] == daemon_set_name(uid)
        ]
        out += [
            f"template {t['metadata']['name']}"
            for t in store.list_objects(
                RESOURCE_CLAIM_TEMPLATES, None, label_selector=f"{DOMAIN_LABEL}={uid}"
            )
        ]
        out += [
            f"node label {n['metadata']['name']}"
            for n in store.list_objects(NODES, label_selector=f"{DOMAIN_LABEL}={uid}")
        ]
        out += [
            f"clique {c['metadata']['name']}"
            for c in store.list_objects(CLIQUES, None)
            if c["metadata"]["name"].startswith(uid)
        ]
        out += [
            f"pod {p['metadata']['name']}"
            for p in store.list_objects(PODS, None, label_selector=f"{DOMAIN_LABEL}={uid}")
        ]
        for node in self.nodes:
            out += [f"cdi {p.name}" for p in (node.base / "cdi").glob("*.yaml")]
            out += [f"domain dir {p}" for p in (node.config().plugin_dir / "domains").glob(f"{uid}*")]
        return out

    def writes(self, role: str | None = None) -> int:
        """API writes counted so far (of ``role``, or all roles)."""
        verbs = {"create", "update", "update-status", "patch", "delete"}
        return sum(n for (r, v, _), n in self.counter.items() if v in verbs and role in (None, r))

    def conflicts(self) -> int:
        """409s answered to the drivers so far."""
        return sum(n for (_, v, _), n in self.counter.items() if v == "conflict")

    def iter_ready(self) -> Iterator[SimNode]:
        """Nodes whose daemon answered READY at least once."""
        return (n for n in self.nodes if n.daemon_ready_at is not None)
