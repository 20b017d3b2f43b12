"""The ComputeDomain controller: list, plan (:func:`nvdra.imex.plan`), write — once per period.

No watches: every ``period_s`` the leader lists the labelled DaemonSets, ResourceClaimTemplates, cliques,
daemon pods and nodes, then the ComputeDomains (last, see :mod:`nvdra.imex.reconcile`), and performs
the planned writes. A failed write (a 409 after a concurrent change, a 404) is logged and counted, never
retried in a loop: the next pass re-lists and re-plans from fresh state, so a restarted controller — or
one that lost a race — converges without duplicates (creates of existing names are 409s, and the plan
never creates what it observed).

Leader election uses a ``coordination.k8s.io/v1`` Lease (upstream's flags and defaults): the holder renews
every pass; another instance takes over once ``renewTime + leaseDurationSeconds`` has passed. As in
client-go, a leader whose renewal fails keeps leading only until ``renew_deadline_s`` after its last
successful renewal (shorter than the lease, so nobody else can hold it meanwhile), and an instance that
does not lead retries every ``retry_period_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from nvdra.core.errors import ConfigError, KubeApiError, KubeConflict, KubeNotFound
from nvdra.imex import DOMAIN_LABEL, Action, Observed, Settings, plan
from nvdra.kubeletplugin.objects import DAEMON_SETS, LEASES, NODES, PODS, RESOURCE_CLAIM_TEMPLATES, ObjectApi
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS, KIND_TYPES

__all__ = ["ComputeDomainController", "LeaseElector", "Metrics"]

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class Metrics:
    """Counters of the controller (Prometheus text via :meth:`render`, namespace ``nvidia_dra``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.passes = 0
        self.writes: Counter[tuple[str, str]] = Counter()  # (verb, kind)
        self.failures: Counter[tuple[str, str, int]] = Counter()  # (verb, kind, status)
        self.domains: Counter[str] = Counter()  # status -> count (gauge, set every pass)

    def record(self, action: Action, error: KubeApiError | None) -> None:
        """Count one write and its outcome."""
        with self._lock:
            self.writes[(action.verb, action.kind)] += 1
            if error is not None:
                self.failures[(action.verb, action.kind, error.status)] += 1

    @property
    def conflicts(self) -> int:
        """409s seen so far."""
        with self._lock:
            return sum(n for (_, _, status), n in self.failures.items() if status == 409)

    def render(self) -> str:
        """Prometheus text exposition."""
        lines = ["# TYPE nvidia_dra_compute_domain_info gauge"]
        with self._lock:
            for status in ("Ready", "NotReady"):
                lines.append(f'nvidia_dra_compute_domain_info{{status="{status}"}} {self.domains[status]}')
            lines.append("# TYPE nvidia_dra_controller_passes_total counter")
            lines.append(f"nvidia_dra_controller_passes_total {self.passes}")
            lines.append("# TYPE nvidia_dra_controller_writes_total counter")
            for (verb, kind), n in sorted(self.writes.items()):
                lines.append(f'nvidia_dra_controller_writes_total{{verb="{verb}",kind="{kind}"}} {n}')
            lines.append("# TYPE nvidia_dra_controller_write_errors_total counter")
            for (verb, kind, code), n in sorted(self.failures.items()):
                labels = f'verb="{verb}",kind="{kind}",code="{code}"'
                lines.append(f"nvidia_dra_controller_write_errors_total{{{labels}}} {n}")
        return "\n".join(lines) + "\n"


class LeaseElector:
    """Holds a Lease; :meth:`acquire_or_renew` is called once per pass and says whether to lead."""

    def __init__(
        self,
        kube: ObjectApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # client-go's rules: leaseDuration > renewDeadline > retryPeriod * 1.2 (its jitter factor).
        if not duration_s > renew_deadline_s:
            raise ConfigError(
                "--leader-election-renew-deadline",
                renew_deadline_s,
                f"less than the lease duration {duration_s}",
            )
        if not renew_deadline_s > retry_period_s * 1.2 > 0:
            raise ConfigError(
                "--leader-election-retry-period",
                retry_period_s,
                f"more than 0 and less than the renew deadline {renew_deadline_s} / 1.2",
            )
        self._kube = kube
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration_s = duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self._now = now
        self._renewed: datetime | None = None  # last successful acquire/renew while leading
        self.leading = False

    def acquire_or_renew(self) -> bool:
        """True if this instance holds the lease after the call (see the module docstring)."""
        now = self._now()
        if self._try(now):
            self._renewed, self.leading = now, True
        elif self._renewed is None or now - self._renewed >= timedelta(seconds=self.renew_deadline_s):
            self._renewed, self.leading = None, False
        return self.leading

    def _try(self, now: datetime) -> bool:
        stamp = now.strftime(_TIME)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration_s),
            "renewTime": stamp,
        }
        try:
            lease = self._kube.get_object(LEASES, self.name, self.namespace)
        except KubeNotFound:
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": dict(spec, acquireTime=stamp),
            }
            try:
                self._kube.create_object(LEASES, body)
            except KubeConflict:
                return False
            return True
        except KubeApiError as exc:
            log.warning("cannot read lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        if holder != self.identity:
            renewed = current.get("renewTime")
            duration = float(current.get("leaseDurationSeconds") or self.duration_s)
            if (
                renewed
                and datetime.strptime(renewed, _TIME).replace(tzinfo=UTC) + timedelta(seconds=duration) > now
            ):
                return False
            spec["acquireTime"] = stamp
        lease["spec"] = dict(current, **spec)
        try:
            self._kube.update_object(LEASES, lease)
        except KubeApiError:
            return False
        return True


class ComputeDomainController:
    """Reconciles every ComputeDomain of the cluster (see the module docstring)."""

    def __init__(
        self,
        kube: ObjectApi,
        settings: Settings,
        *,
        elector: LeaseElector | None = None,
        additional_namespaces: tuple[str, ...] = (),
    ) -> None:
        self._kube = kube
        self.settings = settings
        self.elector = elector
        self.namespaces = (settings.namespace, *additional_namespaces)
        self.metrics = Metrics()

    def observe(self) -> Observed:
        """List everything the plan needs; the domains last."""
        sel = DOMAIN_LABEL
        daemon_sets: list[JsonObject] = []
        pods: list[JsonObject] = []
        cliques: list[JsonObject] = []
        for ns in self.namespaces:
            daemon_sets += self._kube.list_objects(DAEMON_SETS, ns, label_selector=sel)
            pods += self._kube.list_objects(PODS, ns, label_selector=sel)
            cliques += self._kube.list_objects(CLIQUES, ns)
        templates = self._kube.list_objects(RESOURCE_CLAIM_TEMPLATES, None, label_selector=sel)
        nodes = self._kube.list_objects(NODES, label_selector=sel)
        domains = self._kube.list_objects(COMPUTE_DOMAINS)
        return Observed(
            domains=domains,
            daemon_sets=daemon_sets,
            templates=templates,
            cliques=cliques,
            pods=pods,
            nodes=nodes,
        )

    def reconcile_once(self) -> list[Action]:
        """One pass (if leading): observe, plan, write. Returns the actions attempted."""
        if self.elector is not None and not self.elector.acquire_or_renew():
            return []
        observed = self.observe()
        actions = plan(observed, self.settings)
        for action in actions:
            self.metrics.record(action, self._perform(action))
        with self.metrics._lock:
            self.metrics.passes += 1
            self.metrics.domains = Counter(
                ((cd.get("status") or {}).get("status") or "NotReady") for cd in observed.domains
            )
        return actions

    def _perform(self, action: Action) -> KubeApiError | None:
        rt = KIND_TYPES[action.kind]
        try:
            if action.verb == "create":
                assert action.body is not None
                self._kube.create_object(rt, action.body)
            elif action.verb in ("update", "update-status"):
                assert action.body is not None
                self._kube.update_object(rt, action.body, status=action.verb == "update-status")
            elif action.verb == "patch":
                assert action.body is not None
                self._kube.patch_object(rt, action.name, action.body, action.namespace)
            else:
                self._kube.delete_object(rt, action.name, action.namespace)
        except KubeApiError as exc:
            log.info(
                "%s %s %s/%s failed (%s); the next pass re-plans",
                action.verb,
                action.kind,
                action.namespace or "",
                action.name,
                exc,
            )
            return exc
        log.debug(
            "%s %s %s/%s: %s", action.verb, action.kind, action.namespace or "", action.name, action.why
        )
        return None

    def run(self, stop: threading.Event, period_s: float = 1.0) -> None:
        """Reconcile every ``period_s`` until ``stop`` is set (errors of one pass are logged)."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.reconcile_once()
            except KubeApiError as exc:
                log.warning("reconcile pass failed: %s", exc)
            waiting = self.elector is not None and not self.elector.leading
            period = self.elector.retry_period_s if waiting and self.elector else period_s
            stop.wait(max(0.0, period - (time.monotonic() - started)))
