"""The ComputeDomain daemon: supervise ``nvidia-imex`` for one domain on one node.

One loop iteration (:meth:`ImexDaemon.step`) reads this node's clique object — written only by the
controller — and converges the local state to it:

- DNS-name mode (default): the nodes file is static (``compute-domain-daemon-0000`` … ``-<max-1>``); the
  daemon rewrites its ``/etc/hosts`` block with ``<ip> compute-domain-daemon-<index>`` of its clique's
  members, starts ``nvidia-imex`` once its own entry is there, and sends ``SIGUSR1`` when the mapping
  changed so the daemon re-resolves;
- IP mode: the nodes file lists the members' IPs (waiting for ``numNodes`` of them when set); a change
  restarts ``nvidia-imex``;
- watchdog: a child that exited on its own is started again (counted in :attr:`ImexDaemon.restarts`).

Registration is one merge patch of the daemon's own pod (label ``…computeDomain.cliqueID``), so daemons
never write a shared object; readiness is the pod's Ready condition, fed by ``check``
(``nvidia-imex-ctl -q`` printing ``READY``). Run with ``watch=True`` (the console script does), the daemon
reads its clique and its domain from list+watch informers (field-selected by name): an idle daemon makes
no API request between watch renewals, and a change of its clique is acted on at once. On shutdown the
child gets ``SIGTERM`` and the label is removed, which takes the node out of its clique at the
controller's next pass. A daemon without a clique only registers and idles; its ``check`` always succeeds.
"""

from __future__ import annotations

__all__ = ["DaemonSettings", "ImexDaemon", "ProcessHandle", "ProcessRunner", "SubprocessRunner"]

import contextlib
import logging
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from nvdra.core.errors import ConfigError, HostError, KubeApiError, KubeNotFound
from nvdra.core.featuregates import FeatureGates, Gate, parse_feature_gates
from nvdra.imex import (
    CLIQUE_LABEL,
    clique_object_name,
    dns_name,
    render_config,
    render_nodes_file,
    update_hosts,
)
from nvdra.kubeletplugin.informer import EventHandler, Informer
from nvdra.kubeletplugin.objects import PODS, ObjectApi, ResourceType
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS

log = logging.getLogger(__name__)


class ProcessHandle(Protocol):
    """A started child process."""

    pid: int

    def poll(self) -> int | None:
        """Exit status, or None while running."""
        ...

    def send_signal(self, sig: int) -> None:
        """Deliver a signal."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit; the status."""
        ...


class ProcessRunner(Protocol):
    """Starts ``nvidia-imex`` and runs ``nvidia-imex-ctl`` (real: :class:`SubprocessRunner`)."""

    def start(self, argv: Sequence[str]) -> ProcessHandle:
        """Start a long-running child."""
        ...

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
        """Run to completion: ``(status, stdout)``."""
        ...


class SubprocessRunner:
    """The real runner: children are OS processes (stderr inherited: nvidia-imex logs reach the pod log)."""

    def start(self, argv: Sequence[str]) -> ProcessHandle:
        """Popen ``argv``."""
        try:
            return subprocess.Popen(list(argv))
        except OSError as exc:
            raise HostError(f"cannot start {argv[0]}: {exc.strerror}") from exc

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
        """Run ``argv``; a missing binary or a timeout is status 127/124."""
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
        except OSError:
            return 127, ""
        except subprocess.TimeoutExpired:
            return 124, ""
        return done.returncode, done.stdout


@attrs.frozen(kw_only=True)
class DaemonSettings:
    """The daemon's flags (env twins as upstream: ``CLIQUE_ID``, ``COMPUTE_DOMAIN_UUID``, …)."""

    clique_id: str
    domain_uid: str
    domain_name: str = ""
    domain_namespace: str = "default"
    node_name: str
    pod_ip: str
    pod_name: str
    pod_namespace: str
    max_nodes: int = 18
    feature_gates: str = ""
    imexd_dir: Path = Path("/imexd")
    hosts_path: Path = Path("/etc/hosts")
    imex_binary: str = "nvidia-imex"
    ctl_binary: str = "nvidia-imex-ctl"

    @property
    def config_path(self) -> Path:
        """``<imexd dir>/imexd.cfg``."""
        return self.imexd_dir / "imexd.cfg"

    @property
    def nodes_path(self) -> Path:
        """``<imexd dir>/nodes.cfg``."""
        return self.imexd_dir / "nodes.cfg"


class ImexDaemon:
    """One domain's daemon on one node (see the module docstring)."""

    def __init__(self, settings: DaemonSettings, kube: ObjectApi, runner: ProcessRunner) -> None:
        if not settings.domain_uid:
            raise ConfigError(
                "COMPUTE_DOMAIN_UUID", "", "the domain's UID (is CDI enabled in your container runtime?)"
            )
        self.settings = settings
        self.gates: FeatureGates = parse_feature_gates(settings.feature_gates)
        self._kube = kube
        self._runner = runner
        self.child: ProcessHandle | None = None
        self.restarts = 0
        self.signals_sent = 0
        self._peers: dict[str, str] = {}
        self._stopping = False
        self.watch_timeout_s = 300.0
        """How long one watch request lasts before the informer renews it."""
        self._clique_cache: Informer | None = None
        self._domain_cache: Informer | None = None
        self._wake = threading.Event()

    def _one_object_informer(self, rt: ResourceType, namespace: str, name: str) -> Informer:
        """An informer that follows the one object ``namespace/name`` of ``rt``."""
        return Informer(
            self._kube,
            rt,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            watch_timeout_s=self.watch_timeout_s,
        )

    def watch(self) -> None:
        """Follow the clique object and the domain with informers instead of GETs (see the docstring)."""
        s = self.settings
        wake = EventHandler(
            on_add=lambda _o: self._wake.set(),
            on_update=lambda _a, _b: self._wake.set(),
            on_delete=lambda _o: self._wake.set(),
        )
        caches: list[Informer] = []
        if s.clique_id:
            name = clique_object_name(s.domain_uid, s.clique_id)
            self._clique_cache = self._one_object_informer(CLIQUES, s.pod_namespace, name)
            caches.append(self._clique_cache)
            if not self.dns_mode and s.domain_name:
                self._domain_cache = self._one_object_informer(
                    COMPUTE_DOMAINS, s.domain_namespace, s.domain_name
                )
                caches.append(self._domain_cache)
        for cache in caches:
            cache.add_handler(wake.on_add, wake.on_update, wake.on_delete)
            cache.start()
        for cache in caches:
            cache.wait_synced(30.0)

    def _stop_watching(self) -> None:
        for cache in (self._clique_cache, self._domain_cache):
            if cache is not None:
                cache.stop()

    @property
    def dns_mode(self) -> bool:
        """Whether peers are named by DNS names (``IMEXDaemonsWithDNSNames``)."""
        return self.gates.enabled(Gate.IMEX_DAEMONS_WITH_DNS_NAMES)

    def register(self) -> None:
        """Label the own pod with the clique id (the only write a daemon makes when it starts)."""
        s = self.settings
        self._kube.patch_object(
            PODS, s.pod_name, {"metadata": {"labels": {CLIQUE_LABEL: s.clique_id}}}, s.pod_namespace
        )
        if s.clique_id:
            s.imexd_dir.mkdir(parents=True, exist_ok=True)
            s.config_path.write_text(render_config(bind_ip=s.pod_ip, nodes_file=str(s.nodes_path)))
            if self.dns_mode:
                s.nodes_path.write_text(render_nodes_file([dns_name(i) for i in range(s.max_nodes)]))

    def _members(self) -> dict[int, str] | None:
        """Index → IP of this clique's members, or None when this node has no entry yet."""
        s = self.settings
        name = clique_object_name(s.domain_uid, s.clique_id)
        if self._clique_cache is not None:
            cached = self._clique_cache.get(name, s.pod_namespace)
            if cached is None:
                return None
            clique = cached
        else:
            try:
                clique = self._kube.get_object(CLIQUES, name, s.pod_namespace)
            except KubeNotFound:
                return None
        entries = clique.get("daemons") or []
        if not any(e.get("nodeName") == s.node_name for e in entries):
            return None
        return {int(e["index"]): str(e["ipAddress"]) for e in entries if "index" in e}

    def step(self) -> None:
        """One pass: watchdog, then converge hosts/nodes file and the child to the clique object."""
        s = self.settings
        if not s.clique_id or self._stopping:
            return
        if self.child is not None and self.child.poll() is not None:
            log.warning("nvidia-imex exited with status %s; restarting", self.child.poll())
            self.child = None
            self.restarts += 1
        try:
            members = self._members()
        except KubeApiError as exc:
            log.warning("cannot read clique %s: %s", s.clique_id, exc)
            return
        if members is None:
            return
        if self.dns_mode:
            self._converge_dns(members)
        else:
            self._converge_ips(members)

    def _start(self) -> None:
        self.child = self._runner.start([self.settings.imex_binary, "-c", str(self.settings.config_path)])

    def _converge_dns(self, members: Mapping[int, str]) -> None:
        names = {dns_name(i): ip for i, ip in members.items()}
        changed = names != self._peers
        if changed:
            hosts = self.settings.hosts_path
            text = hosts.read_text() if hosts.exists() else ""
            hosts.write_text(update_hosts(text, names))
            self._peers = names
        if self.child is None:
            self._start()
        elif changed:
            self.child.send_signal(signal.SIGUSR1)
            self.signals_sent += 1

    def _converge_ips(self, members: Mapping[int, str]) -> None:
        s = self.settings
        want = int((self._domain().get("spec") or {}).get("numNodes") or 0)
        if len(members) < want:
            return
        ips = {ip: ip for ip in sorted(members.values())}
        if ips != self._peers:
            s.nodes_path.write_text(render_nodes_file(sorted(ips)))
            self._peers = ips
            self._stop_child()
        if self.child is None:
            self._start()

    def _domain(self) -> dict[str, Any]:
        s = self.settings
        if self._domain_cache is not None:
            return self._domain_cache.get(s.domain_name, s.domain_namespace) or {}
        try:
            return self._kube.get_object(COMPUTE_DOMAINS, s.domain_name, s.domain_namespace)
        except KubeApiError:
            return {}

    def _stop_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            self.child.wait(timeout=10)
        self.child = None

    def check(self) -> bool:
        """The probe: no clique → ready; else ``nvidia-imex-ctl -c <cfg> -q`` prints exactly ``READY``."""
        if not self.settings.clique_id:
            return True
        rc, out = self._runner.run([self.settings.ctl_binary, "-c", str(self.settings.config_path), "-q"])
        return rc == 0 and out == "READY\n"

    def shutdown(self) -> None:
        """Stop watching, stop the child (SIGTERM) and leave the clique (remove the registration label)."""
        self._stopping = True
        self._stop_watching()
        self._stop_child()
        s = self.settings
        # A pod that is already gone took its registration with it.
        with contextlib.suppress(KubeNotFound):
            self._kube.patch_object(
                PODS, s.pod_name, {"metadata": {"labels": {CLIQUE_LABEL: None}}}, s.pod_namespace
            )

    def run(self, stop: threading.Event, period_s: float = 1.0, *, watch: bool = False) -> None:
        """Register, then :meth:`step` every ``period_s`` (the watchdog; with ``watch``, also at once on
        a change of the clique or domain) until ``stop`` is set; then :meth:`shutdown`."""
        self.register()
        try:
            if watch:
                self.watch()
            while not stop.is_set():
                self._wake.clear()
                self.step()
                self._wake.wait(period_s)
        finally:
            self._stop_watching()
            self.shutdown()
