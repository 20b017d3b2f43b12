"""ComputeDomain reconcile planning: observed objects in, the writes that converge them out (pure).

The controller observes everything (from its informers' caches), calls :func:`plan`, and performs the
returned :class:`Action` s. Keeping the decisions here makes them testable without an API server and
keeps the write count minimal by construction:

- the controller is the **only writer** of ComputeDomainClique objects and of ComputeDomain status.
  Daemons register by labelling their own pod (``resource.nvidia.com/computeDomain.cliqueID``), the
  kubelet marks the pod Ready from the daemon's ``check`` probe, and each period folds every pod of a
  clique into one clique write. Nobody races on a shared object, so there are no 409 storms, no lost
  entries, and no per-daemon index negotiation (indices come from :func:`~nvdra.imex.cliques.assign_indices`);
- an object is written only when its rendered content differs from what was observed;
- a domain spanning several cliques gets one clique object (one IMEX domain) per clique, each capped at
  ``max_nodes`` members.

Every write is conditional, as a real kube-apiserver requires of custom resources: status updates carry
the observed ``resourceVersion``, finalizer changes are merge patches of ``metadata`` only (never the
spec: a claim template's opaque parameters must not be re-sent) with the observed ``resourceVersion``
as precondition, and a node label is removed under the node's ``resourceVersion``. When one of these
meets a 409 the caller re-reads the object and asks :func:`refresh` for the same intent against it
(bounded retries): the write is redone only if it is still needed.

Deletion: a domain being deleted has its templates, DaemonSet, cliques and node labels removed (their
finalizers dropped); once nothing of it is observed any more, its own finalizer goes. Objects and node
labels naming a domain UID that no longer exists (orphans) are cleaned up the same way. The caller must
list domains *after* the other objects, so that every object observed belongs to a domain that existed
before the domain list was taken.
"""

from __future__ import annotations

__all__ = ["Action", "Observed", "Settings", "desired_status", "plan", "pod_ready", "refresh"]

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from nvdra.imex.cliques import assign_indices, clique_object_name
from nvdra.imex.objects import (
    API_VERSION,
    CLIQUE_LABEL,
    DOMAIN_LABEL,
    FINALIZER,
    daemon_claim_template,
    daemon_set,
    domain_uid,
    workload_claim_template,
)

JsonObject = dict[str, Any]
Verb = Literal["create", "update", "update-status", "patch", "delete"]
Intent = Literal["", "add-finalizer", "remove-finalizer", "unlabel-node", "status"]


@attrs.frozen(kw_only=True)
class Action:
    """One write: ``kind`` is the object's kind (``DaemonSet``, ``ComputeDomainClique``, ``Node``, …)."""

    verb: Verb
    kind: str
    name: str
    namespace: str | None = None
    body: JsonObject | None = None
    why: str = ""
    intent: Intent = ""
    """What a conditional write means, so that :func:`refresh` can redo it against a fresh object."""
    domain: str = ""
    """The ComputeDomain UID a node-label removal is about (refresh keeps another domain's label)."""


@attrs.frozen(kw_only=True)
class Settings:
    """What the controller was started with."""

    namespace: str
    image: str = "nvdra:latest"
    max_nodes: int = 18
    feature_gates: str = ""
    log_verbosity: int = 0
    pull_secrets: tuple[str, ...] = ()
    simulate: str = ""
    """A simulated node profile: handed to the daemons (``NVDRA_SIMULATE``) so they run the fake IMEX."""
    host_managed: bool = False
    """``--imex-mode=hostManaged`` (HostManagedIMEXDaemon): the nodes run nvidia-imex themselves, so a
    domain gets only its workload claim template, no DaemonSet, no daemon template and no cliques, and
    is Ready once admitted (it says nothing about the hosts' IMEX; the CD plugin checks that)."""


@attrs.frozen(kw_only=True)
class Observed:
    """One consistent-enough snapshot: everything labelled with a domain UID, and the domains."""

    domains: Sequence[JsonObject]
    daemon_sets: Sequence[JsonObject] = ()
    templates: Sequence[JsonObject] = ()
    cliques: Sequence[JsonObject] = ()
    pods: Sequence[JsonObject] = ()
    nodes: Sequence[JsonObject] = ()


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _uid_of(obj: Mapping[str, Any]) -> str:
    return _labels(obj).get(DOMAIN_LABEL, "")


def _meta(obj: Mapping[str, Any]) -> JsonObject:
    return dict(obj.get("metadata") or {})


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's ``Ready`` condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _registered(pods: Sequence[JsonObject]) -> list[JsonObject]:
    """Daemon pods that registered (carry the clique label), are running somewhere and not going away."""
    out = []
    for pod in pods:
        meta = _meta(pod)
        if CLIQUE_LABEL not in _labels(pod) or meta.get("deletionTimestamp"):
            continue
        if (pod.get("spec") or {}).get("nodeName") and (pod.get("status") or {}).get("podIP"):
            out.append(pod)
    return out


def _clique_entries(
    uid: str, clique: str, pods: Sequence[JsonObject], current: JsonObject | None, max_nodes: int
) -> tuple[list[JsonObject], tuple[str, ...]]:
    by_node = {p["spec"]["nodeName"]: p for p in pods}
    before = {d["nodeName"]: int(d.get("index", -1)) for d in (current or {}).get("daemons") or []}
    assignment = assign_indices(before, sorted(by_node), max_nodes)
    entries = [
        {
            "nodeName": node,
            "ipAddress": by_node[node]["status"]["podIP"],
            "cliqueID": clique,
            "index": index,
            "status": "Ready" if pod_ready(by_node[node]) else "NotReady",
        }
        for node, index in sorted(assignment.indices.items(), key=lambda kv: kv[1])
    ]
    return entries, assignment.waiting


def _clique_actions(
    uid: str, pods: Sequence[JsonObject], cliques: Mapping[str, JsonObject], settings: Settings
) -> tuple[list[Action], list[JsonObject]]:
    """Clique writes of one domain, and its status nodes."""
    actions: list[Action] = []
    nodes: list[JsonObject] = []
    grouped: dict[str, list[JsonObject]] = {}
    for pod in _registered(pods):
        grouped.setdefault(_labels(pod)[CLIQUE_LABEL], []).append(pod)
    for pod in grouped.pop("", []):
        nodes.append(
            {
                "name": pod["spec"]["nodeName"],
                "ipAddress": pod["status"]["podIP"],
                "cliqueID": "",
                "index": -1,
                "status": "Ready" if pod_ready(pod) else "NotReady",
            }
        )
    for clique, members in sorted(grouped.items()):
        name = clique_object_name(uid, clique)
        current = cliques.get(name)
        entries, waiting = _clique_entries(uid, clique, members, current, settings.max_nodes)
        nodes += [
            {
                "name": e["nodeName"],
                "ipAddress": e["ipAddress"],
                "cliqueID": clique,
                "index": e["index"],
                "status": e["status"],
            }
            for e in entries
        ]
        nodes += [
            {"name": n, "ipAddress": p["status"]["podIP"], "cliqueID": clique, "status": "NotReady"}
            for p in members
            for n in [p["spec"]["nodeName"]]
            if n in waiting
        ]
        if current is None:
            labels = {DOMAIN_LABEL: uid, CLIQUE_LABEL: clique}
            meta = {"name": name, "namespace": settings.namespace, "labels": labels}
            body = {
                "apiVersion": API_VERSION,
                "kind": "ComputeDomainClique",
                "metadata": meta,
                "daemons": entries,
            }
            actions.append(_clique_write("create", name, settings, "first daemon registered", body))
        elif (current.get("daemons") or []) != entries:
            body = dict(current, daemons=entries)
            actions.append(_clique_write("update", name, settings, "members or readiness changed", body))
    for name, current in sorted(cliques.items()):
        clique = _labels(current).get(CLIQUE_LABEL, name.partition(".")[2])
        if clique not in grouped:
            actions.append(_clique_write("delete", name, settings, "no daemon left in the clique"))
    nodes.sort(key=lambda n: n["name"])
    return actions, nodes


def _clique_write(
    verb: Verb, name: str, settings: Settings, why: str, body: JsonObject | None = None
) -> Action:
    """A write of one ComputeDomainClique in the driver's namespace."""
    return Action(
        verb=verb, kind="ComputeDomainClique", name=name, namespace=settings.namespace, body=body, why=why
    )


def desired_status(cd: Mapping[str, Any], nodes: Sequence[JsonObject]) -> JsonObject:
    """``Ready`` iff at least ``numNodes`` daemons are registered, each Ready and inside its clique cap."""
    want = int((cd.get("spec") or {}).get("numNodes") or 0)
    ready = len(nodes) >= want and all(n.get("status") == "Ready" and "index" in n for n in nodes)
    return {"status": "Ready" if ready else "NotReady", "nodes": list(nodes)}


def _finalizer_action(kind: str, obj: Mapping[str, Any], why: str, *, add: bool) -> list[Action]:
    """A merge patch of ``metadata`` only: the finalizers and the observed resourceVersion (precondition)."""
    meta = _meta(obj)
    finalizers = list(meta.get("finalizers") or [])
    if (FINALIZER in finalizers) == add or (add and meta.get("deletionTimestamp")):
        return []
    rest = [*finalizers, FINALIZER] if add else [f for f in finalizers if f != FINALIZER]
    patch = {"metadata": {"finalizers": rest or None, "resourceVersion": meta.get("resourceVersion")}}
    return [
        Action(
            verb="patch",
            kind=kind,
            name=meta["name"],
            namespace=meta.get("namespace"),
            body=patch,
            why=why,
            intent="add-finalizer" if add else "remove-finalizer",
        )
    ]


def _drop_finalizer(kind: str, obj: Mapping[str, Any], why: str) -> list[Action]:
    return _finalizer_action(kind, obj, why, add=False)


def _remove(kind: str, obj: Mapping[str, Any], why: str) -> list[Action]:
    """Drop the finalizer first (under the observed resourceVersion), then delete: the other order
    bumps the version between the two writes and turns the finalizer patch into a 409."""
    meta = _meta(obj)
    actions = _drop_finalizer(kind, obj, why)
    if not meta.get("deletionTimestamp"):
        actions.append(
            Action(verb="delete", kind=kind, name=meta["name"], namespace=meta.get("namespace"), why=why)
        )
    return actions


def _unlabel(node: Mapping[str, Any], why: str) -> Action:
    meta = _meta(node)
    labels = {DOMAIN_LABEL: None}
    return Action(
        verb="patch",
        kind="Node",
        name=meta["name"],
        body={"metadata": {"labels": labels, "resourceVersion": meta.get("resourceVersion")}},
        why=why,
        intent="unlabel-node",
        domain=_labels(node).get(DOMAIN_LABEL, ""),
    )


def _status_action(cd: Mapping[str, Any], status: JsonObject, why: str) -> Action:
    """A PUT of ``/status`` carrying the observed resourceVersion (custom resources require one)."""
    meta = _meta(cd)
    return Action(
        verb="update-status",
        kind="ComputeDomain",
        name=meta["name"],
        namespace=meta.get("namespace"),
        body=dict(cd, status=status),
        why=why,
        intent="status",
    )


def refresh(action: Action, current: Mapping[str, Any]) -> Action | None:
    """``action`` redone against ``current`` (re-read after a 409), or None when no longer needed.

    Only conditional writes (those with an ``intent``) can be refreshed; others return None.
    """
    if action.intent == "status":
        assert action.body is not None
        status = action.body.get("status") or {}
        if {k: (current.get("status") or {}).get(k) for k in status} == status:
            return None
        return _status_action(current, status, action.why)
    if action.intent in ("add-finalizer", "remove-finalizer"):
        found = _finalizer_action(action.kind, current, action.why, add=action.intent == "add-finalizer")
        return found[0] if found else None
    if action.intent == "unlabel-node":
        uid = _labels(current).get(DOMAIN_LABEL)
        if not uid or uid != action.domain:
            return None
        return _unlabel(current, action.why)
    return None


def _teardown(uid: str, owned: Mapping[str, list[tuple[str, JsonObject]]], why: str) -> list[Action]:
    actions: list[Action] = []
    for kind, obj in owned.get(uid, []):
        if kind == "Node":
            actions.append(_unlabel(obj, why))
        else:
            actions += _remove(kind, obj, why)
    return actions


def plan(observed: Observed, settings: Settings) -> list[Action]:
    """Every write that moves the observed state toward the desired one (see the module docstring)."""
    owned: dict[str, list[tuple[str, JsonObject]]] = {}
    for kind, objs in (
        ("ResourceClaimTemplate", observed.templates),
        ("DaemonSet", observed.daemon_sets),
        ("ComputeDomainClique", observed.cliques),
        ("Node", observed.nodes),
    ):
        for obj in objs:
            if _uid_of(obj):
                owned.setdefault(_uid_of(obj), []).append((kind, obj))
    pods: dict[str, list[JsonObject]] = {}
    for pod in observed.pods:
        pods.setdefault(_uid_of(pod), []).append(pod)
    live = {domain_uid(cd) for cd in observed.domains}
    actions: list[Action] = []
    for cd in observed.domains:
        actions += _plan_domain(cd, owned, pods.get(domain_uid(cd), []), settings)
    for uid in sorted(set(owned) - live):
        actions += _teardown(uid, owned, "orphan: its ComputeDomain no longer exists")
    return actions


def _host_managed_domain(cd: JsonObject, names: set[tuple[str, str, Any]]) -> list[Action]:
    """Host-managed IMEX: the workload claim template, and Ready status; nothing runs IMEX for it."""
    body = workload_claim_template(cd)
    actions: list[Action] = []
    if ("ResourceClaimTemplate", body["metadata"]["name"], body["metadata"]["namespace"]) not in names:
        actions.append(
            Action(
                verb="create",
                kind="ResourceClaimTemplate",
                name=body["metadata"]["name"],
                namespace=body["metadata"]["namespace"],
                body=body,
                why="missing",
            )
        )
    status = {"status": "Ready", "nodes": []}
    current = cd.get("status") or {}
    if {"status": current.get("status"), "nodes": current.get("nodes") or []} != status:
        actions.append(_status_action(cd, status, "host-managed IMEX: Ready once admitted"))
    return actions


def _plan_domain(
    cd: JsonObject,
    owned: Mapping[str, list[tuple[str, JsonObject]]],
    pods: Sequence[JsonObject],
    settings: Settings,
) -> list[Action]:
    uid, meta = domain_uid(cd), _meta(cd)
    mine = owned.get(uid, [])
    if meta.get("deletionTimestamp"):
        if FINALIZER not in (meta.get("finalizers") or []):
            return []
        if mine:
            return _teardown(uid, owned, "ComputeDomain is being deleted")
        return _drop_finalizer("ComputeDomain", cd, "everything of the ComputeDomain is gone")
    actions: list[Action] = []
    actions += _finalizer_action("ComputeDomain", cd, "add finalizer", add=True)
    names = {(k, _meta(o)["name"], _meta(o).get("namespace")) for k, o in mine}
    if settings.host_managed:
        return actions + _host_managed_domain(cd, names)
    wanted = [
        (
            "DaemonSet",
            daemon_set(
                cd,
                namespace=settings.namespace,
                image=settings.image,
                max_nodes=settings.max_nodes,
                feature_gates=settings.feature_gates,
                log_verbosity=settings.log_verbosity,
                pull_secrets=settings.pull_secrets,
                simulate=settings.simulate,
            ),
        ),
        ("ResourceClaimTemplate", daemon_claim_template(cd, settings.namespace)),
        ("ResourceClaimTemplate", workload_claim_template(cd)),
    ]
    for kind, body in wanted:
        if (kind, body["metadata"]["name"], body["metadata"]["namespace"]) not in names:
            actions.append(
                Action(
                    verb="create",
                    kind=kind,
                    name=body["metadata"]["name"],
                    namespace=body["metadata"]["namespace"],
                    body=body,
                    why="missing",
                )
            )
    cliques = {_meta(o)["name"]: o for k, o in mine if k == "ComputeDomainClique"}
    clique_actions, nodes = _clique_actions(uid, pods, cliques, settings)
    actions += clique_actions
    status = desired_status(cd, nodes)
    current = cd.get("status") or {}
    if {"status": current.get("status"), "nodes": current.get("nodes") or []} != status:
        # Under the observed resourceVersion: a finalizer patch in the same pass bumps it, so this
        # write meets a 409 then, and the controller redoes it on the re-read object (refresh).
        actions.append(_status_action(cd, status, "status changed"))
    return actions
