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

The class comes in parts: :mod:`.state` (objects, the revision, the event history), :mod:`.deletion`
(finalizers, propagation, the garbage collector, terminating namespaces) and :mod:`.watch`; this module
adds configuration, reads and writes.
"""

from __future__ import annotations

__all__ = ["Admission", "ObjectStore", "Validator"]

import contextlib
import secrets
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Unpack

from nvdra.core.errors import KubeApiError, KubeConflict, KubeNotFound
from nvdra.kubeletplugin.objects import (
    NAMESPACES,
    JsonObject,
    Query,
    ResourceType,
    Selectors,
)
from nvdra.kubeletplugin.store.deletion import Deletions
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
from nvdra.kubeletplugin.store.state import Admission, Key, Validator, clone, now
from nvdra.kubeletplugin.store.watch import Watching


class ObjectStore(Deletions, Watching):
    """Thread-safe in-memory objects with the API server semantics listed in the module docstring.

    Args:
        on_call: called with (verb, plural, name) before each logged call (a fault may raise there).
        history: how many watch events are kept; a watch from an older revision gets a 410.
        strict_namespaces: refuse objects in a Namespace that does not exist (404), as the apiserver's
            NamespaceLifecycle admission does; off, an unknown namespace counts as an existing one.
    """

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

    # --- helpers ---------------------------------------------------------------------------------

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
            stored = clone(obj)
            meta = stored.setdefault("metadata", {})
            if rt.namespaced:
                meta.setdefault("namespace", "default")
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self._bump()
            stored["apiVersion"], stored["kind"] = rt.api_version, rt.kind
            key = self._key(rt, meta["name"], meta.get("namespace"))
            previous = self._objects.get(key)
            self._set(key, stored)
            self._raw[key] = self._raw_texts(rt, stored, None)
            self._record("MODIFIED" if previous else "ADDED", key, stored, previous)
            return clone(stored)

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
            return clone(obj)

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
            items = [clone(obj) for obj in self._selected(rt, namespace, labels, fields)]
            return items, str(self._revision)

    def all_objects(self, rt: ResourceType) -> list[JsonObject]:
        """Every stored object of ``rt`` (copies), not logged and never faulted (test inspection)."""
        with self._lock:
            return [clone(obj) for _, obj in sorted(self._by_type.get((rt.group, rt.plural), {}).items())]

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
            obj = clone(body)
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
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=now())
            meta["resourceVersion"] = self._bump()
            self._set(key, obj)
            self._raw[key] = self._raw_texts(rt, obj, raw)
            self._record("ADDED", key, obj, None)
            return clone(obj)

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
            return self._store(rt, key, current, clone(body), status=status, raw=raw)

    def _store(
        self,
        rt: ResourceType,
        key: Key,
        current: JsonObject,
        new: JsonObject,
        *,
        status: bool,
        raw: Mapping[str, str] | None,
    ) -> JsonObject:
        """Apply the update strategy (status/main split, kept metadata, immutables) and write."""
        cur_meta = current["metadata"]
        if status:
            obj = clone(current)
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
            return clone(current)  # no change: no write, no new revision, no event
        obj["metadata"]["resourceVersion"] = self._bump()
        self._raw[key] = raw_texts
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            self._remove(key, obj)
        else:
            self._set(key, obj)
            self._record("MODIFIED", key, obj, current)
        return clone(obj)

    def _prepare_main(
        self, rt: ResourceType, key: Key, current: JsonObject, obj: JsonObject, raw: Mapping[str, str] | None
    ) -> tuple[JsonObject, dict[str, str]]:
        """The update strategy of the main resource: status and system metadata kept, immutables checked."""
        cur_meta = current["metadata"]
        if rt.status_subresource:
            if "status" in current:
                obj["status"] = clone(current["status"])
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
