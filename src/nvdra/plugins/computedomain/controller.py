"""The ComputeDomain controller: observe, plan (:func:`nvdra.imex.plan`), write — on every change.

Observation is list+watch (:class:`~nvdra.kubeletplugin.informer.Informer`): one informer per query —
the labelled DaemonSets, daemon pods and cliques of each driver namespace, the labelled
ResourceClaimTemplates and Nodes, and the ComputeDomains (started last, once the others have synced,
see :mod:`nvdra.imex.reconcile`). Any event wakes the loop, which waits a few milliseconds for the burst
to settle, then plans from the caches and performs the writes; a full pass also runs every
``resync_s`` (5 minutes) with no event at all. An idle cluster costs one watch per query per
``watch_timeout_s``, not a list of everything every second. Before acting on orphans (objects naming
a domain UID the cache does not know) the domains are listed afresh: a watch of another resource may
have delivered a new domain's objects before the domain itself.

Writes are conditional (see :mod:`nvdra.imex.reconcile`): a 409 on a status update, a finalizer patch or
a node-label removal re-reads the object and redoes the same intent against it (:func:`nvdra.imex.refresh`,
up to ``conflict_retries`` times); other failures (a 409 on a create, a 404) are logged and counted,
and the next pass re-plans. What a write returns goes into the informer's cache at once, so the next
pass does not plan the same write again before its watch event arrives.

:meth:`ComputeDomainController.reconcile_once` without :meth:`~ComputeDomainController.start` lists
instead (tests, simulations that step the controller by hand).

Leader election uses a ``coordination.k8s.io/v1`` Lease (upstream's flags and defaults): the holder renews
every ``retry_period_s``; another instance takes over once ``renewTime + leaseDurationSeconds`` has
passed. As in client-go, a leader whose renewal fails keeps leading only until ``renew_deadline_s``
after its last successful renewal (shorter than the lease, so nobody else can hold it meanwhile), and an
instance that does not lead retries every ``retry_period_s``.
"""

from __future__ import annotations

__all__ = ["ComputeDomainController", "LeaseElector", "LeaseTiming"]

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import attrs

from nvdra.core.errors import ConfigError, KubeApiError, KubeConflict, KubeNotFound
from nvdra.imex import DOMAIN_LABEL, Action, Observed, Settings, plan, refresh
from nvdra.kubeletplugin.informer import Backoff, Informer
from nvdra.kubeletplugin.objects import (
    DAEMON_SETS,
    LEASES,
    NODES,
    PODS,
    RESOURCE_CLAIM_TEMPLATES,
    ObjectApi,
    ResourceType,
)
from nvdra.kubeletplugin.types import JsonObject
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS, KIND_TYPES
from nvdra.plugins.metrics import ControllerMetrics

log = logging.getLogger(__name__)

_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@attrs.frozen
class LeaseTiming:
    """A Lease's durations in seconds (upstream's flags and defaults), checked as client-go checks them:
    lease duration > renew deadline > retry period x 1.2 (its jitter factor) > 0.

    Raises:
        ConfigError: a rule broken (naming the flag of the value that breaks it).
    """

    duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not self.duration_s > self.renew_deadline_s:
            raise ConfigError(
                "--leader-election-renew-deadline",
                self.renew_deadline_s,
                f"less than the lease duration {self.duration_s}",
            )
        if not self.renew_deadline_s > self.retry_period_s * 1.2 > 0:
            raise ConfigError(
                "--leader-election-retry-period",
                self.retry_period_s,
                f"more than 0 and less than the renew deadline {self.renew_deadline_s} / 1.2",
            )


class LeaseElector:
    """Holds a Lease; :meth:`acquire_or_renew` is called once per pass and says whether to lead."""

    def __init__(
        self,
        kube: ObjectApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kube = kube
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing or LeaseTiming()
        self._now = now
        self._renewed: datetime | None = None  # last successful acquire/renew while leading
        self.leading = False

    def acquire_or_renew(self) -> bool:
        """True if this instance holds the lease after the call (see the module docstring)."""
        now = self._now()
        if self._try(now):
            self._renewed, self.leading = now, True
        elif self._renewed is None or now - self._renewed >= timedelta(seconds=self.timing.renew_deadline_s):
            self._renewed, self.leading = None, False
        return self.leading

    def _try(self, now: datetime) -> bool:
        stamp = now.strftime(_TIME)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.duration_s),
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
            duration = float(current.get("leaseDurationSeconds") or self.timing.duration_s)
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
        resync_s: float = 300.0,
        watch_timeout_s: float = 300.0,
        conflict_retries: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self._kube = kube
        self.settings = settings
        self.elector = elector
        self.namespaces = (settings.namespace, *additional_namespaces)
        self.metrics = ControllerMetrics()
        self.resync_s = resync_s
        self.watch_timeout_s = watch_timeout_s
        self.conflict_retries = conflict_retries
        self._backoff = backoff
        self._informers: dict[str, list[Informer]] = {}
        self._wake = threading.Event()

    # --- observation -----------------------------------------------------------------------------

    def _informer(self, rt: ResourceType, namespace: str | None = None, selector: str = "") -> Informer:
        informer = Informer(
            self._kube,
            rt,
            namespace=namespace,
            label_selector=selector,
            resync_s=0,  # the controller's own resync pass covers it
            watch_timeout_s=self.watch_timeout_s,
            backoff=self._backoff,
        )
        informer.add_handler(
            on_add=lambda _o: self._wake.set(),
            on_update=lambda _a, _b: self._wake.set(),
            on_delete=lambda _o: self._wake.set(),
        )
        return informer

    def start(self, timeout: float = 60.0) -> bool:
        """Start the informers (domains last, after the others synced); whether all synced in time."""
        if self._informers:
            return all(i.synced for group in self._informers.values() for i in group)
        sel = DOMAIN_LABEL
        groups: dict[str, list[Informer]] = {
            "DaemonSet": [self._informer(DAEMON_SETS, ns, sel) for ns in self.namespaces],
            "Pod": [self._informer(PODS, ns, sel) for ns in self.namespaces],
            "ComputeDomainClique": [self._informer(CLIQUES, ns) for ns in self.namespaces],
            "ResourceClaimTemplate": [self._informer(RESOURCE_CLAIM_TEMPLATES, None, sel)],
            "Node": [self._informer(NODES, None, sel)],
        }
        self._informers = groups
        deadline = time.monotonic() + timeout
        for group in groups.values():
            for informer in group:
                informer.start()
        synced = all(i.wait_synced(max(0.0, deadline - time.monotonic())) for g in groups.values() for i in g)
        domains = self._informer(COMPUTE_DOMAINS)
        groups["ComputeDomain"] = [domains.start()]
        return domains.wait_synced(max(0.0, deadline - time.monotonic())) and synced

    def stop(self) -> None:
        """Stop the informers."""
        for group in self._informers.values():
            for informer in group:
                informer.stop()
        self._informers = {}

    def _cached(self, kind: str) -> list[JsonObject]:
        return [o for informer in self._informers.get(kind, []) for o in informer.list()]

    def observe(self) -> Observed:
        """Everything the plan needs: from the informers once started, else listed (the domains last)."""
        if self._informers:
            return Observed(
                domains=self._cached("ComputeDomain"),
                daemon_sets=self._cached("DaemonSet"),
                templates=self._cached("ResourceClaimTemplate"),
                cliques=self._cached("ComputeDomainClique"),
                pods=self._cached("Pod"),
                nodes=self._cached("Node"),
            )
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

    # --- one pass --------------------------------------------------------------------------------

    def reconcile_once(self) -> list[Action]:
        """One pass (if leading): observe, plan, write. Returns the actions attempted."""
        if self.elector is not None and not self.elector.acquire_or_renew():
            return []
        unsynced = [i.name for g in self._informers.values() for i in g if not i.synced]
        if unsynced:
            # Half a picture plans wrong writes (creates of what exists, teardowns): wait for all.
            log.warning("not reconciling yet: no list of %s has succeeded", ", ".join(unsynced))
            return []
        observed = self.observe()
        actions = plan(observed, self.settings)
        if self._informers and any(a.why.startswith("orphan") for a in actions):
            # The caches may have seen a new domain's objects before the domain: ask the server.
            observed = attrs.evolve(observed, domains=self._kube.list_objects(COMPUTE_DOMAINS))
            actions = plan(observed, self.settings)
        written: dict[tuple[str, str | None, str], JsonObject] = {}
        for action in actions:
            # A second conditional write to an object written in this pass (status after the
            # finalizer) is based on what the first one returned, not on the version observed before.
            done = written.get((action.kind, action.namespace, action.name))
            current = refresh(action, done) if done is not None and action.intent else action
            if current is None:
                continue
            error, result = self._perform(current)
            self.metrics.record(current, error)
            if result is not None:
                written[(action.kind, action.namespace, action.name)] = result
        self.metrics.pass_done(
            ((cd.get("status") or {}).get("status") or "NotReady") for cd in observed.domains
        )
        return actions

    def _perform(self, action: Action) -> tuple[KubeApiError | None, JsonObject | None]:
        """One write: (its error, what the server returned). A 409 on a conditional write is redone on
        the re-read object (bounded)."""
        attempt: Action | None = action
        for _ in range(self.conflict_retries + 1):
            assert attempt is not None
            try:
                result = self._write(attempt)
            except KubeConflict as exc:
                if not attempt.intent:
                    return self._failed(attempt, exc), None
                try:
                    current = self._kube.get_object(KIND_TYPES[attempt.kind], attempt.name, attempt.namespace)
                except KubeNotFound:
                    return None, None  # gone meanwhile: nothing left to write
                except KubeApiError as again:
                    return self._failed(attempt, again), None
                attempt = refresh(attempt, current)
                if attempt is None:
                    return None, current
                continue
            except KubeApiError as exc:
                return self._failed(attempt, exc), None
            log.info(  # one line per change the controller makes: its events, at the default verbosity
                "%s %s %s/%s: %s",
                attempt.verb,
                attempt.kind,
                attempt.namespace or "",
                attempt.name,
                attempt.why,
            )
            return None, result
        return self._failed(action, KubeConflict("still conflicting after re-reads", status=409)), None

    def _write(self, action: Action) -> JsonObject | None:
        rt = KIND_TYPES[action.kind]
        result: JsonObject | None = None
        if action.verb == "create":
            assert action.body is not None
            result = self._kube.create_object(rt, action.body)
        elif action.verb in ("update", "update-status"):
            assert action.body is not None
            result = self._kube.update_object(rt, action.body, status=action.verb == "update-status")
        elif action.verb == "patch":
            assert action.body is not None
            result = self._kube.patch_object(rt, action.name, action.body, action.namespace)
        else:
            self._kube.delete_object(rt, action.name, action.namespace)
        if result is not None:
            for informer in self._informers.get(action.kind, []):
                informer.apply(result)
        return result

    def _failed(self, action: Action, exc: KubeApiError) -> KubeApiError:
        log.info(
            "%s %s %s/%s failed (%s); the next pass re-plans",
            action.verb,
            action.kind,
            action.namespace or "",
            action.name,
            exc,
        )
        return exc

    # --- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event, period_s: float | None = None, *, settle_s: float = 0.05) -> None:
        """Reconcile on every change and every ``resync_s`` until ``stop`` is set.

        Starts the informers first. ``period_s``, when given, replaces ``resync_s`` (tests). A leader
        wakes every ``retry_period_s`` to renew its Lease; a pass that fails is logged (identical
        failures once per minute, see :mod:`nvdra.kubeletplugin.logrepeat`) and retried at the next
        wake-up.
        """
        resync = self.resync_s if period_s is None else period_s
        if not self.start():
            log.warning("not every informer listed its objects within 60 s; reconciling what is known")
        try:
            next_pass = next_renew = 0.0
            while not stop.is_set():
                woken = self._wake.is_set()
                renew = self.elector is not None and time.monotonic() >= next_renew
                if woken or renew or time.monotonic() >= next_pass:
                    if woken:
                        stop.wait(settle_s)  # let a burst of events settle into one pass
                    self._wake.clear()
                    try:
                        self.reconcile_once()
                    except KubeApiError as exc:
                        log.warning("reconcile pass failed: %s", exc)
                    next_pass = time.monotonic() + resync
                    if self.elector is not None:
                        next_renew = time.monotonic() + self.elector.timing.retry_period_s
                due = min(next_pass, next_renew) if self.elector is not None else next_pass
                # short slices: a stop (SIGTERM) is noticed within half a second; no request is made
                self._wake.wait(min(max(0.0, due - time.monotonic()), 0.5))
        finally:
            self.stop()
