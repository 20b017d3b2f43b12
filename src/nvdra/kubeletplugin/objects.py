"""Generic Kubernetes objects: a resource type, the ``ObjectApi`` protocol, and an in-memory store.

Drivers need more of the API than the toolkit's own ``KubeApi`` (MPS daemons are Deployments, the
ComputeDomain side works with its CRDs, DaemonSets, ResourceClaimTemplates, Node labels, Leases).
:class:`ObjectApi` covers them with raw JSON and the API server's semantics; the ``kubernetes``-client
adapter, :class:`~nvdra.kubeletplugin.FakeKube` and the test :class:`~nvdra.kubeletplugin.ApiServer`
implement it.

:class:`ObjectStore` (inside ``FakeKube``) keeps the semantics tests depend on: UIDs, resourceVersion
bumps and optimistic concurrency (409 on a stale version), ``generateName``, ``metadata.generation`` bumps
on spec changes, the ``status`` subresource (an update there changes only ``status``, an update of the
object never changes ``status`` for types with the subresource), JSON merge patch (RFC 7386), label
selectors (``k=v``, ``k!=v``, ``k``, ``!k``), and finalizers (a delete only marks an object with
finalizers; it goes when the last finalizer is removed). Owner-reference garbage collection is not
simulated.
"""

from __future__ import annotations

import copy
import itertools
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs

from nvdra.core.errors import KubeApiError, KubeConflict, KubeNotFound

__all__ = [
    "DAEMON_SETS",
    "DEPLOYMENTS",
    "DEVICE_CLASSES",
    "LEASES",
    "NODES",
    "PODS",
    "RESOURCE_CLAIMS",
    "RESOURCE_CLAIM_TEMPLATES",
    "ObjectApi",
    "ObjectStore",
    "ResourceType",
    "match_labels",
    "merge_patch",
]

JsonObject = dict[str, Any]


@attrs.frozen(kw_only=True)
class ResourceType:
    """An API resource: group ("" = core), version, plural, kind, and whether it lives in a namespace."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = True

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, else ``<group>/<version>``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, *, status: bool = False) -> str:
        """The REST path of the collection, or of one object (and its status subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is None and name is not None:
            raise KubeApiError(f"{self.plural} are namespaced: a namespace is required", status=400)
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}" + ("/status" if status else "")
        return base


NODES = ResourceType(group="", version="v1", plural="nodes", kind="Node", namespaced=False)
PODS = ResourceType(group="", version="v1", plural="pods", kind="Pod")
DEPLOYMENTS = ResourceType(group="apps", version="v1", plural="deployments", kind="Deployment")
DAEMON_SETS = ResourceType(group="apps", version="v1", plural="daemonsets", kind="DaemonSet")
LEASES = ResourceType(
    group="coordination.k8s.io", version="v1", plural="leases", kind="Lease", status_subresource=False
)
RESOURCE_CLAIMS = ResourceType(
    group="resource.k8s.io", version="v1", plural="resourceclaims", kind="ResourceClaim"
)
DEVICE_CLASSES = ResourceType(
    group="resource.k8s.io",
    version="v1",
    plural="deviceclasses",
    kind="DeviceClass",
    namespaced=False,
    status_subresource=False,
)
RESOURCE_CLAIM_TEMPLATES = ResourceType(
    group="resource.k8s.io",
    version="v1",
    plural="resourceclaimtemplates",
    kind="ResourceClaimTemplate",
    status_subresource=False,
)


class ObjectApi(Protocol):
    """Generic object access, raw JSON. Errors: KubeNotFound (404), KubeConflict (409), KubeApiError."""

    def get_object(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """GET one object."""
        ...

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, *, label_selector: str = ""
    ) -> list[JsonObject]:
        """LIST objects (all namespaces when ``namespace`` is None), optionally label-selected."""
        ...

    def create_object(self, rt: ResourceType, body: JsonObject) -> JsonObject:
        """CREATE (``generateName`` allowed); 409 if the name exists."""
        ...

    def update_object(self, rt: ResourceType, body: JsonObject, *, status: bool = False) -> JsonObject:
        """UPDATE (PUT), guarded by ``metadata.resourceVersion``; ``status=True`` writes the subresource."""
        ...

    def patch_object(
        self, rt: ResourceType, name: str, patch: JsonObject, namespace: str | None = None
    ) -> JsonObject:
        """JSON merge patch (RFC 7386) of one object."""
        ...

    def delete_object(
        self, rt: ResourceType, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> None:
        """DELETE (with a UID precondition when given); a missing object is not an error."""
        ...


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def match_labels(labels: dict[str, str], selector: str) -> bool:
    """Whether ``labels`` satisfy an equality-based selector (``a=b,c!=d,e,!f``; ``==`` allowed)."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_Key = tuple[str, str, str, str]  # (group, plural, namespace, name)


class ObjectStore:
    """Thread-safe in-memory objects with the API server semantics listed in the module docstring."""

    def __init__(self, *, on_call: Callable[[str, str, str], None] | None = None) -> None:
        self._lock = threading.RLock()
        self._objects: dict[_Key, JsonObject] = {}
        self._rv = itertools.count(1)
        self._on_call = on_call or (lambda verb, resource, name: None)

    def _key(self, rt: ResourceType, name: str, namespace: str | None) -> _Key:
        return (rt.group, rt.plural, (namespace or "default") if rt.namespaced else "", name)

    def _missing(self, rt: ResourceType, name: str) -> KubeNotFound:
        qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return KubeNotFound(f'{qualified} "{name}" not found', status=404)

    def put(self, rt: ResourceType, obj: JsonObject) -> JsonObject:
        """Store ``obj`` as given (test seeding: keeps a given UID), bumping its resourceVersion."""
        with self._lock:
            stored = copy.deepcopy(obj)
            meta = stored.setdefault("metadata", {})
            if rt.namespaced:
                meta.setdefault("namespace", "default")
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = str(next(self._rv))
            stored["apiVersion"], stored["kind"] = rt.api_version, rt.kind
            self._objects[self._key(rt, meta["name"], meta.get("namespace"))] = stored
            return copy.deepcopy(stored)

    def get_object(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """GET one object."""
        self._on_call("get", rt.plural, name)
        return self.peek(rt, name, namespace)

    def peek(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """GET one object without logging the call (for callers that log their own)."""
        with self._lock:
            obj = self._objects.get(self._key(rt, name, namespace))
            if obj is None:
                raise self._missing(rt, name)
            return copy.deepcopy(obj)

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, *, label_selector: str = ""
    ) -> list[JsonObject]:
        """LIST objects, sorted by namespace and name."""
        with self._lock:
            self._on_call("list", rt.plural, "")
            return [
                copy.deepcopy(obj)
                for (g, p, ns, _), obj in sorted(self._objects.items())
                if (g, p) == (rt.group, rt.plural)
                and (namespace is None or not rt.namespaced or ns == namespace)
                and match_labels(obj.get("metadata", {}).get("labels") or {}, label_selector)
            ]

    def create_object(self, rt: ResourceType, body: JsonObject) -> JsonObject:
        """CREATE; fills uid, resourceVersion, generation, creationTimestamp; ``generateName`` allowed."""
        with self._lock:
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            self._on_call("create", rt.plural, meta.get("name") or meta.get("generateName", ""))
            if meta.get("resourceVersion"):
                raise KubeApiError("resourceVersion should not be set on objects to be created", status=400)
            namespace = meta.get("namespace") if rt.namespaced else None
            if rt.namespaced:
                meta["namespace"] = namespace = namespace or "default"
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise KubeApiError(
                        "metadata.name: Required value: name or generateName is required", status=422
                    )
                meta["name"] = self._generated(rt, meta["generateName"], namespace)
            key = self._key(rt, meta["name"], namespace)
            if key in self._objects:
                qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
                raise KubeConflict(f'{qualified} "{meta["name"]}" already exists', status=409)
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(next(self._rv)),
                generation=1,
                creationTimestamp=_now(),
            )
            self._objects[key] = obj
            return copy.deepcopy(obj)

    def _generated(self, rt: ResourceType, base: str, namespace: str | None) -> str:
        while True:
            name = base[:58] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            if self._key(rt, name, namespace) not in self._objects:
                return name

    def update_object(self, rt: ResourceType, body: JsonObject, *, status: bool = False) -> JsonObject:
        """UPDATE, or update the status subresource; 409 on a stale resourceVersion or UID."""
        with self._lock:
            meta = body.get("metadata") or {}
            name = meta.get("name", "")
            self._on_call("update-status" if status else "update", rt.plural, name)
            key = self._key(rt, name, meta.get("namespace"))
            current = self._objects.get(key)
            if current is None:
                raise self._missing(rt, name)
            cur_meta = current["metadata"]
            if meta.get("resourceVersion") not in (None, "", cur_meta["resourceVersion"]):
                raise KubeConflict(
                    f'Operation cannot be fulfilled on {rt.plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    status=409,
                )
            if meta.get("uid") not in (None, "", cur_meta["uid"]):
                raise KubeConflict(f"Precondition failed: UID in object meta: {meta['uid']}", status=409)
            return self._store(rt, key, current, copy.deepcopy(body), status=status)

    def _store(
        self, rt: ResourceType, key: _Key, current: JsonObject, new: JsonObject, *, status: bool
    ) -> JsonObject:
        cur_meta = current["metadata"]
        if status:
            obj = copy.deepcopy(current)
            obj["status"] = new.get("status")
        else:
            obj = new
            if rt.status_subresource and "status" in current:
                obj["status"] = copy.deepcopy(current["status"])
            elif rt.status_subresource:
                obj.pop("status", None)
            meta = obj.setdefault("metadata", {})
            for kept in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
                if kept in cur_meta:
                    meta[kept] = cur_meta[kept]
            changed = obj.get("spec") != current.get("spec")
            meta["generation"] = cur_meta.get("generation", 1) + (1 if changed else 0)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self._objects[key]
        else:
            self._objects[key] = obj
        return copy.deepcopy(obj)

    def patch_object(
        self, rt: ResourceType, name: str, patch: JsonObject, namespace: str | None = None
    ) -> JsonObject:
        """JSON merge patch; a ``metadata.resourceVersion`` in the patch is a precondition."""
        with self._lock:
            self._on_call("patch", rt.plural, name)
            key = self._key(rt, name, namespace)
            current = self._objects.get(key)
            if current is None:
                raise self._missing(rt, name)
            want = (patch.get("metadata") or {}).get("resourceVersion")
            if want not in (None, current["metadata"]["resourceVersion"]):
                raise KubeConflict(f'Operation cannot be fulfilled on {rt.plural} "{name}"', status=409)
            merged = merge_patch(current, patch)
            if rt.status_subresource and "status" in patch:
                return self._store(rt, key, current, merged, status=True)
            return self._store(rt, key, current, merged, status=False)

    def delete_object(
        self, rt: ResourceType, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> JsonObject | None:
        """DELETE: gone at once, or only marked (deletionTimestamp) while finalizers remain."""
        with self._lock:
            self._on_call("delete", rt.plural, name)
            key = self._key(rt, name, namespace)
            current = self._objects.get(key)
            if current is None:
                return None
            if uid is not None and current["metadata"]["uid"] != uid:
                raise KubeConflict(
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                    f"{current['metadata']['uid']}",
                    status=409,
                )
            if current["metadata"].get("finalizers"):
                if not current["metadata"].get("deletionTimestamp"):
                    current["metadata"]["deletionTimestamp"] = _now()
                    current["metadata"]["resourceVersion"] = str(next(self._rv))
                return copy.deepcopy(current)
            del self._objects[key]
            return current
