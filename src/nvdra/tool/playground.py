"""``nvdra playground``: a one-node cluster in a process, for the real ``kubectl``.

What runs (all production code, as in ``nvdra demo``): the in-memory API server
(:class:`~nvdra.kubeletplugin.ApiServer`, here with the discovery documents ``kubectl`` needs), the
GPU kubelet plugin on a simulated node (:func:`nvdra.plugins.gpu.serve.serve`), a kubelet client
that registered it, and :class:`ClusterLoop`, which stands in for the rest of Kubernetes:

- the workload controllers: a Deployment, StatefulSet, ReplicaSet, Job or DaemonSet gets its pods
  from its template (``<name>-<i>``) and its ready count — the MPS control daemon the plugin creates
  included; pods whose owner is gone are deleted;
- the ResourceClaim controller: a pod's ``resourceClaimTemplateName`` entry becomes the claim
  ``<pod>-<entry>`` (owned by the pod), and ``status.resourceClaimStatuses`` names it;
- the scheduler's DRA rules: a pending pod's claims are allocated together by :mod:`nvdra.alloc`
  against the node's ResourceSlices, the DeviceClasses and every claim already allocated; the claims
  get ``status.allocation`` and ``reservedFor``, the pod its ``spec.nodeName`` (or a
  ``PodScheduled=False`` condition saying why not);
- the kubelet: NodePrepareResources for a bound pod's claims, on a worker thread (an MPS prepare
  waits for its daemon, which this loop starts) — the pod turns ``Running``, or stays ``Pending`` with
  the plugin's error —, NodeUnprepareResources once the pod is deleted, after which its claims are
  released (deallocated when no pod holds them; generated ones deleted).

ComputeDomains are not served here (no CRD, controller or IMEX daemons): ``nvdra demo computedomain``
runs that side.

``kubectl get`` prints the columns a cluster's API server chooses (the ApiServer answers its Table
requests: :mod:`nvdra.kubeletplugin.testing_tables`); a started pod reports its containers ready and
the node reports Ready and its kubelet version, as a kubelet would.

The chart's DeviceClasses are created at start. Everything is plain HTTP on 127.0.0.1, no
authentication: a playground, not a cluster.
"""

from __future__ import annotations

__all__ = ["ClusterLoop", "Playground", "PlaygroundApiServer", "playground"]

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs

from nvdra.alloc import Allocator, allocated_devices, builtin_device_classes
from nvdra.core.errors import KubeApiError, KubeNotFound, NvdraError
from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, RegisteredPlugin
from nvdra.kubeletplugin.objects import (
    BUILTIN_TYPES,
    DAEMON_SETS,
    DEPLOYMENTS,
    DEVICE_CLASSES,
    NAMESPACES,
    NODES,
    PODS,
    RESOURCE_CLAIM_TEMPLATES,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    ResourceType,
)
from nvdra.kubeletplugin.types import JsonObject, PrepareResult
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import RunningPlugin, serve

log = logging.getLogger(__name__)

NODE = "playground-node"
NAMESPACE = "nvdra"
STATEFUL_SETS = ResourceType.of("apps/v1", "StatefulSet")
REPLICA_SETS = ResourceType.of("apps/v1", "ReplicaSet")
JOBS = ResourceType.of("batch/v1", "Job")
WORKLOADS = (DEPLOYMENTS, STATEFUL_SETS, REPLICA_SETS, DAEMON_SETS, JOBS)
"""Kinds whose pods the loop creates from their template (one node: a DaemonSet makes one pod)."""
SERVED: tuple[ResourceType, ...] = (STATEFUL_SETS, REPLICA_SETS, JOBS, *BUILTIN_TYPES)
_SHORT_NAMES = {"pods": ["po"], "nodes": ["no"], "namespaces": ["ns"], "deployments": ["deploy"]}
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _resource(rt: ResourceType) -> JsonObject:
    return {
        "name": rt.plural,
        "singularName": rt.kind.lower(),
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": _VERBS,
        "shortNames": _SHORT_NAMES.get(rt.plural, []),
    }


class PlaygroundApiServer(ApiServer):
    """The in-memory API server with the discovery ``kubectl`` reads: ``/apis`` naming every group
    served, and an ``APIResourceList`` per group version (``/api/v1``, ``/apis/GROUP/VERSION``)."""

    def __init__(self, store: FakeKube, *, port: int = 0, namespace_grace: float = 2.0) -> None:
        super().__init__(store, port=port)
        for rt in (STATEFUL_SETS, REPLICA_SETS, JOBS):  # workload kinds the API server does not serve itself
            self.register(rt)
        self.resource_versions = tuple(v for v in ("v1", "v1beta2", "v1beta1") if v in store.served_versions)
        self.namespace_grace = namespace_grace

    def _delete_namespace_later(self, name: str) -> JsonObject:
        """A namespace goes away after ``namespace_grace`` seconds, as the namespace controller empties
        it asynchronously: ``kubectl delete -f`` deletes the namespace first and then the objects in
        it, which must still be there."""
        current = self.store.objects.get_object(NAMESPACES, name)

        def delete() -> None:
            try:
                self.store.objects.delete_object(NAMESPACES, name)
            except KubeApiError as exc:
                log.warning("namespace %s not deleted: %s", name, exc)

        timer = threading.Timer(self.namespace_grace, delete)
        timer.daemon = True
        timer.start()
        current["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        current["status"] = {"phase": "Terminating"}
        return current

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in SERVED:
            versions = self.resource_versions if rt.group == "resource.k8s.io" else (rt.version,)
            groups.setdefault(rt.group, [])
            for v in versions:
                if v not in groups[rt.group]:
                    groups[rt.group].append(v)
        return groups

    def _resource_list(self, group: str, version: str) -> JsonObject | None:
        versions = self._group_versions().get(group)
        if versions is None or version not in versions:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [_resource(rt) for rt in SERVED if rt.group == group]
            + [
                {"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                 "kind": rt.kind, "verbs": ["get", "patch", "update"]}
                for rt in SERVED
                if rt.group == group and rt.status_subresource
            ],
        }  # fmt: skip

    def _group(self, group: str, versions: Sequence[str]) -> JsonObject:
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": listed, "preferredVersion": listed[0]}

    def _openapi(self, path: str) -> JsonObject | None:
        """OpenAPI v3: the index, and per group version the paths whose PATCH takes
        ``fieldValidation`` (all ``kubectl apply`` asks of it before validating on the server side)."""
        groups = self._group_versions()
        if path == "/openapi/v3":
            return {
                "paths": {
                    (f"apis/{g}/{v}" if g else f"api/{v}"): {
                        "serverRelativeURL": f"/openapi/v3/{f'apis/{g}/{v}' if g else f'api/{v}'}"
                    }
                    for g, versions in groups.items()
                    for v in versions
                }
            }
        parts = path.removeprefix("/openapi/v3/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" and len(parts) == 2 else (parts[1], parts[2])
        if version not in groups.get(group, []) or (parts[0] == "apis" and len(parts) != 3):
            return None
        paths: JsonObject = {}
        for rt in SERVED:
            if rt.group != group:
                continue
            prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
            scope = "/namespaces/{namespace}" if rt.namespaced else ""
            gvk = {"group": group, "version": version, "kind": rt.kind}
            parameter = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
            operation = {"x-kubernetes-group-version-kind": gvk, "parameters": [parameter]}
            paths[f"{prefix}{scope}/{rt.plural}/{{name}}"] = {"patch": operation, "put": operation}
            paths[f"{prefix}{scope}/{rt.plural}"] = {"post": operation}
        info = {"title": "nvdra playground", "version": version}
        return {"openapi": "3.0.0", "info": info, "paths": paths, "components": {"schemas": {}}}

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """Discovery first (the documents ``kubectl`` needs), then the API server's own routes."""
        parts = path.strip("/").split("/")
        if query.get("sendInitialEvents") in ("true", "1"):
            # A streaming list ("watch-list") is not served: the client falls back to LIST + WATCH.
            raise KubeApiError("sendInitialEvents is not supported by this server", status=400)
        if method == "DELETE" and len(parts) == 4 and parts[:3] == ["api", "v1", "namespaces"]:
            return 200, self._delete_namespace_later(parts[3])
        if method == "GET" and path.startswith("/openapi/v3"):
            document = self._openapi(path)
            if document is not None:
                return 200, document
        if method == "GET":
            groups = self._group_versions()
            if path == "/apis":
                named = [self._group(g, v) for g, v in sorted(groups.items()) if g]
                return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": named}
            if parts[0] == "api" and len(parts) == 2:
                found = self._resource_list("", parts[1])
                if found is not None:
                    return 200, found
            if parts[0] == "apis" and len(parts) == 2 and parts[1] in groups:
                return 200, {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    **self._group(parts[1], groups[parts[1]]),
                }
            if parts[0] == "apis" and len(parts) == 3:
                found = self._resource_list(parts[1], parts[2])
                if found is not None:
                    return 200, found
        return super().route(method, path, query, body)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _running(pod: Mapping[str, Any]) -> JsonObject:
    """The status a started pod gets: Running, every container running and ready (``kubectl get pods``
    prints READY 1/1), the Ready condition beside PodScheduled."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    containers = (pod.get("spec") or {}).get("containers") or []
    return {
        "phase": "Running",
        "message": "",
        "startTime": now,
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": c.get("name", ""), "image": c.get("image", ""), "ready": True, "started": True,
             "restartCount": 0, "state": {"running": {"startedAt": now}}}
            for c in containers
        ],
    }  # fmt: skip


def _replicas(rt: ResourceType, spec: Mapping[str, Any]) -> int:
    """How many pods a workload wants on this one node."""
    if rt.kind == "Job":
        return int(spec.get("parallelism") or 1)
    if rt.kind == "DaemonSet":
        return 1
    return int(spec.get("replicas", 1))


@attrs.define
class _PodState:
    """What the loop did for one pod: its claims (namespace, name) and whether they are prepared."""

    namespace: str
    name: str
    claims: list[str] = attrs.Factory(list)
    prepared: list[ClaimRef] = attrs.Factory(list)
    attempted: list[ClaimRef] = attrs.Factory(list)
    """Claims handed to NodePrepareResources (unprepared when the pod goes, even if prepare failed)."""
    pending: Future[dict[str, PrepareResult]] | None = None
    """A NodePrepareResources call in flight (it may wait for an MPS daemon the loop must start)."""


class ClusterLoop:
    """The ResourceClaim controller, the scheduler's DRA rules and the kubelet, for one node.

    :meth:`step` does one pass over every pod (tests call it directly); :meth:`start` runs passes
    every ``period`` seconds on a thread until :meth:`stop`.
    """

    def __init__(
        self, store: FakeKube, kubelet: RegisteredPlugin, *, node: str = NODE, period: float = 0.1
    ) -> None:
        self.store = store
        self.kubelet = kubelet
        self.node = node
        self.period = period
        self.pods: dict[str, _PodState] = {}  # pod UID -> state
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nvdra-playground-kubelet")

    # -- the loop ----------------------------------------------------------------------------------

    def start(self) -> ClusterLoop:
        """Run :meth:`step` on a daemon thread every ``period`` seconds."""
        self._thread = threading.Thread(target=self._run, name="nvdra-playground-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (the current pass finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._calls.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.step()
            except (NvdraError, KeyError, TypeError, ValueError) as exc:  # keep serving; say what failed
                message = f"cluster loop: {type(exc).__name__}: {exc}"
                if not self.errors or self.errors[-1] != message:
                    self.errors.append(message)
                    log.error("%s", message)

    def step(self) -> None:
        """One pass: workloads' pods made or collected, the claims of deleted pods released, then the
        pending pods scheduled and started."""
        objects = self.store.objects
        self._workloads()
        pods = {str(_meta(p).get("uid")): p for p in objects.list_objects(PODS, None)}
        for uid in [u for u in self.pods if u not in pods]:
            self._release(self.pods.pop(uid), uid)
        for uid, pod in pods.items():
            if _meta(pod).get("deletionTimestamp"):
                continue
            state = self.pods.setdefault(
                uid, _PodState(str(_meta(pod)["namespace"]), str(_meta(pod)["name"]))
            )
            if not (pod.get("spec") or {}).get("nodeName"):
                self._schedule(pod, state)
            elif not state.prepared and (pod.get("status") or {}).get("phase") != "Running":
                if state.pending is None and (pod.get("status") or {}).get("message", "").startswith(
                    "NodePrepareResources failed"
                ):
                    continue  # the kubelet retries with a back-off; here: once per pod
                self._start(pod, state)

    # -- the workload controllers -----------------------------------------------------------------------

    def _workloads(self) -> None:
        """Each workload gets its pods from its template (``<name>-<i>``; a DaemonSet one, a Job
        ``parallelism``), and its ready count; pods whose owner is gone are deleted."""
        objects = self.store.objects
        pods = objects.list_objects(PODS, None)
        owners: set[str] = set()
        for rt in WORKLOADS:
            for workload in objects.list_objects(rt, None):
                meta = _meta(workload)
                owners.add(str(meta["uid"]))
                if meta.get("deletionTimestamp"):
                    continue
                mine = [
                    p
                    for p in pods
                    if any(o.get("uid") == meta["uid"] for o in _meta(p).get("ownerReferences") or [])
                ]
                want = _replicas(rt, workload.get("spec") or {})
                names = {_meta(p).get("name") for p in mine}
                for i in range(want):
                    name = f"{meta['name']}-{i}"
                    if name not in names:
                        self._make_pod(rt, workload, name)
                ready = sum(1 for p in mine if (p.get("status") or {}).get("phase") == "Running")
                status = {"replicas": len(mine), "readyReplicas": ready, "availableReplicas": ready}
                if rt.kind == "Job":
                    status = {"active": len(mine), "ready": ready}
                if (workload.get("status") or {}) != {**(workload.get("status") or {}), **status}:
                    workload["status"] = {**(workload.get("status") or {}), **status}
                    try:
                        objects.update_object(rt, workload, status=True)
                    except KubeApiError as exc:  # a conflict: the next pass writes it again
                        log.debug("status of %s %s not written: %s", rt.kind, meta["name"], exc)
        for pod in pods:
            refs = [
                o
                for o in _meta(pod).get("ownerReferences") or []
                if o.get("kind") in {w.kind for w in WORKLOADS}
            ]
            if refs and not any(o.get("uid") in owners for o in refs):
                objects.delete_object(PODS, str(_meta(pod)["name"]), str(_meta(pod)["namespace"]))

    def _make_pod(self, rt: ResourceType, workload: Mapping[str, Any], name: str) -> None:
        """Create one pod of ``workload`` from its template (owned by it)."""
        meta = _meta(workload)
        template = (workload.get("spec") or {}).get("template") or {}
        owner = {"apiVersion": rt.api_version, "kind": rt.kind, "name": meta["name"], "uid": meta["uid"]}
        pod_meta = {
            "name": name,
            "namespace": meta.get("namespace") or "default",
            "labels": dict((template.get("metadata") or {}).get("labels") or {}),
            "ownerReferences": [{**owner, "controller": True}],
        }
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}
        try:
            self.store.objects.create_object(PODS, body)
        except KubeApiError as exc:
            log.warning("pod %s of %s %s not created: %s", name, rt.kind, meta["name"], exc)

    # -- the ResourceClaim controller ----------------------------------------------------------------

    def _claims_of(self, pod: Mapping[str, Any], state: _PodState) -> list[JsonObject] | str:
        """The pod's claims (creating those its templates stand for), or why they are not there yet."""
        objects = self.store.objects
        namespace, name = state.namespace, state.name
        out: list[JsonObject] = []
        statuses = []
        for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
            claim_name = entry.get("resourceClaimName")
            template_name = entry.get("resourceClaimTemplateName")
            if template_name:
                claim_name = f"{name}-{entry.get('name')}"
                try:
                    template = objects.get_object(RESOURCE_CLAIM_TEMPLATES, template_name, namespace)
                except KubeNotFound:
                    return f"ResourceClaimTemplate {namespace}/{template_name} not found"
                try:
                    objects.get_object(RESOURCE_CLAIMS, claim_name, namespace)
                except KubeNotFound:
                    owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": _meta(pod)["uid"]}
                    objects.create_object(
                        RESOURCE_CLAIMS,
                        {
                            "apiVersion": "resource.k8s.io/v1",
                            "kind": "ResourceClaim",
                            "metadata": {
                                "name": claim_name,
                                "namespace": namespace,
                                "ownerReferences": [{**owner, "controller": True}],
                                "annotations": {"resource.kubernetes.io/pod-claim-name": entry.get("name")},
                            },
                            "spec": (template.get("spec") or {}).get("spec") or {},
                        },
                    )
                statuses.append({"name": entry.get("name"), "resourceClaimName": claim_name})
            try:
                out.append(objects.get_object(RESOURCE_CLAIMS, str(claim_name), namespace))
            except KubeNotFound:
                return f"ResourceClaim {namespace}/{claim_name} not found"
        if statuses and (pod.get("status") or {}).get("resourceClaimStatuses") != statuses:
            self._pod_status(pod, resourceClaimStatuses=statuses)
        state.claims = [_meta(c)["name"] for c in out]
        return out

    # -- the scheduler -------------------------------------------------------------------------------

    def _schedule(self, pod: JsonObject, state: _PodState) -> None:
        claims = self._claims_of(pod, state)
        if isinstance(claims, str):
            self._unschedulable(pod, claims)
            return
        objects = self.store.objects
        everything = objects.list_objects(RESOURCE_CLAIMS, None)
        allocated = [c for c in everything if (c.get("status") or {}).get("allocation")]
        pending = [c for c in claims if not (c.get("status") or {}).get("allocation")]
        if pending:
            classes = {str(_meta(c)["name"]): c for c in objects.list_objects(DEVICE_CLASSES, None)}
            slices = objects.list_objects(RESOURCE_SLICES, None)
            alloc = Allocator(slices, classes, node_name=self.node, allocated=allocated_devices(allocated))
            outcome = alloc.allocate(pending)
            if outcome.allocations is None:
                self._unschedulable(pod, outcome.error or "no allocation satisfies the pod's claims")
                return
            for claim, allocation in zip(pending, outcome.allocations, strict=True):
                claim.setdefault("status", {})["allocation"] = allocation
        reference = {"resource": "pods", "name": state.name, "uid": _meta(pod)["uid"]}
        for claim in claims:
            status = claim.setdefault("status", {})
            holders = status.setdefault("reservedFor", [])
            if reference not in holders:
                holders.append(reference)
            objects.update_object(RESOURCE_CLAIMS, claim, status=True)
        bound = self.store.objects.get_object(PODS, state.name, state.namespace)
        bound["spec"]["nodeName"] = self.node  # what the binding subresource does
        objects.put(PODS, bound)
        self._pod_status(bound, phase="Pending", conditions=[{"type": "PodScheduled", "status": "True"}])

    def _unschedulable(self, pod: JsonObject, why: str) -> None:
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}
        if (pod.get("status") or {}).get("conditions") != [condition]:
            self._pod_status(pod, phase="Pending", conditions=[condition])

    # -- the kubelet -------------------------------------------------------------------------------

    def _start(self, pod: JsonObject, state: _PodState) -> None:
        """NodePrepareResources for the pod's claims, on a worker thread (the loop goes on: a prepare
        may wait for a Deployment the loop itself must start); its answer is read on a later pass."""
        if state.pending is None:
            refs = []
            for name in state.claims or [str(c) for c in self._claim_names(pod)]:
                claim = self.store.objects.get_object(RESOURCE_CLAIMS, name, state.namespace)
                refs.append(ClaimRef(namespace=state.namespace, name=name, uid=str(_meta(claim)["uid"])))
            if not refs:
                self._pod_status(pod, **_running(pod))
                state.prepared = []
                return
            state.attempted = refs
            state.pending = self._calls.submit(self.kubelet.prepare, refs)
            return
        if not state.pending.done():
            return
        results, state.pending = state.pending.result(), None
        refs = state.attempted
        failed = {r.name: results[r.uid].error for r in refs if results[r.uid].error}
        if failed:
            message = "; ".join(f"{name}: {error}" for name, error in failed.items())
            self._pod_status(pod, phase="Pending", message=f"NodePrepareResources failed: {message}")
            return
        state.prepared = refs
        self._pod_status(pod, **_running(pod))

    def _claim_names(self, pod: Mapping[str, Any]) -> list[str]:
        statuses = {s.get("name"): s.get("resourceClaimName") for s in (pod.get("status") or {}).get(
            "resourceClaimStatuses") or []}  # fmt: skip
        names = []
        for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
            names.append(str(entry.get("resourceClaimName") or statuses.get(entry.get("name"))))
        return names

    def _release(self, state: _PodState, uid: str) -> None:
        """The pod is gone: unprepare its claims, drop it from reservedFor, deallocate unheld claims and
        delete the ones made for it."""
        if state.pending is not None:
            state.pending.result()  # the kubelet does not unprepare while it prepares
        if state.attempted:
            self.kubelet.unprepare(state.attempted)
        objects = self.store.objects
        for name in state.claims:
            try:
                claim = objects.get_object(RESOURCE_CLAIMS, name, state.namespace)
            except KubeNotFound:
                continue
            status = claim.get("status") or {}
            holders = [r for r in status.get("reservedFor") or [] if r.get("uid") != uid]
            owners = [o.get("uid") for o in _meta(claim).get("ownerReferences") or []]
            if uid in owners:
                objects.delete_object(RESOURCE_CLAIMS, name, state.namespace)
                continue
            status["reservedFor"] = holders
            if not holders:
                status.pop("allocation", None)
            claim["status"] = status
            objects.update_object(RESOURCE_CLAIMS, claim, status=True)

    def _pod_status(self, pod: Mapping[str, Any], **changes: Any) -> None:
        try:
            current = self.store.objects.get_object(
                PODS, str(_meta(pod)["name"]), str(_meta(pod)["namespace"])
            )
        except KubeNotFound:  # deleted meanwhile: the next pass releases it
            return
        status = dict(current.get("status") or {})
        for key, value in changes.items():
            if value in ("", None):
                status.pop(key, None)
            else:
                status[key] = value
        current["status"] = status
        try:
            self.store.objects.update_object(PODS, current, status=True)
        except KubeApiError as exc:  # a conflict: the next pass writes it again
            log.debug("pod status of %s not written: %s", _meta(pod).get("name"), exc)


@attrs.frozen(kw_only=True)
class Playground:
    """A running playground: the API server, its kubeconfig, the plugin, the cluster loop."""

    api: PlaygroundApiServer
    kubeconfig: Path
    plugin: RunningPlugin
    loop: ClusterLoop


@contextmanager
def playground(
    workdir: Path,
    *,
    profile: str = "dgx-h100",
    feature_gates: str = "",
    port: int = 0,
    out: Callable[[str], None] | None = None,
) -> Iterator[Playground]:
    """Start everything (see the module docstring) under ``workdir``; stop it when the block exits.

    Raises:
        NvdraError: the plugin cannot start (a bad profile or gate).
    """
    say = out or (lambda _: None)
    workdir.mkdir(parents=True, exist_ok=True)
    store = FakeKube()
    node = store.add_node(NODE)
    major, minor = store.kubernetes_version
    node["status"] = {  # what a kubelet reports: kubectl get nodes prints Ready and the version
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "nodeInfo": {"kubeletVersion": f"v{major}.{minor}.0-nvdra", "osImage": "nvdra playground"},
    }
    store.objects.put(NODES, node)
    for namespace in ("default", NAMESPACE):  # as created through the API: phase Active
        store.objects.put(NAMESPACES, {"metadata": {"name": namespace}, "status": {"phase": "Active"}})
    for device_class in builtin_device_classes().values():  # what the chart installs
        store.objects.put(DEVICE_CLASSES, device_class)
    with ExitStack() as stack:
        api = PlaygroundApiServer(store, port=port)
        stack.enter_context(api)
        kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
        config = PluginConfig(
            node_name=NODE,
            namespace=NAMESPACE,
            kubeconfig=str(kubeconfig),
            cdi_root=workdir / "cdi",
            simulate=profile,
            feature_gates=feature_gates,
            kubelet_registrar_directory_path=workdir / "plugins_registry",
            kubelet_plugins_directory_path=workdir / "plugins",
        )
        plugin = stack.enter_context(serve(config))
        kubelet = stack.enter_context(KubeletClient(workdir / "plugins_registry"))
        registered = kubelet.register(kubelet.discover()[0])
        deadline = time.monotonic() + 10
        while not store.resource_slices() and time.monotonic() < deadline:
            time.sleep(0.02)
        loop = ClusterLoop(store, registered).start()
        stack.callback(loop.stop)
        gpus = plugin.inventory.gpus
        say(
            f"nvdra playground: node {NODE} ({len(gpus)} x {gpus[0].product_name if gpus else 'no GPU'}, "
            f"simulated {profile}), API server {api.url}"
        )
        yield Playground(api=api, kubeconfig=kubeconfig, plugin=plugin, loop=loop)
