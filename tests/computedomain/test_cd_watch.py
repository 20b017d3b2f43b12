"""The daemon and the controller follow changes by watching: idle, they make no API requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from nvdra.imex import DOMAIN_LABEL, Settings, parse_nodes_file
from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.informer import Backoff
from nvdra.kubeletplugin.objects import DAEMON_SETS, PODS
from nvdra.plugins.computedomain.controller import ComputeDomainController
from nvdra.plugins.computedomain.daemon import DaemonSettings, ImexDaemon
from nvdra.plugins.computedomain.fakeimex import FakeImexRunner, ImexFabric
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS

JOB_DOMAIN = {
    "apiVersion": "resource.nvidia.com/v1beta1",
    "kind": "ComputeDomain",
    "metadata": {"name": "job", "namespace": "default"},
    "spec": {"numNodes": 0, "channel": {"resourceClaimTemplate": {"name": "job-channel"}}},
}
"""A ComputeDomain ``default/job`` of no fixed size (the store copies what it is given)."""


def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _requests(kube: FakeKube, since: int) -> list[tuple[str, str]]:
    return [(c.verb, c.resource) for c in kube.calls()[since:] if c.verb != "watch"]


def test_watching_daemon_acts_on_a_clique_change_without_reading(tmp_path: Path) -> None:
    kube, fabric = FakeKube(), ImexFabric()
    kube.objects.put(
        COMPUTE_DOMAINS,
        {"metadata": {"name": "cd", "namespace": "default", "uid": "u1"}, "spec": {"numNodes": 2}},
    )
    kube.objects.put(PODS, {"metadata": {"name": "p-a", "namespace": "nvdra"}})
    hosts = tmp_path / "hosts"
    settings = DaemonSettings(
        clique_id="c.1",
        domain_uid="u1",
        domain_name="cd",
        domain_namespace="default",
        node_name="a",
        pod_ip="10.0.0.1",
        pod_name="p-a",
        pod_namespace="nvdra",
        feature_gates="IMEXDaemonsWithDNSNames=false,ComputeDomainCliques=false",
        imexd_dir=tmp_path / "imexd",
        hosts_path=hosts,
    )
    daemon = ImexDaemon(settings, kube, FakeImexRunner(fabric, hosts))
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop, 30.0), kwargs={"watch": True}, daemon=True)
    runner.start()
    try:
        entry = {"cliqueID": "c.1", "status": "NotReady"}
        clique = {
            "metadata": {"name": "u1.c.1", "namespace": "nvdra"},
            "daemons": [
                dict(entry, nodeName="a", ipAddress="10.0.0.1", index=0),
                dict(entry, nodeName="b", ipAddress="10.0.0.2", index=1),
            ],
        }
        # IP mode: the daemon watches its clique and its domain; both lists happen before the mark
        _until(
            lambda: (
                {"computedomaincliques", "computedomains"}
                <= {c.resource for c in kube.calls() if c.verb == "watch"}
            )
        )
        mark = len(kube.calls())
        kube.objects.put(CLIQUES, clique)
        # the period is 30 s: only the watch event can have woken the daemon this soon
        _until(lambda: daemon.child is not None)
        assert parse_nodes_file(settings.nodes_path.read_text()) == ["10.0.0.1", "10.0.0.2"]
        assert _requests(kube, mark) == []
    finally:
        stop.set()
        daemon._wake.set()
        runner.join(10)
    assert not runner.is_alive()


def test_an_idle_controller_makes_no_requests_and_reacts_to_a_new_domain() -> None:
    kube = FakeKube()
    controller = ComputeDomainController(
        kube, Settings(namespace="nvdra"), resync_s=300, backoff=Backoff(initial_s=0.01)
    )
    stop = threading.Event()
    runner = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    runner.start()
    try:
        _until(lambda: sum(c.verb == "watch" for c in kube.calls()) == 6)
        mark = len(kube.calls())
        time.sleep(1.0)
        assert _requests(kube, mark) == []  # idle: nothing but the open watches
        kube.create_object(COMPUTE_DOMAINS, JOB_DOMAIN)
        _until(lambda: len(kube.list_objects(DAEMON_SETS, "nvdra", label_selector=DOMAIN_LABEL)) == 1)
        _until(lambda: (kube.get_object(COMPUTE_DOMAINS, "job", "default").get("status") or {}) != {})
        settled = len(kube.calls())
        time.sleep(1.0)
        assert _requests(kube, settled) == []  # converged: no write repeats, no polling
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()  # stops on the event alone, without a wake-up


def test_controller_writes_nothing_until_every_informer_has_listed() -> None:
    """A query the server refuses (403) leaves the picture half known: no pass runs on it."""
    kube = FakeKube()
    kube.create_object(COMPUTE_DOMAINS, JOB_DOMAIN)
    kube.fail_next("list", times=4, status=403, resource="resourceclaimtemplates")
    kube.clear_calls()
    backoff = Backoff(initial_s=0.2, max_s=0.2, jitter=0)
    controller = ComputeDomainController(kube, Settings(namespace="nvdra"), backoff=backoff)
    assert not controller.start(timeout=0.5)
    assert controller.reconcile_once() == []
    assert not [c for c in kube.calls() if c.verb in ("create", "update", "patch", "delete")]
    _until(lambda: all(i.synced for g in controller._informers.values() for i in g))
    assert controller.reconcile_once() != []
    controller.stop()
    assert kube.list_objects(DAEMON_SETS, "nvdra", label_selector=DOMAIN_LABEL)
