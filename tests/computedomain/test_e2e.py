"""ComputeDomains end to end: N simulated GB200 trays, each with the real CD plugin over real unix sockets,
the real controller and daemons, the fake nvidia-imex, one in-memory API (see ``SimCluster``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.cdi import read_spec
from nvdra.imex import DOMAIN_LABEL, Observed, plan
from nvdra.imex.config import parse_hosts_block
from nvdra.kubeletplugin.objects import DAEMON_SETS, NODES, RESOURCE_CLAIM_TEMPLATES
from nvdra.plugins.computedomain.daemon import ImexDaemon
from nvdra.plugins.computedomain.fakeimex import FakeImexProcess
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS
from nvdra.plugins.computedomain.simcluster import SimCluster, SimNode

CHANNEL_MAJOR = 507  # nvidia-caps-imex-channels in the simulated /proc/devices


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A state directory and a short one for sockets."""
    with tempfile.TemporaryDirectory(prefix="nvdra-cd-") as sock:
        yield tmp_path, Path(sock)


def domain_gone(c: SimCluster, name: str) -> bool:
    return not [d for d in c.store.objects.list_objects(COMPUTE_DOMAINS) if d["metadata"]["name"] == name]


def _imex(daemon: object) -> ImexDaemon:
    """The in-process daemon behind a simulated pod (SimCluster's pods run ImexDaemon unless processes)."""
    assert isinstance(daemon, ImexDaemon)
    return daemon


def test_channels_only_after_all_daemons_ready_and_deletion_leaves_nothing(dirs: tuple[Path, Path]) -> None:
    """k=3 of 4 nodes: every channel is handed out after all 3 daemons answered READY; deleting the
    domain leaves no DaemonSet, template, node label, clique, pod, CDI file or domain directory."""
    with SimCluster(*dirs, nodes=4) as c:
        cd = c.create_domain("job", num_nodes=3)
        uid = cd["metadata"]["uid"]
        used = c.nodes[:3]
        refs = c.schedule_workload(cd, used)
        c.run_until("channels prepared", lambda: all(not n.pending for n in used))
        ready_times = [n.daemon_ready_at for n in used]
        assert None not in ready_times
        last_ready = max(t for t in ready_times if t is not None)
        assert all(t >= last_ready for n in used for t in n.prepared.values())
        assert c.nodes[3].daemon_ready_at is None and not c.nodes[3].pods
        assert c.domain("job")["status"]["status"] == "Ready"
        for node, ref in zip(used, refs, strict=True):
            assert node.plugin is not None
            spec = read_spec(node.plugin.driver.spec_path(ref.uid))
            (dev,) = spec.devices[0].container_edits.device_nodes
            assert (dev.path, dev.major, dev.minor) == (
                "/dev/nvidia-caps-imex-channels/channel0",
                CHANNEL_MAJOR,
                0,
            )
            assert [e for e in node.errors] == []
        assert c.conflicts() == 0

        c.release_workload(refs, used)
        c.delete_domain("job")
        c.run_until("domain gone", lambda: domain_gone(c, "job") and not c.leftovers(uid), max_rounds=20)
        for node in c.nodes:
            assert node.plugin is not None and node.plugin.driver.checkpoint().claims == {}


def test_killed_daemon_is_restarted_and_the_domain_returns_to_ready(dirs: tuple[Path, Path]) -> None:
    """Killing nvidia-imex on one node makes its peer and the domain NotReady; the watchdog restarts it."""
    with SimCluster(*dirs, nodes=2) as c:
        cd = c.create_domain("job", num_nodes=2)
        c.schedule_workload(cd, c.nodes)
        c.run_until("ready", lambda: c.domain("job").get("status", {}).get("status") == "Ready")
        daemon = _imex(next(iter(c.nodes[1].pods.values())).daemon)
        child = daemon.child
        assert isinstance(child, FakeImexProcess)
        child.kill()
        c.nodes[0].step()  # the peer's probe sees the crash before node 1's watchdog runs
        c.controller.reconcile_once()
        assert c.domain("job")["status"]["status"] == "NotReady"
        c.run_until("ready again", lambda: c.domain("job")["status"]["status"] == "Ready")
        assert daemon.restarts == 1 and daemon.child is not child


def test_controller_restarted_mid_reconcile_converges_without_duplicates(dirs: tuple[Path, Path]) -> None:
    """A controller that dies after half its writes is replaced; the new one finishes without duplicates."""
    with SimCluster(*dirs, nodes=2) as c:
        cd = c.create_domain("job", num_nodes=2)
        first = plan(c.controller.observe(), c.controller.settings)
        assert len(first) >= 4
        for action in first[:2]:
            assert c.controller._perform(action)[0] is None
        c.controller = c.new_controller()
        c.schedule_workload(cd, c.nodes)
        c.run_until("ready", lambda: c.domain("job").get("status", {}).get("status") == "Ready")
        objects = c.store.objects
        assert len(objects.list_objects(DAEMON_SETS, None)) == 1
        assert len(objects.list_objects(RESOURCE_CLAIM_TEMPLATES, None, label_selector=DOMAIN_LABEL)) == 2
        assert len(objects.list_objects(CLIQUES, None)) == 1
        assert c.conflicts() == 0
        assert plan(c.controller.observe(), c.controller.settings) == []


def _clique_of(index: int) -> int:
    return 1 if index < 2 else 2


def test_a_node_outside_the_clique_never_gets_the_other_cliques_channel(dirs: tuple[Path, Path]) -> None:
    """One domain over two cliques: two IMEX domains; no daemon resolves or waits for a foreign peer."""
    with SimCluster(*dirs, nodes=3, clique_of=_clique_of) as c:
        cd = c.create_domain("job")
        c.schedule_workload(cd, c.nodes)
        c.run_until("prepared", lambda: all(not n.pending for n in c.nodes))
        cliques = c.store.objects.list_objects(CLIQUES, None)
        assert sorted(len(x["daemons"]) for x in cliques) == [1, 2]
        for node in c.nodes:
            (pod,) = node.pods.values()
            daemon = _imex(pod.daemon)
            peers = set(parse_hosts_block(daemon.settings.hosts_path.read_text()).values())
            same = {n.ip for n in c.nodes if n.clique == node.clique}
            assert peers == same
            child = daemon.child
            assert isinstance(child, FakeImexProcess) and child.imex is not None
            assert set(child.imex.peers) == same


def test_no_clique_node_joins_but_gets_no_device_node(dirs: tuple[Path, Path]) -> None:
    """A node without multi-node NVLink (all-zero cluster UUID) idles its daemon and injects nothing."""
    with SimCluster(*dirs, nodes=1) as c:
        node = c.nodes[0]
        assert node.plugin is not None
        node.plugin.driver.clique_id = ""
        cd = c.create_domain("job")
        (ref,) = c.schedule_workload(cd, [node])
        c.run_until("prepared", lambda: not node.pending)
        assert not node.plugin.driver.spec_path(ref.uid).exists()
        (pod,) = node.pods.values()
        assert _imex(pod.daemon).child is None and pod.daemon.check()
        assert c.domain("job")["status"]["nodes"][0]["index"] == -1


def test_claim_in_another_namespace_fails_permanently(dirs: tuple[Path, Path]) -> None:
    """A channel claim outside the domain's namespace is refused without labelling the node."""
    with SimCluster(*dirs, nodes=1) as c:
        cd = c.create_domain("job", namespace="team-a")
        c.run_until(
            "template", lambda: bool(c.store.objects.list_objects(RESOURCE_CLAIM_TEMPLATES, "team-a"))
        )
        template = c.store.objects.peek(RESOURCE_CLAIM_TEMPLATES, "job-channel", "team-a")
        c.store.objects.create_object(
            RESOURCE_CLAIM_TEMPLATES, dict(template, metadata={"name": "x", "namespace": "b"})
        )
        node: SimNode = c.nodes[0]
        ref = c.claim_from_template("x", "b", node.name, "channel-0")
        _, error = node.prepare(ref)
        assert "permanent" in error and "namespace" in error
        labels = c.store.objects.peek(NODES, node.name)["metadata"].get("labels") or {}
        assert DOMAIN_LABEL not in labels
        del cd


def test_all_mode_injects_every_channel(dirs: tuple[Path, Path]) -> None:
    """allocationMode All: 2048 channel nodes sharing the major from /proc/devices."""
    with SimCluster(*dirs, nodes=1) as c:
        cd = c.create_domain("job", mode="All")
        (ref,) = c.schedule_workload(cd, c.nodes)
        c.run_until("prepared", lambda: not c.nodes[0].pending)
        assert c.nodes[0].plugin is not None
        nodes = read_spec(c.nodes[0].plugin.driver.spec_path(ref.uid)).devices[0].container_edits.device_nodes
        assert [n.minor for n in nodes] == list(range(2048)) and {n.major for n in nodes} == {CHANNEL_MAJOR}


def test_observed_plan_ignores_unlabelled_objects(dirs: tuple[Path, Path]) -> None:
    """Objects without the domain label are never touched by the controller."""
    with SimCluster(*dirs, nodes=1) as c:
        c.store.add_node("other", labels={"team": "x"})
        assert plan(Observed(domains=[]), c.controller.settings) == []
        c.controller.reconcile_once()
        assert c.store.objects.peek(NODES, "other")["metadata"]["labels"] == {"team": "x"}
