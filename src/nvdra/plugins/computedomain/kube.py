"""The API surface the ComputeDomain components use: the toolkit's ``KubeApi`` plus generic objects.

``FakeKube``, the test ``ApiServer`` (through ``KubernetesKubeApi``) and the real adapter all implement
both protocols; :class:`CountingApi` wraps any of them to count writes and conflicts (benchmarks,
scale tests).
"""

from __future__ import annotations

__all__ = ["CLIQUES", "COMPUTE_DOMAINS", "KIND_TYPES", "CdKube", "CountingApi"]

import threading
from collections import Counter
from typing import Any, Protocol, Unpack

from nvdra.core.errors import KubeConflict
from nvdra.kubeletplugin.objects import ObjectApi, ResourceType, Selectors, WatchOptions, WatchStream
from nvdra.kubeletplugin.types import JsonObject, KubeApi

COMPUTE_DOMAINS = ResourceType.of("resource.nvidia.com/v1beta1", "ComputeDomain")
CLIQUES = ResourceType.of("resource.nvidia.com/v1beta1", "ComputeDomainClique", status_subresource=False)


class CdKube(KubeApi, ObjectApi, Protocol):
    """Both protocols: ResourceSlices and claims for the toolkit, generic objects for the CD logic."""


def _kind_types() -> dict[str, ResourceType]:
    from nvdra.kubeletplugin.objects import DAEMON_SETS, NODES, PODS, RESOURCE_CLAIM_TEMPLATES

    return {
        "ComputeDomain": COMPUTE_DOMAINS,
        "ComputeDomainClique": CLIQUES,
        "DaemonSet": DAEMON_SETS,
        "ResourceClaimTemplate": RESOURCE_CLAIM_TEMPLATES,
        "Node": NODES,
        "Pod": PODS,
    }


KIND_TYPES: dict[str, ResourceType] = _kind_types()
"""Kind name (as :class:`nvdra.imex.Action` names it) → resource type."""


class CountingApi:
    """Wraps a :class:`CdKube`, counting reads, writes and 409 conflicts per ``(role, verb, plural)``.

    Args:
        inner: the API to forward to.
        role: a label for the caller ("controller", "plugin", "daemon") so one store can be shared.
        counter: a shared counter (one per run), guarded by ``lock``.
    """

    def __init__(
        self, inner: Any, role: str, counter: Counter[tuple[str, str, str]], lock: threading.Lock
    ) -> None:
        self._inner = inner
        self.role = role
        self.counter = counter
        self._lock = lock

    def _count(self, verb: str, plural: str) -> None:
        with self._lock:
            self.counter[(self.role, verb, plural)] += 1

    def _write(self, verb: str, plural: str, fn: Any, *args: Any, **kw: Any) -> Any:
        self._count(verb, plural)
        try:
            return fn(*args, **kw)
        except KubeConflict:
            self._count("conflict", plural)
            raise

    def __getattr__(self, name: str) -> Any:
        # KubeApi methods the CD code does not count (slices, claims) pass straight through.
        return getattr(self._inner, name)

    def get_object(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """Counted GET."""
        self._count("get", rt.plural)
        result: JsonObject = self._inner.get_object(rt, name, namespace)
        return result

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> list[JsonObject]:
        """Counted LIST."""
        self._count("list", rt.plural)
        result: list[JsonObject] = self._inner.list_objects(rt, namespace, **selectors)
        return result

    def create_object(self, rt: ResourceType, body: JsonObject) -> JsonObject:
        """Counted CREATE."""
        result: JsonObject = self._write("create", rt.plural, self._inner.create_object, rt, body)
        return result

    def update_object(self, rt: ResourceType, body: JsonObject, *, status: bool = False) -> JsonObject:
        """Counted UPDATE."""
        verb = "update-status" if status else "update"
        result: JsonObject = self._write(verb, rt.plural, self._inner.update_object, rt, body, status=status)
        return result

    def patch_object(
        self, rt: ResourceType, name: str, patch: JsonObject, namespace: str | None = None
    ) -> JsonObject:
        """Counted PATCH."""
        result: JsonObject = self._write(
            "patch", rt.plural, self._inner.patch_object, rt, name, patch, namespace
        )
        return result

    def delete_object(
        self, rt: ResourceType, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> None:
        """Counted DELETE."""
        self._write("delete", rt.plural, self._inner.delete_object, rt, name, namespace, uid=uid)

    def list_versioned(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> tuple[list[JsonObject], str]:
        """Counted LIST (with the list's resourceVersion)."""
        self._count("list", rt.plural)
        result: tuple[list[JsonObject], str] = self._inner.list_versioned(rt, namespace, **selectors)
        return result

    def watch_objects(
        self, rt: ResourceType, namespace: str | None = None, **options: Unpack[WatchOptions]
    ) -> WatchStream:
        """Counted WATCH (one per watch request; the events it streams are not requests)."""
        self._count("watch", rt.plural)
        stream: WatchStream = self._inner.watch_objects(rt, namespace, **options)
        return stream
