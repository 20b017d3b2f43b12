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
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
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
    "WatchEvent",
    "WatchStream",
    "match_fields",
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


@attrs.frozen(kw_only=True)
class WatchEvent:
    """One watch event as the API server streams it: ``{"type": …, "object": …}``.

    ``type`` is ADDED, MODIFIED, DELETED, BOOKMARK (``object`` carries only
    ``metadata.resourceVersion``) or ERROR (``object`` is a ``Status``; code 410 means the requested
    resourceVersion is too old: list again).
    """

    type: str
    object: JsonObject


class WatchStream(Protocol):
    """An open watch: iterate for events; :meth:`close` ends the iteration from any thread."""

    def __iter__(self) -> Iterator[WatchEvent]:
        """Events in resourceVersion order until the server ends the watch or :meth:`close`."""
        ...

    def close(self) -> None:
        """End the watch (idempotent)."""
        ...


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

    def list_versioned(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[list[JsonObject], str]:
        """LIST, with the list's ``metadata.resourceVersion`` (where a watch of the same query resumes)."""
        ...

    def watch_objects(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
        timeout_s: float = 300.0,
        allow_bookmarks: bool = True,
    ) -> WatchStream:
        """WATCH changes after ``resource_version`` (``""``: ADDED for every current object first).

        The server ends the stream after ``timeout_s``; a too old version yields one ERROR event (410).
        """
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


def match_fields(obj: JsonObject, selector: str) -> bool:
    """Whether ``obj`` satisfies a field selector over ``metadata.name``/``metadata.namespace``.

    Raises:
        KubeApiError: another field (400, as the API server answers for a field it does not index).
    """
    meta = obj.get("metadata") or {}
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        negate = "!=" in term
        key, _, value = term.replace("!=", "=").replace("==", "=").partition("=")
        key, value = key.strip(), value.strip()
        if key not in ("metadata.name", "metadata.namespace"):
            raise KubeApiError(f'field label not supported: "{key}"', status=400)
        if (meta.get(key.partition(".")[2], "") == value) == negate:
            return False
    return True


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_Key = tuple[str, str, str, str]  # (group, plural, namespace, name)


@attrs.frozen
class _Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: _Key
    obj: JsonObject
    prev: JsonObject | None


class _Recorded(dict[_Key, JsonObject]):
    """The store's object map: every assignment and deletion is also a watch event (see ObjectStore)."""

    def __init__(self, record: Callable[[_Key, JsonObject | None, JsonObject | None], None]) -> None:
        super().__init__()
        self._record = record

    def __setitem__(self, key: _Key, value: JsonObject) -> None:
        prev = self.get(key)
        super().__setitem__(key, value)
        self._record(key, prev, value)

    def __delitem__(self, key: _Key) -> None:
        prev = self[key]
        super().__delitem__(key)
        self._record(key, prev, None)


class _MemoryWatch:
    """A watch over an :class:`ObjectStore`'s change history (see :meth:`ObjectStore.watch_objects`)."""

    def __init__(
        self,
        store: ObjectStore,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str,
        field_selector: str,
        resource_version: str,
        timeout_s: float,
        allow_bookmarks: bool,
    ) -> None:
        self._store, self._rt, self._namespace = store, rt, namespace
        self._labels, self._fields = label_selector, field_selector
        self._start = resource_version
        self._deadline = time.monotonic() + timeout_s
        self._bookmarks = allow_bookmarks
        self._closed = False
        with store._changed:  # the starting point is the request's moment, as with the API server
            self._cursor, self._initial = self._begin()

    def close(self) -> None:
        """End the iteration (wakes a waiting iterator)."""
        with self._store._changed:
            self._closed = True
            self._store._changed.notify_all()

    def _matches(self, key: _Key, obj: JsonObject | None) -> bool:
        if obj is None or (key[0], key[1]) != (self._rt.group, self._rt.plural):
            return False
        if self._namespace is not None and self._rt.namespaced and key[2] != self._namespace:
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return match_labels(labels, self._labels) and match_fields(obj, self._fields)

    def _translate(self, change: _Change) -> WatchEvent | None:
        """The event this watcher sees: an object leaving (entering) the selection is DELETED (ADDED)."""
        now = change.type != "DELETED" and self._matches(change.key, change.obj)
        before = self._matches(change.key, change.prev)
        if change.type == "DELETED":
            return WatchEvent(type="DELETED", object=copy.deepcopy(change.obj)) if before else None
        if now:
            return WatchEvent(type="MODIFIED" if before else "ADDED", object=copy.deepcopy(change.obj))
        return WatchEvent(type="DELETED", object=copy.deepcopy(change.obj)) if before else None

    def _begin(self) -> tuple[int, list[WatchEvent]]:
        """Where the watch starts and what it sends first (ADDED per object, or a 410 ERROR)."""
        store = self._store
        if self._start in ("", "0"):
            initial = [
                WatchEvent(type="ADDED", object=copy.deepcopy(obj))
                for key, obj in sorted(store._objects.items())
                if self._matches(key, obj)
            ]
            return store._last_rv, initial
        try:
            cursor = int(self._start)
        except ValueError:
            raise KubeApiError(
                f"resourceVersion: Invalid value: {self._start!r}: must be an integer", status=400
            ) from None
        if cursor >= store._oldest_rv - 1:
            return cursor, []
        gone = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"too old resource version: {cursor} ({store._oldest_rv - 1})",
            "reason": "Expired",
            "code": 410,
        }
        self._closed = True
        return cursor, [WatchEvent(type="ERROR", object=gone)]

    def _next_batch(self, cursor: int, sent: int) -> tuple[list[_Change], int] | None:
        """Changes after ``cursor`` (waiting for some); ``[]`` with the store's version means: bookmark.

        None when the watch is over (closed or timed out).
        """
        store = self._store
        with store._changed:
            while not self._closed:
                pending = [c for c in store._history if c.rv > cursor]
                if pending:
                    return pending, store._last_rv
                left = self._deadline - time.monotonic()
                if left <= 0:
                    return None
                store._changed.wait(min(left, 1.0))
                if (
                    self._bookmarks
                    and store._last_rv > sent
                    and not any(c.rv > cursor for c in store._history)
                ):
                    return [], store._last_rv
        return None

    def __iter__(self) -> Iterator[WatchEvent]:
        cursor, initial = self._cursor, self._initial
        yield from initial
        sent = cursor
        while not self._closed:
            batch = self._next_batch(cursor, sent)
            if batch is None:
                return
            pending, last = batch
            if not pending:  # unrelated writes only: tell the client how far it is
                sent = cursor = last
                meta = {"resourceVersion": str(last)}
                yield WatchEvent(
                    type="BOOKMARK",
                    object={"kind": self._rt.kind, "apiVersion": self._rt.api_version, "metadata": meta},
                )
                continue
            for change in pending:
                cursor = change.rv
                event = self._translate(change)
                if event is not None:
                    sent = cursor
                    yield event


class ObjectStore:
    """Thread-safe in-memory objects with the API server semantics listed in the module docstring.

    Watch: every change to the object map (assignment or deletion, whatever method made it) is kept in
    a bounded history (``history`` changes, the etcd compaction window's stand-in); a watch from an
    older resourceVersion gets a 410 ERROR event, as from the API server. :meth:`compact` drops the
    history (tests provoke the 410 with it).
    """

    def __init__(
        self, *, on_call: Callable[[str, str, str], None] | None = None, history: int = 10_000
    ) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._history: deque[_Change] = deque(maxlen=history)
        self._last_rv = 0
        self._oldest_rv = 1
        self._objects: dict[_Key, JsonObject] = _Recorded(self._record)
        self._rv = itertools.count(1)
        self._on_call = on_call or (lambda verb, resource, name: None)

    def _record(self, key: _Key, prev: JsonObject | None, obj: JsonObject | None) -> None:
        """Append one change to the history (called with the lock held, from the object map)."""
        if obj is None:
            assert prev is not None
            # A deletion is a revision of its own; the DELETED event carries it.
            obj = copy.deepcopy(prev)
            obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._rv))
            kind = "DELETED"
        else:
            obj = copy.deepcopy(obj)
            kind = "MODIFIED" if prev is not None else "ADDED"
        rv = int(obj["metadata"]["resourceVersion"])
        if len(self._history) == self._history.maxlen:
            self._oldest_rv = self._history[0].rv + 1
        self._history.append(_Change(rv, kind, key, obj, copy.deepcopy(prev) if prev is not None else None))
        self._last_rv = max(self._last_rv, rv)
        self._changed.notify_all()

    def compact(self) -> None:
        """Forget the change history (as etcd compaction does): older watches now get 410 Gone."""
        with self._lock:
            self._history.clear()
            self._oldest_rv = self._last_rv + 1

    def list_versioned(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[list[JsonObject], str]:
        """LIST with the store's current resourceVersion (a watch from it misses nothing)."""
        with self._lock:
            items = [
                obj
                for obj in self.list_objects(rt, namespace, label_selector=label_selector)
                if match_fields(obj, field_selector)
            ]
            return items, str(self._last_rv)

    def watch_objects(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
        timeout_s: float = 300.0,
        allow_bookmarks: bool = True,
    ) -> WatchStream:
        """WATCH (see :class:`ObjectApi`): the stream starts now; events are read while iterating."""
        self._on_call("watch", rt.plural, "")
        match_fields({}, field_selector)  # a bad selector is a 400 now, not in the iterating thread
        return _MemoryWatch(
            self,
            rt,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
            timeout_s=timeout_s,
            allow_bookmarks=allow_bookmarks,
        )

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
                    current = copy.deepcopy(current)
                    current["metadata"]["deletionTimestamp"] = _now()
                    current["metadata"]["resourceVersion"] = str(next(self._rv))
                    self._objects[key] = current  # a MODIFIED event for watchers
                return copy.deepcopy(current)
            del self._objects[key]
            return current
