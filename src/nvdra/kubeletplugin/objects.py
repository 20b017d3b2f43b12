"""Generic Kubernetes objects: resource types, the ``ObjectApi`` protocol, watch events, Status bodies.

Drivers need more of the API than the toolkit's own ``KubeApi`` (MPS daemons are Deployments, the
ComputeDomain side works with its CRDs, DaemonSets, ResourceClaimTemplates, Node labels, Leases).
:class:`ObjectApi` covers them with raw JSON and the API server's semantics; the ``kubernetes``-client
adapter, :class:`~nvdra.kubeletplugin.FakeKube` and the test :class:`~nvdra.kubeletplugin.ApiServer`
implement it; :mod:`nvdra.kubeletplugin.store` is the strict in-process implementation
(:class:`~nvdra.kubeletplugin.store.objectstore.ObjectStore`, patches, selectors, validation).
"""

from __future__ import annotations

__all__ = [
    "BUILTIN_TYPES",
    "DAEMON_SETS",
    "DEPLOYMENTS",
    "DEVICE_CLASSES",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "PATCH_CONTENT_TYPES",
    "PODS",
    "RESOURCE_CLAIMS",
    "RESOURCE_CLAIM_TEMPLATES",
    "RESOURCE_SLICES",
    "JsonObject",
    "ObjectApi",
    "Query",
    "ResourceType",
    "Selectors",
    "WatchEvent",
    "WatchOptions",
    "WatchStream",
    "expired_status",
    "failure_status",
]

from collections.abc import Iterator
from typing import Protocol, TypedDict, Unpack

import attrs

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.types import JsonObject

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

    @classmethod
    def of(
        cls, api_version: str, kind: str, *, namespaced: bool = True, status_subresource: bool = True
    ) -> ResourceType:
        """The type of ``kind`` at ``api_version`` (``v1``, ``<group>/<version>``).

        Its plural is the one the apiserver guesses for a kind: lower case, then ``es`` after a final
        ``s``, ``ies`` for a final ``y``, else ``s`` (``DeviceClass`` → ``deviceclasses``).
        """
        group, _, version = api_version.rpartition("/")
        lower = kind.lower()
        if lower.endswith("s"):
            plural = lower + "es"
        elif lower.endswith("y"):
            plural = lower[:-1] + "ies"
        else:
            plural = lower + "s"
        return cls(
            group=group,
            version=version,
            plural=plural,
            kind=kind,
            namespaced=namespaced,
            status_subresource=status_subresource,
        )

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


_RESOURCE = "resource.k8s.io/v1"
NODES = ResourceType.of("v1", "Node", namespaced=False)
NAMESPACES = ResourceType.of("v1", "Namespace", namespaced=False)
PODS = ResourceType.of("v1", "Pod")
DEPLOYMENTS = ResourceType.of("apps/v1", "Deployment")
DAEMON_SETS = ResourceType.of("apps/v1", "DaemonSet")
LEASES = ResourceType.of("coordination.k8s.io/v1", "Lease", status_subresource=False)
RESOURCE_CLAIMS = ResourceType.of(_RESOURCE, "ResourceClaim")
DEVICE_CLASSES = ResourceType.of(_RESOURCE, "DeviceClass", namespaced=False, status_subresource=False)
RESOURCE_CLAIM_TEMPLATES = ResourceType.of(_RESOURCE, "ResourceClaimTemplate", status_subresource=False)
RESOURCE_SLICES = ResourceType.of(_RESOURCE, "ResourceSlice", namespaced=False, status_subresource=False)
BUILTIN_TYPES: tuple[ResourceType, ...] = (
    NODES,
    NAMESPACES,
    PODS,
    DEPLOYMENTS,
    DAEMON_SETS,
    LEASES,
    RESOURCE_CLAIMS,
    RESOURCE_CLAIM_TEMPLATES,
    DEVICE_CLASSES,
    RESOURCE_SLICES,
)
"""The resource types every test :class:`~nvdra.kubeletplugin.ApiServer` serves (``register`` adds more)."""


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


class Selectors(TypedDict, total=False):
    """What a LIST or WATCH selects, as keyword arguments (missing or ``""``: everything)."""

    label_selector: str
    field_selector: str


class WatchOptions(Selectors, total=False):
    """A WATCH's keyword arguments: the selectors, where it starts, when the server ends it, bookmarks."""

    resource_version: str
    timeout_s: float
    allow_bookmarks: bool


@attrs.frozen(kw_only=True)
class Query:
    """A LIST's or WATCH's keyword arguments (:class:`WatchOptions`) with the defaults filled in.

    ``resource_version`` ``""`` starts a watch with an ADDED event for every current object; the server
    ends a watch after ``timeout_s``; ``allow_bookmarks`` asks for BOOKMARK events.
    """

    label_selector: str = ""
    field_selector: str = ""
    resource_version: str = ""
    timeout_s: float = 300.0
    allow_bookmarks: bool = True

    def params(self) -> dict[str, str]:
        """The URL query parameters of the set selectors and resourceVersion, as the apiserver names them."""
        named = (
            ("labelSelector", self.label_selector),
            ("fieldSelector", self.field_selector),
            ("resourceVersion", self.resource_version),
        )
        return {key: value for key, value in named if value}


class ObjectApi(Protocol):
    """Generic object access, raw JSON. Errors: KubeNotFound (404), KubeConflict (409), KubeApiError."""

    def get_object(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """GET one object."""
        ...

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> list[JsonObject]:
        """LIST objects (all namespaces when ``namespace`` is None), optionally label-/field-selected."""
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
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> tuple[list[JsonObject], str]:
        """LIST, with the list's ``metadata.resourceVersion`` (where a watch of the same query resumes)."""
        ...

    def watch_objects(
        self, rt: ResourceType, namespace: str | None = None, **options: Unpack[WatchOptions]
    ) -> WatchStream:
        """WATCH changes after ``resource_version`` (defaults and meaning: :class:`Query`).

        A too old version yields one ERROR event (410).
        """
        ...


PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
"""A PATCH's ``patch_type`` → the Content-Type that names it on the wire."""

_ERROR_EXPIRED = "Expired"


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
