"""The ComputeDomain controller's series on prometheus-client: names, types, labels, what a pass counts,
and the endpoint ``--http-endpoint`` serves (only at ``--metrics-path``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.errors import KubeApiError
from nvdra.imex import Action, Settings
from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.plugins.computedomain.controller import ComputeDomainController
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS
from nvdra.plugins.metrics import ControllerMetrics
from tests.exposition import Samples, assert_not_found, key, parse, scrape, serving
from tests.plugin_harness import clean_env, wait_for

TYPES = {
    "nvidia_dra_compute_domain_info": "gauge",
    "nvidia_dra_controller_passes": "counter",
    "nvidia_dra_controller_writes": "counter",
    "nvidia_dra_controller_write_errors": "counter",
}


def domain(name: str = "job", uid: str = "uid-1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": uid},
        "spec": {"numNodes": 2, "channel": {"resourceClaimTemplate": {"name": f"{name}-ch"}}},
    }


def test_series_start_at_zero_with_upstreams_types_and_no_created_samples() -> None:
    types, got = parse(ControllerMetrics().render())
    assert types == TYPES
    assert got == {
        key("nvidia_dra_compute_domain_info", status="Ready"): 0,
        key("nvidia_dra_compute_domain_info", status="NotReady"): 0,
        key("nvidia_dra_controller_passes_total"): 0,
    }


def test_writes_errors_and_domains_are_counted_by_their_labels() -> None:
    m = ControllerMetrics()
    for action, code in [
        (Action(verb="create", kind="DaemonSet", name="x"), None),
        (Action(verb="patch", kind="ComputeDomain", name="x"), 409),
        (Action(verb="patch", kind="ComputeDomain", name="x"), None),
        (Action(verb="delete", kind="Node", name="x"), 403),
    ]:
        m.record(action, None if code is None else KubeApiError("e", status=code))
    m.pass_done(["Ready", "NotReady", "Ready", "Unknown"])  # only Ready/NotReady are series
    m.pass_done(["NotReady"])  # a gauge: set, not added
    _, got = parse(m.render())
    assert got[key("nvidia_dra_controller_passes_total")] == 2
    assert got[key("nvidia_dra_compute_domain_info", status="Ready")] == 0
    assert got[key("nvidia_dra_compute_domain_info", status="NotReady")] == 1
    assert got[key("nvidia_dra_controller_writes_total", verb="patch", kind="ComputeDomain")] == 2
    assert got[key("nvidia_dra_controller_writes_total", verb="create", kind="DaemonSet")] == 1
    errors = "nvidia_dra_controller_write_errors_total"
    assert got[key(errors, verb="patch", kind="ComputeDomain", code="409")] == 1
    assert got[key(errors, verb="delete", kind="Node", code="403")] == 1
    assert key(errors, verb="create", kind="DaemonSet", code="409") not in got
    # The read-back the tests and simulations use says the same.
    assert m.passes == 2 and m.conflicts == 1
    assert m.failures == {("patch", "ComputeDomain", 409): 1, ("delete", "Node", 403): 1}
    assert m.writes == {("create", "DaemonSet"): 1, ("patch", "ComputeDomain"): 2, ("delete", "Node"): 1}
    assert m.domains == {"Ready": 0, "NotReady": 1}


def test_a_pass_counts_its_writes_and_the_endpoint_serves_them_only_at_the_metrics_path() -> None:
    kube = FakeKube()
    kube.objects.create_object(COMPUTE_DOMAINS, domain())
    controller = ComputeDomainController(kube, Settings(namespace="nvdra"))  # list mode: one pass by hand
    actions = controller.reconcile_once()
    assert actions
    with serving(controller.metrics, "/custom") as port:
        types, got = parse(scrape(port, "/custom"))
        assert_not_found(port, "/metrics")
    assert types == TYPES
    assert got[key("nvidia_dra_controller_passes_total")] == 1
    assert got[key("nvidia_dra_compute_domain_info", status="NotReady")] == 1
    writes = {
        (dict(labels)["verb"], dict(labels)["kind"]): n
        for (name, labels), n in got.items()
        if name == "nvidia_dra_controller_writes_total"
    }
    assert writes == dict(Counter((a.verb, a.kind) for a in actions))  # a fresh domain: no refreshed writes
    assert not [name for name, _ in got if name == "nvidia_dra_controller_write_errors_total"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_controller_process_serves_its_metrics(tmp_path: Path) -> None:
    """``nvdra-cd-controller --http-endpoint``: the scrape parses, shows the passes and the writes of a
    new domain, and any other path is 404."""
    store = FakeKube()
    with ApiServer(store) as server:
        for rt in (CLIQUES, COMPUTE_DOMAINS):
            server.register(rt)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        store.objects.create_object(COMPUTE_DOMAINS, domain())
        port = _free_port()
        args = [
            str(Path(sys.executable).parent / "nvdra-cd-controller"),
            *("--kubeconfig", str(kubeconfig), "--pod-name", "test", "--image-name", "test"),
            *("--leader-election-enabled", "false", "--namespace", "nvdra"),
            *("--http-endpoint", f"127.0.0.1:{port}", "--metrics-path", "/m"),
        ]
        log = (tmp_path / "controller.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=clean_env())
        try:

            def counted() -> Samples | None:
                assert proc.poll() is None, (tmp_path / "controller.log").read_text()
                try:
                    _, got = parse(scrape(port, "/m"))
                except (urllib.error.URLError, ConnectionError):
                    return None  # not serving yet
                patched = key("nvidia_dra_controller_writes_total", verb="patch", kind="ComputeDomain")
                passes = key("nvidia_dra_controller_passes_total")
                return got if got.get(patched) and got[passes] >= 1 else None  # a pass with its writes

            got = wait_for("a pass and the finalizer patch in the metrics", counted, deadline_s=60)
            assert got[key("nvidia_dra_compute_domain_info", status="Ready")] == 0
            assert_not_found(port, "/metrics")
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
