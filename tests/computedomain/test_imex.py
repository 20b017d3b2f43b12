"""The pure IMEX layer: config files, cliques, indices, channels, and the controller's plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nvdra.core.config import ChannelAllocationMode
from nvdra.core.devices import FabricInfo
from nvdra.core.errors import ConfigError, HostError
from nvdra.imex import (
    CLIQUE_LABEL,
    DOMAIN_LABEL,
    FINALIZER,
    Observed,
    Settings,
    assign_indices,
    channel_ids,
    clique_id_of,
    dns_name,
    parse_config,
    parse_hosts_block,
    plan,
    refresh,
    render_config,
    update_hosts,
)

CRDS = Path(__file__).resolve().parents[2] / "deployments/helm/nvdra/crds"
UUID = "8c1f3e52-6a0d-4b7e-9f24-3d95a1c7e0b6"


def fabric(state: int = 3, status: int = 0, uuid: str = UUID, clique: int = 7) -> FabricInfo:
    return FabricInfo(state=state, status=status, cluster_uuid=uuid, clique_id=clique)


def test_config_round_trips_and_carries_template_values() -> None:
    """The rendered config parses back with the bind IP, the nodes file and upstream's fixed values."""
    parsed = parse_config(render_config(bind_ip="10.0.0.7", nodes_file="/imexd/nodes.cfg"))
    assert parsed["IMEX_CMD_BIND_INTERFACE_IP"] == "10.0.0.7"
    assert parsed["IMEX_NODE_CONFIG_FILE"] == "/imexd/nodes.cfg"
    assert parsed["SERVER_PORT"] == "50000" and parsed["IMEX_CMD_PORT"] == "50005"
    assert parsed["DAEMONIZE"] == "0"


def test_config_rejects_a_bad_ip() -> None:
    """A bind address that is not an IP is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match="IMEX_CMD_BIND_INTERFACE_IP"):
        render_config(bind_ip="not-an-ip")


@given(st.dictionaries(st.integers(0, 17), st.ip_addresses(v=4).map(str), max_size=18))
def test_hosts_block_replaced_and_other_lines_kept(peers: dict[int, str]) -> None:
    """update_hosts owns only its block: foreign lines survive, the block equals the mapping, idempotent."""
    names = {dns_name(i): ip for i, ip in peers.items()}
    base = "127.0.0.1\tlocalhost\n10.9.9.9\tpod\n"
    once = update_hosts(update_hosts(base, {"compute-domain-daemon-0099": "1.2.3.4"}), names)
    assert once.startswith(base)
    assert parse_hosts_block(once) == names
    assert update_hosts(once, names) == once


def test_clique_id_strict_and_legacy() -> None:
    """Strict: incomplete registration is an error; legacy: no clique. All-zero UUID: no clique."""
    assert clique_id_of([("g0", fabric()), ("g1", fabric())]) == f"{UUID}.7"
    assert clique_id_of([("g0", fabric(uuid="00000000-0000-0000-0000-000000000000"))]) == ""
    assert clique_id_of([("g0", None), ("g1", fabric(state=0))]) == ""
    with pytest.raises(HostError, match="not completed"):
        clique_id_of([("g0", fabric(state=2))])
    assert clique_id_of([("g0", fabric(state=2))], strict=False) == ""
    with pytest.raises(HostError, match="disagree"):
        clique_id_of([("g0", fabric(clique=1)), ("g1", fabric(clique=2))])


NODES = st.sampled_from([f"n{i}" for i in range(30)])


@given(st.dictionaries(NODES, st.integers(-1, 25)), st.sets(NODES), st.integers(1, 20))
def test_indices_are_unique_stable_and_capped(current: dict[str, int], members: set[str], cap: int) -> None:
    """Indices are unique and < cap, kept for members that held a valid unique one; the rest wait."""
    out = assign_indices(current, sorted(members), cap)
    values = list(out.indices.values())
    assert len(values) == len(set(values)) and all(0 <= v < cap for v in values)
    assert set(out.indices) | set(out.waiting) == members
    assert len(out.indices) == min(len(members), cap)
    owners: dict[int, str] = {}
    for node in sorted(current):
        i = current[node]
        if node in members and 0 <= i < cap and i not in owners:
            owners[i] = node
    for i, node in owners.items():
        assert out.indices[node] == i


def test_channel_ids() -> None:
    """Single gives channel 0; All gives 0..2047; a zero count is refused."""
    assert channel_ids(None) == (0,)
    assert channel_ids(ChannelAllocationMode.ALL) == tuple(range(2048))
    with pytest.raises(ConfigError):
        channel_ids(None, count=0)


# -- the plan ------------------------------------------------------------------------------------


def domain(
    uid: str = "u1", *, finalizers: tuple[str, ...] = (FINALIZER,), num_nodes: int = 0
) -> dict[str, Any]:
    return {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomain",
        "metadata": {
            "name": "cd",
            "namespace": "ns",
            "uid": uid,
            "finalizers": list(finalizers),
            "resourceVersion": "5",
        },
        "spec": {"numNodes": num_nodes, "channel": {"resourceClaimTemplate": {"name": "cd-ch"}}},
    }


def pod(node: str, clique: str, ip: str, *, ready: bool = True, uid: str = "u1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"p-{node}",
            "namespace": "nvdra",
            "labels": {DOMAIN_LABEL: uid, CLIQUE_LABEL: clique},
        },
        "spec": {"nodeName": node},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


SETTINGS = Settings(namespace="nvdra", max_nodes=18)


def test_new_domain_gets_finalizer_daemonset_and_both_templates() -> None:
    """A fresh domain: finalizer, DaemonSet, daemon template (driver ns) and workload template (its ns)."""
    kinds = [(a.verb, a.kind, a.namespace) for a in plan(Observed(domains=[domain(finalizers=())]), SETTINGS)]
    assert ("patch", "ComputeDomain", "ns") in kinds
    assert ("create", "DaemonSet", "nvdra") in kinds
    assert ("create", "ResourceClaimTemplate", "nvdra") in kinds
    assert ("create", "ResourceClaimTemplate", "ns") in kinds


def test_thirty_six_nodes_make_two_cliques_in_one_write_each() -> None:
    """36 daemons in two racks: two clique creates (18 entries, indices 0..17 each), one status write."""
    pods = [pod(f"n{i:02d}", f"{UUID}.{i // 18 + 1}", f"10.0.0.{i + 1}") for i in range(36)]
    actions = plan(Observed(domains=[domain()], pods=pods), SETTINGS)
    cliques = [a for a in actions if a.kind == "ComputeDomainClique"]
    assert [a.verb for a in cliques] == ["create", "create"]
    for a in cliques:
        assert a.body is not None
        assert sorted(d["index"] for d in a.body["daemons"]) == list(range(18))
    status = [a for a in actions if a.verb == "update-status"]
    assert len(status) == 1 and status[0].body is not None
    assert status[0].body["status"]["status"] == "Ready" and len(status[0].body["status"]["nodes"]) == 36


def test_nineteen_nodes_in_one_clique_leave_one_waiting_and_not_ready() -> None:
    """Over the IMEX domain limit, the 19th node waits (no index) and the domain stays NotReady."""
    pods = [pod(f"n{i:02d}", f"{UUID}.1", f"10.0.0.{i + 1}") for i in range(19)]
    actions = plan(Observed(domains=[domain()], pods=pods), SETTINGS)
    status = next(a for a in actions if a.verb == "update-status")
    assert status.body is not None
    assert [n["name"] for n in status.body["status"]["nodes"] if "index" not in n] == ["n18"]
    assert status.body["status"]["status"] == "NotReady"


def test_plan_is_quiet_once_converged() -> None:
    """After applying the plan's writes, the next plan writes nothing."""
    pods = [pod("a", f"{UUID}.1", "10.0.0.1"), pod("b", f"{UUID}.1", "10.0.0.2", ready=False)]
    cd = domain()
    first = plan(Observed(domains=[cd], pods=pods), SETTINGS)
    made = {a.kind: a.body for a in first if a.verb in ("create", "update-status") and a.body}
    cd = dict(cd, status=made["ComputeDomain"]["status"])
    rest = [a.body for a in first if a.verb == "create" and a.body]
    second = plan(
        Observed(
            domains=[cd],
            pods=pods,
            cliques=[b for b in rest if b["kind"] == "ComputeDomainClique"],
            daemon_sets=[b for b in rest if b["kind"] == "DaemonSet"],
            templates=[b for b in rest if b["kind"] == "ResourceClaimTemplate"],
        ),
        SETTINGS,
    )
    assert second == []
    assert cd["status"]["status"] == "NotReady"


def test_deleted_domain_is_torn_down_then_released() -> None:
    """A deleting domain: owned objects go, node labels drop; once nothing is left, its finalizer goes."""
    cd = dict(domain(), metadata=dict(domain()["metadata"], deletionTimestamp="now"))
    node = {"metadata": {"name": "n1", "labels": {DOMAIN_LABEL: "u1"}}}
    ds = {
        "metadata": {
            "name": "computedomain-daemon-u1",
            "namespace": "nvdra",
            "labels": {DOMAIN_LABEL: "u1"},
            "finalizers": [FINALIZER],
        }
    }
    actions = plan(Observed(domains=[cd], nodes=[node], daemon_sets=[ds]), SETTINGS)
    assert {(a.verb, a.kind) for a in actions} == {
        ("patch", "Node"),
        ("delete", "DaemonSet"),
        ("patch", "DaemonSet"),
    }
    final = plan(Observed(domains=[cd]), SETTINGS)
    assert [(a.verb, a.kind) for a in final] == [("patch", "ComputeDomain")]
    # metadata only, under the observed resourceVersion: never an unconditional write, never the spec
    assert final[0].body == {"metadata": {"finalizers": None, "resourceVersion": "5"}}
    assert final[0].intent == "remove-finalizer"


def test_status_write_carries_the_resource_version_and_refresh_redoes_it() -> None:
    """A custom resource's /status PUT needs metadata.resourceVersion (422 without); after a 409 the
    write is redone on the re-read object only if the status still differs."""
    pods = [pod("a", "", "10.0.0.1")]
    status = next(a for a in plan(Observed(domains=[domain()], pods=pods), SETTINGS) if a.intent == "status")
    assert status.body is not None and status.body["metadata"]["resourceVersion"] == "5"
    fresh = dict(domain(), metadata=dict(domain()["metadata"], resourceVersion="9", labels={"x": "y"}))
    again = refresh(status, fresh)
    assert again is not None and again.body is not None
    assert again.body["metadata"]["resourceVersion"] == "9" and again.body["metadata"]["labels"] == {"x": "y"}
    assert again.body["status"] == status.body["status"]
    assert refresh(status, dict(fresh, status=status.body["status"])) is None


def test_refresh_of_finalizer_and_label_writes_follows_the_fresh_object() -> None:
    """Finalizer add/remove and the node unlabel are recomputed from the re-read object, or dropped."""
    add = next(a for a in plan(Observed(domains=[domain(finalizers=())]), SETTINGS) if a.intent)
    assert add.intent == "add-finalizer"
    fresh = dict(domain(finalizers=("other",)), metadata=dict(domain(finalizers=("other",))["metadata"]))
    fresh["metadata"]["resourceVersion"] = "12"
    redone = refresh(add, fresh)
    assert redone is not None and redone.body == {
        "metadata": {"finalizers": ["other", FINALIZER], "resourceVersion": "12"}
    }
    assert refresh(add, domain()) is None  # someone else added it meanwhile
    node = {"metadata": {"name": "n1", "resourceVersion": "3", "labels": {DOMAIN_LABEL: "gone"}}}
    unlabel = next(a for a in plan(Observed(domains=[], nodes=[node]), SETTINGS) if a.kind == "Node")
    assert unlabel.body == {"metadata": {"labels": {DOMAIN_LABEL: None}, "resourceVersion": "3"}}
    relabeled = {"metadata": {"name": "n1", "resourceVersion": "4", "labels": {DOMAIN_LABEL: "new"}}}
    assert refresh(unlabel, relabeled) is None  # the node joined another domain: keep its label
    moved = {"metadata": {"name": "n1", "resourceVersion": "4", "labels": {DOMAIN_LABEL: "gone", "a": "b"}}}
    again = refresh(unlabel, moved)
    assert again is not None and again.body is not None
    assert again.body["metadata"]["resourceVersion"] == "4"


def test_orphans_are_cleaned() -> None:
    """Objects and labels naming a UID with no domain are removed."""
    node = {"metadata": {"name": "n1", "labels": {DOMAIN_LABEL: "gone"}}}
    clique = {"metadata": {"name": "gone.x", "namespace": "nvdra", "labels": {DOMAIN_LABEL: "gone"}}}
    actions = plan(Observed(domains=[], nodes=[node], cliques=[clique]), SETTINGS)
    assert {(a.verb, a.kind, a.name) for a in actions} == {
        ("patch", "Node", "n1"),
        ("delete", "ComputeDomainClique", "gone.x"),
    }


def _schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / name).read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_rendered_objects_fit_the_crd_schemas() -> None:
    """The status and clique objects the plan writes validate against the shipped CRD schemas."""
    pods = [pod("a", f"{UUID}.1", "10.0.0.1"), pod("b", "", "10.0.0.2")]
    actions = plan(Observed(domains=[domain()], pods=pods), SETTINGS)
    bodies = {a.kind: a.body for a in actions if a.body and a.verb in ("create", "update-status")}
    cd_schema = _schema("resource.nvidia.com_computedomains.yaml")
    jsonschema.validate(bodies["ComputeDomain"], cd_schema)
    jsonschema.validate(
        bodies["ComputeDomainClique"], _schema("resource.nvidia.com_computedomaincliques.yaml")
    )
    bad = dict(
        bodies["ComputeDomain"], spec={"numNodes": -1, "channel": {"resourceClaimTemplate": {"name": "x"}}}
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, cd_schema)
