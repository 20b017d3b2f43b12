"""Generic Kubernetes objects: a resource type, the ``ObjectApi`` protocol, and an in-memory store.

Drivers need more of the API than the toolkit's own ``KubeApi`` (MPS daemons are Deployments, the
ComputeDomain side works with its CRDs, DaemonSets, ResourceClaimTemplates, Node labels, Leases).
:class:`ObjectApi` covers them with raw JSON and the API server's semantics; the ``kubernetes``-client
adapter, :class:`~nvdra.kubeletplugin.FakeKube` and the test :class:`~nvdra.kubeletplugin.ApiServer`
implement it.

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
import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import attrs

from nvdra.core.errors import KubeApiError, KubeConflict, KubeNotFound

__all__ = [
    "DAEMON_SETS",
    "DEPLOYMENTS",
    "DEVICE_CLASSES",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "PODS",
    "RESOURCE_CLAIMS",
    "RESOURCE_CLAIM_TEMPLATES",
    "RESOURCE_SLICES",
    "FieldSelector",
    "LabelSelector",
    "ObjectApi",
    "ObjectStore",
    "ResourceType",
    "WatchEvent",
    "WatchStream",
    "claim_spec_problems",
    "drop_field",
    "failure_status",
    "json_patch",
    "match_fields",
    "match_labels",
    "merge_patch",
    "strategic_merge_patch",
    "unknown_fields",
]

JsonObject = dict[str, Any]
_T = TypeVar("_T")

_BUILTIN_GROUPS = frozenset({"", "apps", "batch", "policy", "autoscaling"})


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

    @property
    def custom(self) -> bool:
        """Whether this is a custom resource (a group outside Kubernetes' own: no ``*.k8s.io``, ``apps``…)."""
        return not (self.group in _BUILTIN_GROUPS or self.group.endswith(".k8s.io"))

    @property
    def qualified(self) -> str:
        """``<plural>.<group>`` (``<plural>`` for the core group), as the apiserver names it in errors."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``<Kind>.<group>`` (``<Kind>`` for the core group), as 422 messages name it."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

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
NAMESPACES = ResourceType(group="", version="v1", plural="namespaces", kind="Namespace", namespaced=False)
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
RESOURCE_SLICES = ResourceType(
    group="resource.k8s.io",
    version="v1",
    plural="resourceslices",
    kind="ResourceSlice",
    namespaced=False,
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


# --- patches -------------------------------------------------------------------------------------


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


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KubeApiError(f'JSON pointer {path!r} must start with "/"', status=422)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str], op: str, path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)
    return node


def _index(node: list[Any], part: str, path: str, *, insert: bool) -> int:
    if insert and part == "-":
        return len(node)
    if not part.isdigit() or int(part) > len(node) - (0 if insert else 1):
        raise KubeApiError(f"array index out of bounds: {path}", status=422)
    return int(part)


def _get_at(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    node = _container(doc, parts, op, path)
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node[last]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node[int(last)]
    raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)


def _remove_at(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    node = _container(doc, parts, op, path)
    last = parts[-1] if parts else ""
    if isinstance(node, dict) and last in node:
        return node.pop(last)
    if isinstance(node, list):
        return node.pop(_index(node, last, path, insert=False))
    raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)


def _add_at(doc: Any, path: str, value: Any, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    node = _container(doc, parts, op, path)
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    elif isinstance(node, list):
        node.insert(_index(node, last, path, insert=True), copy.deepcopy(value))
    else:
        raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test); any failure is a 422.

    A failed ``test`` reads ``testing value <path> failed: test failed``, the apiserver's message.
    """
    if not isinstance(operations, list):
        raise KubeApiError("a JSON patch must be a list of operations", status=400)
    doc = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        if not isinstance(operation, dict) or not isinstance(operation.get("path"), str):
            raise KubeApiError(
                f"JSON patch operation {number}: an object with a path is required", status=422
            )
        doc = _apply_operation(doc, operation)
    return doc


def _apply_operation(doc: Any, operation: JsonObject) -> Any:
    op, path = operation.get("op"), operation["path"]
    if op in ("add", "replace", "test") and "value" not in operation:
        raise KubeApiError(f"{op} operation at {path}: missing value", status=422)
    if op == "add":
        return _add_at(doc, path, operation["value"], op)
    if op == "remove":
        _remove_at(doc, path, op)
        return doc
    if op == "replace":
        if _pointer(path):
            _remove_at(doc, path, op)
        return _add_at(doc, path, operation["value"], op)
    if op in ("move", "copy"):
        source = operation.get("from")
        if not isinstance(source, str):
            raise KubeApiError(f"{op} operation at {path}: missing from", status=422)
        value = _remove_at(doc, source, op) if op == "move" else copy.deepcopy(_get_at(doc, source, op))
        return _add_at(doc, path, value, op)
    if op == "test":
        try:
            found = _get_at(doc, path, op)
        except KubeApiError:
            found = _MISSING
        if found != operation["value"]:
            raise KubeApiError(f"testing value {path} failed: test failed", status=422)
        return doc
    raise KubeApiError(f"Unexpected kind: {op}", status=422)


_MISSING = object()

# Strategic merge patch: list fields merged by key (patchMergeKey) or as sets of primitives.
_SMP_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "resourceClaims": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "addresses": "type",
    "taints": "key",
}
_SMP_PRIMITIVE_SETS = frozenset({"finalizers"})


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch of a built-in kind's JSON (the apiserver's ``$patch`` directives included).

    Maps merge as in a merge patch; lists whose schema declares a merge key (``containers`` by name,
    ``conditions`` by type, …) merge element by element; ``finalizers`` merge as a set; other lists are
    replaced. Directives: ``$patch: replace|delete`` in a map or list element, ``$retainKeys``,
    ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>`` (accepted, order kept).
    """
    if not isinstance(patch, dict):
        if isinstance(patch, list) and isinstance(target, list):
            return _smp_list(target, patch, field)
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = set(map(json.dumps, value or []))
            out[name] = [v for v in out.get(name) or [] if json.dumps(v) not in drop]
            continue
        if value is None:
            out.pop(key, None)
            continue
        merged = strategic_merge_patch(out.get(key), value, key)
        if merged is None and isinstance(value, dict) and value.get("$patch") == "delete":
            out.pop(key, None)
        else:
            out[key] = merged
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _smp_list(target: list[Any], patch: list[Any], field: str) -> list[Any]:
    if field in _SMP_PRIMITIVE_SETS:
        seen = list(target)
        for item in patch:
            if item not in seen:
                seen.append(copy.deepcopy(item))
        return seen
    key = _SMP_MERGE_KEYS.get(field)
    if key is None or not all(isinstance(p, dict) for p in patch):
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        return copy.deepcopy(patch)
    if any(p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if "$patch" not in p]
    out = [copy.deepcopy(t) for t in target]
    for item in patch:
        position = next(
            (i for i, t in enumerate(out) if isinstance(t, dict) and t.get(key) == item.get(key)), None
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del out[position]
        elif position is None:
            out.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            out[position] = strategic_merge_patch(out[position], item, field)
    return out


# --- selectors -----------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*(?P<key>[^\s!=,()]+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)\s*$")
_KEY = re.compile(r"^([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b`` → two terms)."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


@attrs.frozen
class LabelSelector:
    """A parsed label selector: (key, operator, values) requirements, all of which must hold."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...]

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h``.

        Raises:
            KubeApiError: 400 naming the term that is not a selector.
        """
        out: list[tuple[str, str, frozenset[str]]] = []
        for term in _split_terms(text or ""):
            match = _SET_TERM.match(term)
            if match:
                values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
                key, op = match["key"], match["op"]
            elif "!=" in term:
                key, value = (p.strip() for p in term.split("!=", 1))
                op, values = "notin", frozenset({value})
            elif "=" in term:
                key, value = (p.strip() for p in term.replace("==", "=", 1).split("=", 1))
                op, values = "in", frozenset({value})
            elif term.startswith("!"):
                key, op, values = term[1:].strip(), "!", frozenset()
            else:
                key, op, values = term, "exists", frozenset()
            if not _KEY.match(key) or any(("=" in v or " " in v) for v in values):
                raise KubeApiError(
                    f"unable to parse requirement: invalid label selector term {term!r}", status=400
                )
            out.append((key, op, values))
        return cls(tuple(out))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement."""
        for key, op, values in self.requirements:
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
            if op == "exists" and key not in labels:
                return False
            if op == "!" and key in labels:
                return False
        return True


def match_labels(labels: Mapping[str, str], selector: str) -> bool:
    """Whether ``labels`` satisfy a label selector (``a=b,c!=d,e in (x,y),f notin (z),g,!h``)."""
    return LabelSelector.parse(selector).matches(labels)


# Field selectors each kind supports beyond metadata.name and metadata.namespace (apiserver's lists).
_FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    ("", "nodes"): frozenset({"spec.unschedulable"}),
    ("", "namespaces"): frozenset({"status.phase"}),
    ("resource.k8s.io", "resourceslices"): frozenset({"spec.driver", "spec.nodeName"}),
    ("resource.k8s.io", "resourceclaims"): frozenset(),
}


def match_fields(obj: JsonObject, selector: str, rt: ResourceType | None = None) -> bool:
    """Whether ``obj`` satisfies a field selector (``metadata.name``, ``metadata.namespace`` and, given
    ``rt``, the fields the apiserver supports for that kind).

    Raises:
        KubeApiError: another field (400, as the API server answers for a field it does not index).
    """
    kind = rt or ResourceType(group="", version="v1", plural="", kind="")
    return FieldSelector.parse(selector, kind).matches(obj)


_FIELD_PATHS = {
    field: tuple(field.split("."))
    for field in {"metadata.name", "metadata.namespace"}.union(*_FIELD_LABELS.values())
}


def _field_value(obj: JsonObject, path: tuple[str, ...]) -> str:
    node: Any = obj
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@attrs.frozen
class FieldSelector:
    """A parsed field selector: (field, equal?, value) requirements, all of which must hold."""

    requirements: tuple[tuple[str, bool, str], ...]

    @classmethod
    def parse(cls, text: str, rt: ResourceType) -> FieldSelector:
        """Parse ``metadata.name=a,spec.nodeName!=b`` for ``rt``.

        Raises:
            KubeApiError: 400 for a field the kind cannot be selected by, as the apiserver answers.
        """
        out: list[tuple[str, bool, str]] = []
        allowed = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get((rt.group, rt.plural), set())
        for term in _split_terms(text or ""):
            if "!=" in term:
                key, value = term.split("!=", 1)
                equal = False
            elif "=" in term:
                key, value = term.replace("==", "=", 1).split("=", 1)
                equal = True
            else:
                raise KubeApiError(f"invalid selector: {term!r}; can't understand {term!r}", status=400)
            key = key.strip()
            if key not in allowed:
                if rt.custom:
                    raise KubeApiError(
                        f'"{key}" is not a known field selector: only "metadata.name", "metadata.namespace"',
                        status=400,
                    )
                raise KubeApiError(f'field label not supported: "{key}"', status=400)
            out.append((key, equal, value.strip()))
        return cls(tuple(out))

    def matches(self, obj: JsonObject) -> bool:
        """Whether ``obj`` satisfies every requirement."""
        for key, equal, value in self.requirements:
            if (_field_value(obj, _FIELD_PATHS[key]) == value) != equal:
                return False
        return True


# --- schemas: unknown fields and pruning ---------------------------------------------------------

_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def unknown_fields(
    schema: Mapping[str, Any], obj: Any, path: str = "", *, defs: Mapping[str, Any] | None = None
) -> list[str]:
    """Field paths in ``obj`` that an OpenAPI v3 ``schema`` does not declare (``spec.foo``, …).

    ``$ref`` (``#/$defs/<name>`` or ``#/definitions/<name>``) resolves in ``defs``; maps
    (``additionalProperties``), ``x-kubernetes-preserve-unknown-fields`` and RawExtensions accept any key.
    """
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name.endswith("runtime.RawExtension"):
            return []
        schema = (defs or {}).get(name, {})
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if path == "metadata" and not properties:
            found += [f"metadata.{k}" for k in obj if k not in _OBJECT_META_FIELDS]
            return found
        for key, value in obj.items():
            here = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                found += unknown_fields(properties[key], value, here, defs=defs)
            elif isinstance(extra, dict):
                found += unknown_fields(extra, value, here, defs=defs)
            elif properties is not None and extra is not True:
                found.append(here)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(schema["items"], item, f"{path}[{i}]", defs=defs)
    return found


def drop_field(obj: JsonObject, path: str) -> None:
    """Remove the field at a path :func:`unknown_fields` reported (``a.b[2].c``)."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = obj
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.get(part)
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


@attrs.frozen
class _Crd:
    schema: Mapping[str, Any]
    immutable: tuple[tuple[tuple[str, ...], str], ...]  # (field path, message) of `self == oldSelf` rules


def _transition_rules(
    schema: Mapping[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str]]:
    rules: list[tuple[tuple[str, ...], str]] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if rule.get("rule", "").replace(" ", "") != "self==oldSelf":
            raise ValueError(
                f"x-kubernetes-validations at {'.'.join(path) or '<root>'}: only the rule "
                f"'self == oldSelf' is evaluated here, got {rule.get('rule')!r}"
            )
        rules.append((path, rule.get("message") or "Invalid value"))
    for key, sub in (schema.get("properties") or {}).items():
        rules += _transition_rules(sub, (*path, key))
    return rules


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


# --- built-in rules ------------------------------------------------------------------------------


def _compact(value: Any) -> str:
    """The bytes the apiserver's JSON encoder writes for a value: compact, keys in their order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def raw_extension_paths(rt: ResourceType) -> tuple[str, ...] | None:
    """Where ``rt``'s spec holds RawExtensions (opaque ``parameters``): the path of the config list."""
    if (rt.group, rt.plural) == ("resource.k8s.io", "resourceclaims"):
        return ("spec", "devices", "config")
    if (rt.group, rt.plural) == ("resource.k8s.io", "resourceclaimtemplates"):
        return ("spec", "spec", "devices", "config")
    if (rt.group, rt.plural) == ("resource.k8s.io", "deviceclasses"):
        return ("spec", "config")
    return None


def raw_extensions(rt: ResourceType, obj: JsonObject) -> dict[str, Any]:
    """Field path → value of each opaque ``parameters`` RawExtension in ``obj``'s spec."""
    where = raw_extension_paths(rt)
    configs = _at(obj, where) if where else None
    if not isinstance(configs, list):
        return {}
    prefix = ".".join(where or ())
    return {
        f"{prefix}[{i}].opaque.parameters": c["opaque"]["parameters"]
        for i, c in enumerate(configs)
        if isinstance(c, dict) and isinstance(c.get("opaque"), dict) and "parameters" in c["opaque"]
    }


def _invalid(rt: ResourceType, name: str, problems: list[str]) -> KubeApiError:
    detail = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
    return KubeApiError(f'{rt.qualified_kind} "{name}" is invalid: {detail}', status=422)


_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_HELP = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_NAME_PART_HELP = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_HELP = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _qualified_name_problems(path: str, key: str) -> list[str]:
    """Kubernetes' qualified names (``prefix/name``: label and annotation keys, finalizers)."""
    prefix, slash, name = key.rpartition("/")
    problems = []
    if slash and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        problems.append(f'{path}: Invalid value: "{key}": prefix part {_SUBDOMAIN_HELP}')
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        problems.append(f'{path}: Invalid value: "{key}": {_NAME_PART_HELP}')
    return problems


def meta_problems(rt: ResourceType, meta: Mapping[str, Any]) -> list[str]:
    """The apiserver's ObjectMeta validation: name, namespace, labels, annotations, finalizers."""
    problems: list[str] = []
    name = str(meta.get("name", ""))
    is_namespace = (rt.group, rt.plural) == ("", "namespaces")
    if is_namespace and (len(name) > 63 or not _SUBDOMAIN.match(name) or "." in name):
        problems.append(f'metadata.name: Invalid value: "{name}": {_LABEL_HELP}')
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        problems.append(f'metadata.name: Invalid value: "{name}": {_SUBDOMAIN_HELP}')
    namespace = meta.get("namespace")
    if (
        rt.namespaced
        and namespace
        and (len(namespace) > 63 or "." in namespace or not _SUBDOMAIN.match(namespace))
    ):
        problems.append(f'metadata.namespace: Invalid value: "{namespace}": {_LABEL_HELP}')
    for key, value in (meta.get("labels") or {}).items():
        problems += _qualified_name_problems("metadata.labels", str(key))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f'metadata.labels: Invalid value: "{value}": {_VALUE_HELP}')
    for key in meta.get("annotations") or {}:
        problems += _qualified_name_problems("metadata.annotations", str(key))
    if len(json.dumps(meta.get("annotations") or {})) > 256 * 1024:
        problems.append("metadata.annotations: Too long: must have at most 262144 bytes")
    for i, finalizer in enumerate(meta.get("finalizers") or []):
        problems += _qualified_name_problems(f"metadata.finalizers[{i}]", str(finalizer))
    return problems


_ALLOCATION_MODES = ("All", "ExactCount")
_MAX_REQUESTS = 32
_MAX_SUBREQUESTS = 8
_MAX_PARAMETERS = 10 * 1024


def _dns_label_problems(path: str, value: Any) -> list[str]:
    text = str(value) if value is not None else ""
    if not text:
        return [f"{path}: Required value"]
    if len(text) > 63 or "." in text or not _SUBDOMAIN.match(text):
        return [f'{path}: Invalid value: "{text}": {_LABEL_HELP}']
    return []


def _class_problems(path: str, exact: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    device_class = exact.get("deviceClassName")
    if not device_class:
        problems.append(f"{path}.deviceClassName: Required value")
    elif len(device_class) > 253 or not _SUBDOMAIN.match(device_class):
        problems.append(f'{path}.deviceClassName: Invalid value: "{device_class}": {_SUBDOMAIN_HELP}')
    mode = exact.get("allocationMode", "ExactCount")
    if mode not in _ALLOCATION_MODES:
        problems.append(
            f'{path}.allocationMode: Unsupported value: "{mode}": supported values: "All", "ExactCount"'
        )
    count = exact.get("count")
    if mode == "ExactCount" and count is not None and (not isinstance(count, int) or count <= 0):
        problems.append(f"{path}.count: Invalid value: {count}: must be greater than zero")
    if mode == "All" and count is not None:
        problems.append(
            f"{path}.count: Invalid value: {count}: must not be specified when allocationMode is 'All'"
        )
    return problems


def _request_problems(where: str, request: Mapping[str, Any], names: set[str]) -> list[str]:
    """One request's rules; adds its name (and ``name/sub`` of its subrequests) to ``names``."""
    name = request.get("name")
    problems = _dns_label_problems(f"{where}.name", name)
    if name in names:
        problems.append(f'{where}.name: Duplicate value: "{name}"')
    names.add(str(name))
    if len([k for k in ("exactly", "firstAvailable") if request.get(k)]) != 1:
        problems.append(f"{where}: Invalid value: exactly one of `exactly` or `firstAvailable` is required")
    if request.get("exactly"):
        problems += _class_problems(f"{where}.exactly", request["exactly"])
    subrequests = request.get("firstAvailable") or []
    if len(subrequests) > _MAX_SUBREQUESTS:
        problems.append(f"{where}.firstAvailable: Too many: {len(subrequests)}: must have at most 8 items")
    for j, sub in enumerate(subrequests):
        problems += _dns_label_problems(f"{where}.firstAvailable[{j}].name", sub.get("name"))
        problems += _class_problems(f"{where}.firstAvailable[{j}]", sub)
        names.add(f"{name}/{sub.get('name')}")
    return problems


_NOT_A_REQUEST = (
    "must be the name of a request in the claim or the name of a request and a subrequest separated by '/'"
)


def _config_problems(where: str, config: Mapping[str, Any], names: set[str]) -> list[str]:
    problems = [
        f'{where}.requests[{j}]: Invalid value: "{ref}": {_NOT_A_REQUEST}'
        for j, ref in enumerate(config.get("requests") or [])
        if ref not in names
    ]
    opaque = config.get("opaque")
    if not isinstance(opaque, dict):
        return [*problems, f"{where}.opaque: Required value"]
    driver = opaque.get("driver") or ""
    if not driver or len(driver) > 63 or not _SUBDOMAIN.match(driver):
        problems.append(f'{where}.opaque.driver: Invalid value: "{driver}": {_SUBDOMAIN_HELP}')
    parameters = opaque.get("parameters")
    if not isinstance(parameters, dict):
        problems.append(f"{where}.opaque.parameters: Invalid value: parameters must be a valid JSON object")
    elif len(_compact(parameters)) > _MAX_PARAMETERS:
        problems.append(f"{where}.opaque.parameters: Too long: may not be more than {_MAX_PARAMETERS} bytes")
    return problems


def claim_spec_problems(spec: Any, path: str) -> list[str]:
    """The apiserver's ResourceClaimSpec rules (v1 shape) that a driver's generated objects can break:
    request names, exactly one of ``exactly``/``firstAvailable``, a device class, allocation mode and
    count, config and constraint references to known requests, the opaque driver and parameters."""
    devices = (spec or {}).get("devices") or {}
    requests = devices.get("requests") or []
    problems: list[str] = []
    if len(requests) > _MAX_REQUESTS:
        problems.append(
            f"{path}.devices.requests: Too many: {len(requests)}: must have at most {_MAX_REQUESTS} items"
        )
    names: set[str] = set()
    for i, request in enumerate(requests):
        problems += _request_problems(
            f"{path}.devices.requests[{i}]", request if isinstance(request, dict) else {}, names
        )
    for i, config in enumerate(devices.get("config") or []):
        problems += _config_problems(f"{path}.devices.config[{i}]", config, names)
    for i, constraint in enumerate(devices.get("constraints") or []):
        problems += [
            f'{path}.devices.constraints[{i}].requests[{j}]: Invalid value: "{ref}": {_NOT_A_REQUEST}'
            for j, ref in enumerate(constraint.get("requests") or [])
            if ref not in names
        ]
    return problems


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def _pod_spec_core(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
    for field in ("containers", "initContainers"):
        out[field] = [
            {k: v for k, v in c.items() if k != "image"} for c in spec.get(field) or [] if isinstance(c, dict)
        ]
    return out


def _builtin_update_problems(
    rt: ResourceType, old: JsonObject, new: JsonObject, old_raw: Mapping[str, str], new_raw: Mapping[str, str]
) -> list[str]:
    """The apiserver's immutable-field rules of the built-in kinds nvdra writes."""
    what = (rt.group, rt.plural)
    claims = (("resource.k8s.io", "resourceclaims"), ("resource.k8s.io", "resourceclaimtemplates"))
    if what in claims and (old.get("spec") != new.get("spec") or dict(old_raw) != dict(new_raw)):
        return [f"spec: Invalid value: {_compact(new.get('spec'))}: field is immutable"]
    if what in (("apps", "daemonsets"), ("apps", "deployments")):
        before, after = _at(old, ("spec", "selector")), _at(new, ("spec", "selector"))
        if before != after:
            return [f"spec.selector: Invalid value: {_compact(after)}: field is immutable"]
    if what == ("", "pods") and _pod_spec_core(old.get("spec")) != _pod_spec_core(new.get("spec")):
        return [
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
            "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only "
            "additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set "
            "to 1 if it was previously negative)"
        ]
    return []


def _clone(value: _T) -> _T:
    """An independent copy of a JSON value (faster than ``copy.deepcopy`` for JSON)."""
    copied: _T = json.loads(json.dumps(value))
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


_ERROR_EXPIRED = "Expired"
_PROPAGATION = ("Background", "Foreground", "Orphan")
_FOREGROUND = "foregroundDeletion"


def failure_status(code: int, reason: str, message: str) -> JsonObject:
    """A ``meta/v1 Status`` failure body as the API server writes it."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def expired_status(message: str) -> JsonObject:
    """The 410 ``Expired`` Status a watch ends with when its resourceVersion is too old."""
    return failure_status(410, _ERROR_EXPIRED, message)


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
        self._crds: dict[tuple[str, str], _Crd] = {}
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
            self._crds[(rt.group, rt.plural)] = _Crd(
                schema=schema, immutable=tuple(_transition_rules(schema))
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
            path: raw[path] if raw is not None and path in raw else _compact(value)
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
            raise _invalid(rt, new["metadata"].get("name", ""), problems)
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
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[JsonObject]:
        """LIST objects, sorted by namespace and name."""
        return self.list_versioned(
            rt, namespace, label_selector=label_selector, field_selector=field_selector
        )[0]

    def list_versioned(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[list[JsonObject], str]:
        """LIST objects and the revision the list was taken at (the list's ``resourceVersion``)."""
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, rt)
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
                    raise _invalid(
                        rt, "", ["metadata.name: Required value: name or generateName is required"]
                    )
                meta["name"] = self._generated(rt, meta["generateName"], namespace)
            problems = meta_problems(rt, meta)
            if problems:
                raise _invalid(rt, meta["name"], problems)
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
                raise _invalid(
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
        problems += _builtin_update_problems(rt, current, obj, self._raw.get(key, {}), raw_texts)
        crd = self._crds.get((rt.group, rt.plural))
        for path, message in crd.immutable if crd else ():
            if _at(current, path) != _at(obj, path):
                problems.append(f'{".".join(path)}: Invalid value: "object": {message}')
        if problems:
            raise _invalid(rt, cur_meta["name"], problems)
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
            patched = _apply_patch(patch_type, current, patch)
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
                raise _invalid(
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
        """WATCH: a stream of events as the apiserver sends them, starting at the call.

        ``resource_version`` "" or "0" starts with an ADDED event per existing object; a revision N
        yields every change after N, or one ERROR event with a 410 Expired Status if the history no
        longer reaches back to N. An object that stops (starts) matching the selectors is a DELETED
        (ADDED) event. The stream ends after ``timeout_s`` seconds (with a BOOKMARK when
        ``allow_bookmarks``, which also sends one every :attr:`bookmark_interval`) or on ``close()``.

        Raises:
            KubeApiError: 400 for a malformed selector or resourceVersion.
        """
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, rt)
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
        return _StoreWatch(
            self,
            rt,
            selected,
            position=position,
            initial=initial,
            timeout_s=timeout_s,
            allow_bookmarks=allow_bookmarks,
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


def _apply_patch(patch_type: str, current: JsonObject, patch: Any) -> JsonObject:
    if patch_type in ("merge", "strategic") and not isinstance(patch, dict):
        raise KubeApiError(f"a {patch_type} merge patch must be a JSON object", status=400)
    if patch_type == "merge":
        patched = merge_patch(current, patch)
    elif patch_type == "json":
        patched = json_patch(current, patch)
    elif patch_type == "strategic":
        patched = strategic_merge_patch(current, patch)
    else:
        raise KubeApiError(f"patch type {patch_type!r}: not merge, json or strategic", status=415)
    if not isinstance(patched, dict):
        raise KubeApiError("the patched object is not a JSON object", status=422)
    return patched


def _type_of(key: _Key, obj: JsonObject) -> ResourceType:
    """The resource type of a stored object (for deletes the store starts itself)."""
    version = str(obj.get("apiVersion", "v1")).rsplit("/", 1)[-1]
    return ResourceType(
        group=key[0], version=version, plural=key[1], kind=str(obj.get("kind", "")), namespaced=bool(key[2])
    )


class _StoreWatch:
    """An open in-memory watch (see :meth:`ObjectStore.watch_objects`); ``close()`` from any thread."""

    def __init__(
        self,
        store: ObjectStore,
        rt: ResourceType,
        selected: Callable[[JsonObject | None], bool],
        *,
        position: int,
        initial: list[WatchEvent],
        timeout_s: float,
        allow_bookmarks: bool,
    ) -> None:
        self._store, self._rt, self._selected = store, rt, selected
        self._position, self._initial = position, initial
        self._deadline = time.monotonic() + timeout_s
        self._bookmarks = allow_bookmarks
        self._closed = threading.Event()

    def close(self) -> None:
        """End the iteration (wakes a waiting iterator); idempotent."""
        self._closed.set()
        with self._store._changed:
            self._store._changed.notify_all()

    def _bookmark(self) -> WatchEvent:
        meta = {"resourceVersion": str(self._position)}
        return WatchEvent(
            type="BOOKMARK",
            object={"kind": self._rt.kind, "apiVersion": self._rt.api_version, "metadata": meta},
        )

    def _next(self, next_bookmark: float) -> list[WatchEvent]:
        """Events after the position, waiting up to a quarter second for some."""
        store = self._store
        with store._changed:
            if self._position < store._compacted:
                return [store._expired(self._position)]
            pending, self._position = store._events_after(self._rt, self._position, self._selected)
            if not pending and not self._closed.is_set():
                now = time.monotonic()
                store._changed.wait(max(0.0, min(0.25, next_bookmark - now, self._deadline - now)))
                pending, self._position = store._events_after(self._rt, self._position, self._selected)
            return pending

    def __iter__(self) -> Iterator[WatchEvent]:
        yield from self._initial
        if self._initial and self._initial[-1].type == "ERROR":
            return
        interval = self._store.bookmark_interval
        next_bookmark = time.monotonic() + interval
        while not self._closed.is_set():
            if time.monotonic() >= self._deadline:
                if self._bookmarks:
                    yield self._bookmark()
                return
            pending = self._next(next_bookmark)
            yield from pending
            if pending and pending[-1].type == "ERROR":
                return
            if self._bookmarks and time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + interval
                yield self._bookmark()
