"""The strict in-process object store.

:class:`ObjectStore` (inside ``FakeKube``, so in-process callers and HTTP callers meet the same rules)
keeps the kube-apiserver's semantics:

- one cluster-wide revision (etcd's): every write bumps it and stamps ``metadata.resourceVersion``;
  a write that changes nothing is a no-op (no bump, no watch event), as the apiserver's update is;
- updates: a custom resource (a group outside the built-in ones) must carry ``resourceVersion``
  (422 ``must be specified for an update``), built-in kinds may update unconditionally; a stale one is a
  409 ``Operation cannot be fulfilled on <plural>.<group> "<name>"``; a wrong ``uid`` a 409 precondition;
- the ``status`` subresource, for the kinds that have one: a write of the object never changes
  ``status`` (and a create drops it), a write of ``/status`` changes nothing but ``status``;
- immutable fields (422 ``field is immutable``): ResourceClaim and ResourceClaimTemplate ``spec`` (the
  opaque ``parameters``, a RawExtension, compared by their bytes as the apiserver stores them: as sent on
  create/update, re-serialized compactly after a patch), ResourceSlice driver/pool/node, Deployment and
  DaemonSet selectors, Pod specs (but images), CRD fields with an ``x-kubernetes-validations`` rule
  ``self == oldSelf`` (installed with :meth:`ObjectStore.install_crd`);
- patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902, a failed ``test`` is a 422) and, for
  built-in kinds only, strategic merge patch (415 for custom resources); a ``resourceVersion`` in the
  patched object is a precondition;
- finalizers: a delete marks an object that has any (``deletionTimestamp``,
  ``deletionGracePeriodSeconds: 0``) and it goes when the last is removed; no new finalizer may be added
  to an object being deleted; a deleted owner takes its dependents (``ownerReferences``) with it, as the
  garbage collector does in the background; a deleted Namespace is ``Terminating`` until its objects
  are gone, and no new object may be created in it;
- label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, ``k``, ``!k``) and field selectors
  (``metadata.name``, ``metadata.namespace`` and the per-kind fields the apiserver supports);
- watch: events (ADDED, MODIFIED, DELETED, BOOKMARK) after a revision, from a bounded history;
  a revision older than the history is answered by an ERROR event with a 410 ``Expired`` Status
  (:meth:`ObjectStore.compact` forgets history, as etcd's compaction does).
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, Unpack

import attrs
import orjson

from nvdra.core.errors import KubeApiError, KubeConflict, KubeNotFound
from nvdra.kubeletplugin.objects import (
    NAMESPACES,
    JsonObject,
    Query,
    ResourceType,
    Selectors,
    WatchEvent,
    WatchOptions,
    WatchStream,
    expired_status,
)
from nvdra.kubeletplugin.store.patches import apply_patch
from nvdra.kubeletplugin.store.rules import (
    builtin_update_problems,
    claim_spec_problems,
    compact_json,
    invalid,
    meta_problems,
    raw_extensions,
)
from nvdra.kubeletplugin.store.schema import CrdRules, drop_field, transition_rules, unknown_fields, value_at
from nvdra.kubeletplugin.store.selectors import FieldSelector, LabelSelector
from nvdra.kubeletplugin.store.watch import StoreWatch

__all__ = ["Admission", "ObjectStore", "Validator"]

_T = TypeVar("_T")


_ORJSON_PLAIN = (
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


class _CollectorPause:
    """The cyclic garbage collector off while copies are built (nested and concurrent pauses count)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pauses = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._pauses == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._pauses += 1
        try:
            yield
        finally:
            with self._lock:
                self._pauses -= 1
                if self._pauses == 0 and self._was_enabled:
                    gc.enable()


_collector_paused = _CollectorPause()


def _clone(value: _T) -> _T:
    """An independent copy of a JSON value, as a JSON round trip gives it (tuples become lists).

    orjson makes the round trip (~4x the standard library on a DynamicMIG rack's ResourceSlices);
    values it leaves to a caller's hook (str and int subclasses such as enums, datetimes, dataclasses)
    or refuses (non-string keys, integers beyond 64 bits, lone surrogates) take the standard
    library's round trip as before, which converts or raises TypeError/ValueError the same way. Unlike
    it, orjson writes NaN and infinities as null and a UUID or a plain Enum member as its value (no
    JSON client sends either). The collector is paused meanwhile: a tree fresh from the parser holds
    no cycle, so collecting during the copy only costs time.
    """
    with _collector_paused():
        try:
            copied: _T = orjson.loads(orjson.dumps(value, option=_ORJSON_PLAIN))
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            copied = json.loads(json.dumps(value))
    return copied


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_Key = tuple[str, str, str, str]  # (group, plural, namespace, name)
Validator = Callable[[JsonObject, JsonObject | None], None]
Admission = Callable[[str, "ResourceType", JsonObject | None, JsonObject | None], None]
"""A per-kind rule: (new object, current object or None on create); raises a 422 KubeApiError."""


@attrs.frozen
class _Event:
    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    key: _Key
    obj: JsonObject
    previous: JsonObject | None


_PROPAGATION = ("Background", "Foreground", "Orphan")
_FOREGROUND = "foregroundDeletion"


class ObjectStore:
    """Thread-safe in-memory objects with the API server semantics listed in the module docstring.

    Args:
        on_call: called with (verb, plural, name) before each logged call (a fault may raise there).
        history: how many watch events are kept; a watch from an older revision gets a 410.
        strict_namespaces: refuse objects in a Namespace that does not exist (404), as the apiserver's
            NamespaceLifecycle admission does; off, an unknown namespace counts as an existing one.
    """

    def __init__(
        self,
        *,
        on_call: Callable[[str, str, str], None] | None = None,
        history: int = 10_000,
        strict_namespaces: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[_Key, JsonObject] = {}
        self._by_type: dict[tuple[str, str], dict[_Key, JsonObject]] = {}
        self._raw: dict[_Key, dict[str, str]] = {}
        self._revision = 0
        self._events: list[_Event] = []
        self._event_revisions: list[int] = []
        self._compacted = 0  # events up to this revision are forgotten
        self._orphaning: set[str] = set()  # owners deleted with propagationPolicy Orphan
        self._history = history
        self._validators: dict[tuple[str, str], list[Validator]] = {}
        self._crds: dict[tuple[str, str], CrdRules] = {}
        self.strict_namespaces = strict_namespaces
        self.admission: Admission | None = None
        """Called with (operation, type, object, old object) before a write is kept: CREATE (no old
        object), UPDATE (patches too), DELETE (no object); it raises to refuse (validating admission)."""
        self.bookmark_interval = 60.0
        """Seconds between BOOKMARK events of a watch that asked for them (the apiserver: about 60)."""
        self._on_call = on_call or (lambda verb, resource, name: None)

    def _set(self, key: _Key, obj: JsonObject) -> None:
        self._objects[key] = obj
        self._by_type.setdefault((key[0], key[1]), {})[key] = obj

    def _pop(self, key: _Key) -> JsonObject | None:
        self._by_type.get((key[0], key[1]), {}).pop(key, None)
        return self._objects.pop(key, None)

    # --- configuration ---------------------------------------------------------------------------

    def add_validator(self, rt: ResourceType, validator: Validator) -> None:
        """Run ``validator`` on every create and update of ``rt`` (as the kind's validation does)."""
        with self._lock:
            self._validators.setdefault((rt.group, rt.plural), []).append(validator)

    def install_crd(self, crd: JsonObject) -> ResourceType:
        """Learn a CustomResourceDefinition: its storage version's schema (pruning, strict field
        validation), ``self == oldSelf`` rules and whether it has a status subresource.

        Returns:
            the resource type of its storage (else first served) version.

        Raises:
            ValueError: the CRD uses a validation rule other than ``self == oldSelf``.
        """
        spec = crd["spec"]
        versions = spec["versions"]
        chosen = next((v for v in versions if v.get("storage")), versions[0])
        schema = (chosen.get("schema") or {}).get("openAPIV3Schema") or {}
        rt = ResourceType(
            group=spec["group"],
            version=chosen["name"],
            plural=spec["names"]["plural"],
            kind=spec["names"]["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status_subresource="status" in (chosen.get("subresources") or {}),
        )
        with self._lock:
            self._crds[(rt.group, rt.plural)] = CrdRules(
                schema=schema, immutable=tuple(transition_rules(schema))
            )
        return rt

    def unknown_fields(self, rt: ResourceType, obj: JsonObject) -> list[str] | None:
        """Paths in ``obj`` that ``rt``'s installed CRD schema does not declare (None: no schema known)."""
        crd = self._crds.get((rt.group, rt.plural))
        if crd is None:
            return None
        return unknown_fields(crd.schema, obj)

    @contextlib.contextmanager
    def dry_run(self) -> Iterator[None]:
        """Undo every write made inside (the apiserver's ``dryRun=All``): validated, answered, not kept.

        Holds the store's lock throughout, so no reader or watcher sees the writes."""
        with self._lock:
            saved = (
                dict(self._objects),
                {k: dict(v) for k, v in self._by_type.items()},
                dict(self._raw),
                self._revision,
                list(self._events),
                list(self._event_revisions),
                self._compacted,
            )
            try:
                yield
            finally:
                (
                    self._objects,
                    self._by_type,
                    self._raw,
                    self._revision,
                    self._events,
                    self._event_revisions,
                    self._compacted,
                ) = saved

    # --- revisions and watch events --------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The newest revision (etcd's): the resourceVersion of the last write."""
        with self._lock:
            return self._revision

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _record(self, kind: str, key: _Key, obj: JsonObject, previous: JsonObject | None) -> None:
        self._events.append(
            _Event(self._revision, kind, key, obj, previous)
        )  # stored objects are never mutated
        self._event_revisions.append(self._revision)
        if len(self._events) > self._history:
            drop = len(self._events) - self._history
            self._compacted = self._event_revisions[drop - 1]
            del self._events[:drop], self._event_revisions[:drop]
        self._changed.notify_all()

    def compact(self, revision: int | None = None) -> None:
        """Forget watch history up to ``revision`` (default: all of it), as etcd's compaction does."""
        with self._lock:
            upto = self._revision if revision is None else min(revision, self._revision)
            cut = bisect.bisect_right(self._event_revisions, upto)
            del self._events[:cut], self._event_revisions[:cut]
            self._compacted = max(self._compacted, upto)

    # --- helpers ---------------------------------------------------------------------------------

    def _key(self, rt: ResourceType, name: str, namespace: str | None) -> _Key:
        return (rt.group, rt.plural, (namespace or "default") if rt.namespaced else "", name)

    def _missing(self, rt: ResourceType, name: str) -> KubeNotFound:
        return KubeNotFound(f'{rt.qualified} "{name}" not found', status=404)

    def _conflict(self, rt: ResourceType, name: str) -> KubeConflict:
        return KubeConflict(
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            status=409,
        )

    def _raw_texts(self, rt: ResourceType, obj: JsonObject, raw: Mapping[str, str] | None) -> dict[str, str]:
        return {
            path: raw[path] if raw is not None and path in raw else compact_json(value)
            for path, value in raw_extensions(rt, obj).items()
        }

    def _prune(self, rt: ResourceType, obj: JsonObject) -> None:
        """Drop fields a CRD's schema does not declare (the apiserver prunes custom resources)."""
        for path in self.unknown_fields(rt, obj) or []:
            if path.split(".")[0] not in ("apiVersion", "kind"):
                drop_field(obj, path)

    def _check_namespace(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        if not rt.namespaced:
            return
        ns = self._objects.get(self._key(NAMESPACES, namespace or "default", None))
        if ns is None and self.strict_namespaces:
            raise KubeNotFound(f'namespaces "{namespace}" not found', status=404)
        if ns is not None and ns["metadata"].get("deletionTimestamp"):
            raise KubeApiError(
                f'{rt.qualified} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                status=403,
            )

    def _validate(self, rt: ResourceType, new: JsonObject, old: JsonObject | None) -> None:
        what = (rt.group, rt.plural)
        if what == ("resource.k8s.io", "resourceclaims"):
            problems = claim_spec_problems(new.get("spec"), "spec")
        elif what == ("resource.k8s.io", "resourceclaimtemplates"):
            problems = claim_spec_problems((new.get("spec") or {}).get("spec"), "spec.spec")
        else:
            problems = []
        if problems:
            raise invalid(rt, new["metadata"].get("name", ""), problems)
        for validator in self._validators.get(what, []):
            validator(new, old)

    # --- reads -----------------------------------------------------------------------------------

    def put(self, rt: ResourceType, obj: JsonObject) -> JsonObject:
        """Store ``obj`` as given (test seeding: keeps a given UID and status), bumping the revision."""
        with self._lock:
            stored = _clone(obj)
            meta = stored.setdefault("metadata", {})
            if rt.namespaced:
                meta.setdefault("namespace", "default")
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self._bump()
            stored["apiVersion"], stored["kind"] = rt.api_version, rt.kind
            key = self._key(rt, meta["name"], meta.get("namespace"))
            previous = self._objects.get(key)
            self._set(key, stored)
            self._raw[key] = self._raw_texts(rt, stored, None)
            self._record("MODIFIED" if previous else "ADDED", key, stored, previous)
            return _clone(stored)

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
            return _clone(obj)

    def _selected(
        self, rt: ResourceType, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> list[JsonObject]:
        return [
            obj
            for (_, _, ns, _), obj in sorted(self._by_type.get((rt.group, rt.plural), {}).items())
            if (namespace is None or not rt.namespaced or ns == namespace)
            and labels.matches(obj.get("metadata", {}).get("labels") or {})
            and fields.matches(obj)
        ]

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> list[JsonObject]:
        """LIST objects, sorted by namespace and name."""
        return self.list_versioned(rt, namespace, **selectors)[0]

    def list_versioned(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> tuple[list[JsonObject], str]:
        """LIST objects and the revision the list was taken at (the list's ``resourceVersion``)."""
        query = Query(**selectors)
        labels = LabelSelector.parse(query.label_selector)
        fields = FieldSelector.parse(query.field_selector, rt)
        with self._lock:
            self._on_call("list", rt.plural, "")
            items = [_clone(obj) for obj in self._selected(rt, namespace, labels, fields)]
            return items, str(self._revision)

    def all_objects(self, rt: ResourceType) -> list[JsonObject]:
        """Every stored object of ``rt`` (copies), not logged and never faulted (test inspection)."""
        with self._lock:
            return [_clone(obj) for _, obj in sorted(self._by_type.get((rt.group, rt.plural), {}).items())]

    # --- writes ----------------------------------------------------------------------------------

    def create_object(
        self, rt: ResourceType, body: JsonObject, *, raw: Mapping[str, str] | None = None
    ) -> JsonObject:
        """CREATE; fills uid, resourceVersion, generation, creationTimestamp; ``generateName`` allowed.

        Args:
            rt: the kind.
            body: the object; ``status`` is dropped for kinds with a status subresource.
            raw: the RawExtension texts as the request carried them (field path → JSON text), for
                the byte comparison of immutable specs; in-process callers leave it None (compact).
        """
        with self._lock:
            obj = _clone(body)
            meta = obj.setdefault("metadata", {})
            self._on_call("create", rt.plural, meta.get("name") or meta.get("generateName", ""))
            if meta.get("resourceVersion"):
                raise KubeApiError("resourceVersion should not be set on objects to be created", status=400)
            namespace = meta.get("namespace") if rt.namespaced else None
            if rt.namespaced:
                meta["namespace"] = namespace = namespace or "default"
            else:
                meta.pop("namespace", None)
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise invalid(rt, "", ["metadata.name: Required value: name or generateName is required"])
                meta["name"] = self._generated(rt, meta["generateName"], namespace)
            problems = meta_problems(rt, meta)
            if problems:
                raise invalid(rt, meta["name"], problems)
            self._check_namespace(rt, namespace, meta["name"])
            key = self._key(rt, meta["name"], namespace)
            if key in self._objects:
                raise KubeConflict(f'{rt.qualified} "{meta["name"]}" already exists', status=409)
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            if rt.status_subresource:
                obj.pop("status", None)
            for cleared in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
                meta.pop(cleared, None)
            if rt == NAMESPACES or (rt.group, rt.plural) == ("", "namespaces"):
                obj["spec"] = {"finalizers": ["kubernetes"]}
                obj["status"] = {"phase": "Active"}
            self._prune(rt, obj)
            self._validate(rt, obj, None)
            if self.admission is not None:
                self.admission("CREATE", rt, obj, None)
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
            meta["resourceVersion"] = self._bump()
            self._set(key, obj)
            self._raw[key] = self._raw_texts(rt, obj, raw)
            self._record("ADDED", key, obj, None)
            return _clone(obj)

    def _generated(self, rt: ResourceType, base: str, namespace: str | None) -> str:
        while True:
            name = base[:58] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            if self._key(rt, name, namespace) not in self._objects:
                return name

    def update_object(
        self,
        rt: ResourceType,
        body: JsonObject,
        *,
        status: bool = False,
        raw: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """UPDATE (PUT) the object or its status subresource.

        Raises:
            KubeNotFound: no such object.
            KubeConflict: a stale ``resourceVersion`` or another ``uid``.
            KubeApiError: 422 for a custom resource without ``resourceVersion``, a changed immutable
                field, or a new finalizer on an object being deleted.
        """
        with self._lock:
            meta = body.get("metadata") or {}
            name = meta.get("name", "")
            self._on_call("update-status" if status else "update", rt.plural, name)
            if status and not rt.status_subresource:
                raise KubeNotFound("the server could not find the requested resource", status=404)
            key = self._key(rt, name, meta.get("namespace"))
            current = self._objects.get(key)
            if current is None:
                raise self._missing(rt, name)
            cur_meta = current["metadata"]
            want = meta.get("resourceVersion")
            if not want and rt.custom:
                raise invalid(
                    rt,
                    name,
                    ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
                )
            if want and want != cur_meta["resourceVersion"]:
                raise self._conflict(rt, name)
            if meta.get("uid") not in (None, "", cur_meta["uid"]):
                raise KubeConflict(
                    f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                    f"{cur_meta['uid']}",
                    status=409,
                )
            return self._store(rt, key, current, _clone(body), status=status, raw=raw)

    def _store(
        self,
        rt: ResourceType,
        key: _Key,
        current: JsonObject,
        new: JsonObject,
        *,
        status: bool,
        raw: Mapping[str, str] | None,
    ) -> JsonObject:
        """Apply the update strategy (status/main split, kept metadata, immutables) and write."""
        cur_meta = current["metadata"]
        if status:
            obj = _clone(current)
            if "status" in new:
                obj["status"] = new["status"]
            else:
                obj.pop("status", None)
            raw_texts = dict(self._raw.get(key, {}))
        else:
            obj, raw_texts = self._prepare_main(rt, key, current, new, raw)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        obj["metadata"]["resourceVersion"] = cur_meta["resourceVersion"]
        obj["metadata"].pop("managedFields", None)
        if self.admission is not None:
            self.admission("UPDATE", rt, obj, current)
        if obj == current and raw_texts == self._raw.get(key, {}):
            return _clone(current)  # no change: no write, no new revision, no event
        obj["metadata"]["resourceVersion"] = self._bump()
        self._raw[key] = raw_texts
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            self._remove(key, obj)
        else:
            self._set(key, obj)
            self._record("MODIFIED", key, obj, current)
        return _clone(obj)

    def _prepare_main(
        self, rt: ResourceType, key: _Key, current: JsonObject, obj: JsonObject, raw: Mapping[str, str] | None
    ) -> tuple[JsonObject, dict[str, str]]:
        """The update strategy of the main resource: status and system metadata kept, immutables checked."""
        cur_meta = current["metadata"]
        if rt.status_subresource:
            if "status" in current:
                obj["status"] = _clone(current["status"])
            else:
                obj.pop("status", None)
        meta = obj.setdefault("metadata", {})
        for kept in (
            "name",
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if kept in cur_meta:
                meta[kept] = cur_meta[kept]
            else:
                meta.pop(kept, None)
        self._prune(rt, obj)
        added = [f for f in meta.get("finalizers") or [] if f not in (cur_meta.get("finalizers") or [])]
        problems: list[str] = []
        if cur_meta.get("deletionTimestamp") and added:
            quoted = ", ".join(f'"{f}"' for f in added)
            problems.append(
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being "
                f"deleted, found new finalizers []string{{{quoted}}}"
            )
        problems += meta_problems(rt, meta)
        raw_texts = self._raw_texts(rt, obj, raw)
        problems += builtin_update_problems(rt, current, obj, self._raw.get(key, {}), raw_texts)
        crd = self._crds.get((rt.group, rt.plural))
        for path, message in crd.immutable if crd else ():
            if value_at(current, path) != value_at(obj, path):
                problems.append(f'{".".join(path)}: Invalid value: "object": {message}')
        if problems:
            raise invalid(rt, cur_meta["name"], problems)
        self._validate(rt, obj, current)
        if rt.custom:
            changed = {k: v for k, v in obj.items() if k not in ("metadata", "status")} != {
                k: v for k, v in current.items() if k not in ("metadata", "status")
            }
        else:
            changed = obj.get("spec") != current.get("spec")
        meta["generation"] = cur_meta.get("generation", 1) + (1 if changed else 0)
        return obj, raw_texts

    def patch_object(
        self,
        rt: ResourceType,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: str = "merge",
        status: bool = False,
    ) -> JsonObject:
        """PATCH: ``merge`` (RFC 7386), ``json`` (RFC 6902) or ``strategic`` (built-in kinds only).

        The patched object keeps the update rules (immutables, status split); a ``resourceVersion``
        it carries must be the current one (409); a patch never needs one.
        """
        with self._lock:
            self._on_call("patch-status" if status else "patch", rt.plural, name)
            if patch_type == "strategic" and rt.custom:
                raise KubeApiError(
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    status=415,
                )
            if status and not rt.status_subresource:
                raise KubeNotFound("the server could not find the requested resource", status=404)
            key = self._key(rt, name, namespace)
            current = self._objects.get(key)
            if current is None:
                raise self._missing(rt, name)
            patched = apply_patch(patch_type, current, patch)
            meta = patched.get("metadata")
            if not isinstance(meta, dict):
                meta = {}
            want = meta.get("resourceVersion")
            if want and want != current["metadata"]["resourceVersion"]:
                raise self._conflict(rt, name)
            if meta.get("uid") not in (None, "", current["metadata"]["uid"]):
                raise KubeConflict(
                    f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                    f"{current['metadata']['uid']}",
                    status=409,
                )
            if meta.get("name", name) != name:
                raise KubeApiError(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                    f"({name})",
                    status=400,
                )
            # The apiserver patches the JSON it re-serialized: RawExtensions come back compact.
            return self._store(rt, key, current, patched, status=status, raw=None)

    def delete_object(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        missing_ok: bool = True,
        propagation: str = "Background",
    ) -> JsonObject | None:
        """DELETE: gone at once, or only marked (deletionTimestamp) while finalizers remain.

        ``propagation`` is the DeleteOptions' ``propagationPolicy``: ``Background`` (dependents go after
        the owner), ``Foreground`` (the owner waits, with the ``foregroundDeletion`` finalizer, until its
        dependents are gone) or ``Orphan`` (dependents stay, without their reference to the owner).

        Returns:
            the object as deleted or marked; None if it did not exist and ``missing_ok``.

        Raises:
            KubeNotFound: no such object and not ``missing_ok``.
            KubeConflict: a ``uid`` or ``resource_version`` precondition does not hold.
        """
        with self._lock:
            self._on_call("delete", rt.plural, name)
            key = self._key(rt, name, namespace)
            current = self._objects.get(key)
            if current is None:
                if missing_ok:
                    return None
                raise self._missing(rt, name)
            cur_meta = current["metadata"]
            if uid is not None and cur_meta["uid"] != uid:
                raise KubeConflict(
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {cur_meta['uid']}",
                    status=409,
                )
            if resource_version is not None and cur_meta["resourceVersion"] != resource_version:
                raise KubeConflict(
                    f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                    f"ResourceVersion in object meta: {cur_meta['resourceVersion']}",
                    status=409,
                )
            if propagation not in _PROPAGATION:
                raise invalid(
                    rt,
                    name,
                    [
                        f'propagationPolicy: Unsupported value: "{propagation}": supported values: '
                        '"Foreground", "Background", "Orphan"'
                    ],
                )
            if self.admission is not None:
                self.admission("DELETE", rt, None, current)
            return self._delete(rt, key, propagation)

    def _dependents(self, uid: str) -> list[_Key]:
        return [
            k
            for k, o in self._objects.items()
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _delete(self, rt: ResourceType, key: _Key, propagation: str = "Background") -> JsonObject:
        current = self._objects[key]
        cur_meta = current["metadata"]
        is_namespace = (rt.group, rt.plural) == ("", "namespaces")
        if propagation == "Orphan":
            self._orphaning.add(cur_meta["uid"])
        elif propagation == "Foreground" and self._dependents(cur_meta["uid"]):
            return self._delete_foreground(key, current)
        if cur_meta.get("finalizers") or is_namespace:
            if cur_meta.get("deletionTimestamp"):
                return _clone(current)
            marked = _clone(current)
            marked["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
            if is_namespace:
                marked.setdefault("status", {})["phase"] = "Terminating"
            marked["metadata"]["resourceVersion"] = self._bump()
            self._set(key, marked)
            self._record("MODIFIED", key, marked, current)
            if is_namespace:
                self._empty_namespace(key[3])
            return _clone(marked)
        removed = _clone(current)
        removed["metadata"]["resourceVersion"] = self._bump()
        self._remove(key, removed)
        return removed

    def _delete_foreground(self, key: _Key, current: JsonObject) -> JsonObject:
        """Foreground: mark the owner (``foregroundDeletion``), delete its dependents, then release it."""
        marked = _clone(current)
        meta = marked["metadata"]
        meta.setdefault("deletionTimestamp", _now())
        meta["deletionGracePeriodSeconds"] = 0
        if _FOREGROUND not in (meta.get("finalizers") or []):
            meta["finalizers"] = [*(meta.get("finalizers") or []), _FOREGROUND]
        meta["resourceVersion"] = self._bump()
        self._set(key, marked)
        self._record("MODIFIED", key, marked, current)
        for dependent in self._dependents(meta["uid"]):
            if dependent in self._objects:
                self._delete(_type_of(dependent, self._objects[dependent]), dependent)
        self._release_foreground(meta["uid"])
        return _clone(self._objects.get(key, marked))

    def _release_foreground(self, owner_uid: str) -> None:
        """The garbage collector: an owner waiting in foreground deletion goes once its dependents did."""
        found = [(k, o) for k, o in self._objects.items() if o["metadata"].get("uid") == owner_uid]
        for key, owner in found:
            finalizers = owner["metadata"].get("finalizers") or []
            if _FOREGROUND not in finalizers or self._dependents(owner_uid):
                continue
            released = _clone(owner)
            released["metadata"]["finalizers"] = [f for f in finalizers if f != _FOREGROUND]
            if not released["metadata"]["finalizers"]:
                del released["metadata"]["finalizers"]
            released["metadata"]["resourceVersion"] = self._bump()
            if released["metadata"].get("finalizers"):
                self._set(key, released)
                self._record("MODIFIED", key, released, owner)
            else:
                self._remove(key, released)

    def _remove(self, key: _Key, obj: JsonObject) -> None:
        """Drop a stored object (revision already bumped), then what depended on it."""
        previous = self._pop(key)
        self._raw.pop(key, None)
        self._record("DELETED", key, obj, previous)
        self._collect_garbage(obj["metadata"].get("uid"))
        for reference in obj["metadata"].get("ownerReferences") or []:
            self._release_foreground(str(reference.get("uid")))
        if key[2]:
            self._finish_namespace(key[2])

    def _collect_garbage(self, gone_uid: str | None) -> None:
        """Delete objects whose owners are all gone (the garbage collector's background policy), or
        drop their reference to an owner deleted with the ``Orphan`` policy."""
        if not gone_uid:
            return
        if gone_uid in self._orphaning:
            self._orphaning.discard(gone_uid)
            for key in self._dependents(gone_uid):
                dependent = self._objects[key]
                orphan = _clone(dependent)
                refs = [r for r in orphan["metadata"]["ownerReferences"] if r.get("uid") != gone_uid]
                orphan["metadata"]["ownerReferences"] = refs
                if not refs:
                    del orphan["metadata"]["ownerReferences"]
                orphan["metadata"]["resourceVersion"] = self._bump()
                self._set(key, orphan)
                self._record("MODIFIED", key, orphan, dependent)
            return
        alive = {o["metadata"].get("uid") for o in self._objects.values()}
        for key, obj in list(self._objects.items()):
            owners = [r.get("uid") for r in obj["metadata"].get("ownerReferences") or []]
            if gone_uid in owners and not any(u in alive for u in owners) and key in self._objects:
                self._delete(_type_of(key, obj), key)

    def _empty_namespace(self, namespace: str) -> None:
        """The namespace controller: delete everything in a Terminating namespace."""
        for key, obj in list(self._objects.items()):
            if key[2] == namespace and key in self._objects:
                self._delete(_type_of(key, obj), key)
        self._finish_namespace(namespace)

    def _finish_namespace(self, namespace: str) -> None:
        key = self._key(NAMESPACES, namespace, None)
        ns = self._objects.get(key)
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        if any(k[2] == namespace for k in self._objects):
            return
        removed = _clone(ns)
        removed["metadata"]["resourceVersion"] = self._bump()
        self._remove(key, removed)

    # --- watch -----------------------------------------------------------------------------------

    def watch_objects(
        self, rt: ResourceType, namespace: str | None = None, **options: Unpack[WatchOptions]
    ) -> WatchStream:
        """WATCH: a stream of events as the apiserver sends them, starting at the call.

        ``resource_version`` "" or "0" starts with an ADDED event per existing object; a revision N
        yields every change after N, or one ERROR event with a 410 Expired Status if the history no
        longer reaches back to N. An object that stops (starts) matching the selectors is a DELETED
        (ADDED) event. The stream ends after ``timeout_s`` seconds (with a BOOKMARK when
        ``allow_bookmarks``, which also sends one every :attr:`bookmark_interval`) or on ``close()``.

        Raises:
            KubeApiError: 400 for a malformed selector or resourceVersion.
        """
        query = Query(**options)
        resource_version = query.resource_version
        labels = LabelSelector.parse(query.label_selector)
        fields = FieldSelector.parse(query.field_selector, rt)
        if resource_version not in ("", "0") and not resource_version.isdigit():
            raise KubeApiError(
                f"resourceVersion: Invalid value: {resource_version!r}: must be an integer", status=400
            )
        self._on_call("watch", rt.plural, "")

        def selected(obj: JsonObject | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata") or {}
            return (
                (namespace is None or not rt.namespaced or meta.get("namespace") == namespace)
                and labels.matches(meta.get("labels") or {})
                and fields.matches(obj)
            )

        with self._lock:  # the starting point is the request's moment, as with the API server
            initial: list[WatchEvent] = []
            if resource_version in ("", "0"):
                initial = [
                    WatchEvent(type="ADDED", object=_clone(o))
                    for o in self._selected(rt, namespace, labels, fields)
                ]
                position = self._revision
            else:
                position = int(resource_version)
                if position < self._compacted:
                    initial = [self._expired(position)]
        return StoreWatch(
            self,
            rt,
            selected,
            position=position,
            initial=initial,
            timeout_s=query.timeout_s,
            allow_bookmarks=query.allow_bookmarks,
        )

    def _expired(self, position: int) -> WatchEvent:
        message = f"too old resource version: {position} ({self._compacted + 1})"
        return WatchEvent(type="ERROR", object=expired_status(message))

    def _events_after(
        self, rt: ResourceType, position: int, selected: Callable[[JsonObject | None], bool]
    ) -> tuple[list[WatchEvent], int]:
        """Events of ``rt`` after ``position`` as a selecting watcher sees them; the new position."""
        start = bisect.bisect_right(self._event_revisions, position)
        events = self._events[start:]
        pending: list[WatchEvent] = []
        for event in events:
            if (event.key[0], event.key[1]) != (rt.group, rt.plural):
                continue
            now_in, was_in = selected(event.obj), selected(event.previous)
            kind = event.type
            if event.type == "MODIFIED" and now_in != was_in:
                kind = "ADDED" if now_in else "DELETED"
            if now_in or was_in:
                pending.append(WatchEvent(type=kind, object=_clone(event.obj)))
        return pending, events[-1].revision if events else position


def _type_of(key: _Key, obj: JsonObject) -> ResourceType:
    """The resource type of a stored object (for deletes the store starts itself)."""
    version = str(obj.get("apiVersion", "v1")).rsplit("/", 1)[-1]
    return ResourceType(
        group=key[0], version=version, plural=key[1], kind=str(obj.get("kind", "")), namespaced=bool(key[2])
    )
