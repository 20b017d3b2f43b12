"""Controller leader election, the daemon in IP mode and without a registration, and the demo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.errors import ConfigError
from nvdra.imex import parse_nodes_file
from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.objects import PODS
from nvdra.plugins.computedomain.controller import LeaseElector
from nvdra.plugins.computedomain.daemon import DaemonSettings, ImexDaemon, ProcessHandle
from nvdra.plugins.computedomain.demo import run_demo
from nvdra.plugins.computedomain.fakeimex import FakeImexRunner, ImexFabric
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS


def test_one_leader_at_a_time_and_takeover_after_expiry() -> None:
    """Two electors: the first leads; the second only after the lease expired without renewal."""
    kube = FakeKube()
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    a = LeaseElector(kube, namespace="ns", name="lock", identity="a", now=lambda: clock[0])
    b = LeaseElector(kube, namespace="ns", name="lock", identity="b", now=lambda: clock[0])
    assert a.acquire_or_renew() and not b.acquire_or_renew()
    clock[0] += timedelta(seconds=10)
    assert a.acquire_or_renew() and not b.acquire_or_renew()
    clock[0] += timedelta(seconds=16)
    assert b.acquire_or_renew() and not a.acquire_or_renew()


def _daemon(tmp: Path, kube: FakeKube, fabric: ImexFabric, node: str, ip: str, gates: str) -> ImexDaemon:
    hosts = tmp / node / "hosts"
    hosts.parent.mkdir(parents=True)
    settings = DaemonSettings(
        clique_id="c.1",
        domain_uid="u1",
        domain_name="cd",
        domain_namespace="default",
        node_name=node,
        pod_ip=ip,
        pod_name=f"p-{node}",
        pod_namespace="nvdra",
        feature_gates=gates,
        imexd_dir=tmp / node / "imexd",
        hosts_path=hosts,
    )
    kube.objects.put(PODS, {"metadata": {"name": f"p-{node}", "namespace": "nvdra"}})
    return ImexDaemon(settings, kube, FakeImexRunner(fabric, hosts))


def _child(daemon: ImexDaemon) -> ProcessHandle | None:
    return daemon.child


def test_ip_mode_waits_for_num_nodes_then_writes_ips_and_restarts_on_change(tmp_path: Path) -> None:
    """IP mode: no nvidia-imex until numNodes members; the nodes file lists their IPs; READY when all up."""
    kube, fabric = FakeKube(), ImexFabric()
    gates = "IMEXDaemonsWithDNSNames=false,ComputeDomainCliques=false"
    kube.objects.put(
        COMPUTE_DOMAINS,
        {"metadata": {"name": "cd", "namespace": "default", "uid": "u1"}, "spec": {"numNodes": 2}},
    )
    a = _daemon(tmp_path, kube, fabric, "a", "10.0.0.1", gates)
    b = _daemon(tmp_path, kube, fabric, "b", "10.0.0.2", gates)
    a.register()
    b.register()
    entry: dict[str, Any] = {"cliqueID": "c.1", "status": "NotReady"}
    members = [dict(entry, nodeName="a", ipAddress="10.0.0.1", index=0)]
    clique: dict[str, Any] = {
        "metadata": {"name": "u1.c.1", "namespace": "nvdra"},
        "daemons": members,
    }
    kube.objects.put(CLIQUES, clique)
    a.step()
    assert _child(a) is None  # (a function: mypy would keep a.child narrowed to None)
    members.append(dict(entry, nodeName="b", ipAddress="10.0.0.2", index=1))
    kube.objects.put(CLIQUES, clique)
    a.step()
    assert a.child is not None and not a.check()
    assert parse_nodes_file(a.settings.nodes_path.read_text()) == ["10.0.0.1", "10.0.0.2"]
    b.step()
    assert a.check() and b.check()
    first = a.child
    clique["daemons"][1]["ipAddress"] = "10.0.0.3"
    kube.objects.put(CLIQUES, clique)
    a.step()
    assert a.child is not first and first.poll() == 0


def test_daemon_refuses_an_empty_domain_uid(tmp_path: Path) -> None:
    """Without COMPUTE_DOMAIN_UUID (CDI not applied) the daemon does not start."""
    settings = DaemonSettings(
        clique_id="", domain_uid="", node_name="n", pod_ip="10.0.0.1", pod_name="p", pod_namespace="nvdra"
    )
    with pytest.raises(ConfigError, match="CDI"):
        ImexDaemon(settings, FakeKube(), FakeImexRunner(ImexFabric(), tmp_path / "hosts"))


def test_demo_runs_both_workloads_and_cleans_up() -> None:
    """The demo brings a 2-node and an 18-node workload to Ready and tears both down."""
    lines: list[str] = []
    run_demo(lines.append)
    text = "\n".join(lines)
    assert "all 2 workloads got IMEX channel 0" in text and "all 18 workloads got IMEX channel 0" in text
    assert text.count("torn down") == 2 and "0 conflicts" in text


@pytest.mark.parametrize(
    ("module", "flags"),
    [
        ("plugin_main", ["--node-name", "--simulate", "--feature-gates", "--kubelet-plugins-directory-path"]),
        ("controller_main", ["--max-nodes-per-imex-domain", "--leader-election-enabled", "--image-name"]),
    ],
)
def test_console_scripts_offer_upstreams_flags(module: str, flags: list[str]) -> None:
    """The plugin and controller entry points parse and list upstream's flags with their env twins."""
    import importlib

    from click.testing import CliRunner

    main = importlib.import_module(f"nvdra.plugins.computedomain.{module}").main
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for flag in flags:
        assert flag in result.output


def test_daemon_check_without_a_clique_succeeds() -> None:
    """``nvdra-cd-daemon check`` with no clique id exits 0 (the daemon idles there)."""
    from click.testing import CliRunner

    from nvdra.plugins.computedomain.daemon_main import main

    assert CliRunner().invoke(main, ["check", "--compute-domain-uuid", "u1"]).exit_code == 0
    assert (
        CliRunner().invoke(main, ["check", "--cliqueid", "c.1", "--imexd-dir", "/nonexistent"]).exit_code == 1
    )
