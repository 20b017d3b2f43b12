"""The store's state, shared by its parts: objects by key, one revision (etcd's), the bounded history
of watch events, and independent copies of JSON values."""

from __future__ import annotations

__all__ = ["Admission", "Event", "Key", "StoreState", "Validator", "clone", "now"]

import bisect
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import attrs
import orjson

from nvdra.core.errors import KubeConflict, KubeNotFound
from nvdra.kubeletplugin.objects import JsonObject, ResourceType
from nvdra.kubeletplugin.store.schema import CrdRules
from nvdra.kubeletplugin.store.selectors import FieldSelector, LabelSelector

_T = TypeVar("_T")


_ORJSON_PLAIN = (
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def clone(value: _T) -> _T:
    """An independent copy of a JSON value, as a JSON round trip gives it (tuples become lists).

    orjson makes the round trip (~4x the standard library on a DynamicMIG rack's ResourceSlices);
    values it leaves to a caller's hook (str and int subclasses such as enums, datetimes, dataclasses)
    or refuses (non-string keys, integers beyond 64 bits, lone surrogates) take the standard
    library's round trip as before, which converts or raises TypeError/ValueError the same way. Unlike
    it, orjson writes NaN and infinities as null and a UUID or a plain Enum member as its value (no
    JSON client sends either).
    """
    try:
        copied: _T = orjson.loads(orjson.dumps(value, option=_ORJSON_PLAIN))
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        copied = json.loads(json.dumps(value))
    return copied


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Key = tuple[str, str, str, str]  # (group, plural, namespace, name)
Validator = Callable[[JsonObject, JsonObject | None], None]
Admission = Callable[[str, "ResourceType", JsonObject | None, JsonObject | None], None]
"""A per-kind rule: (new object, current object or None on create); raises a 422 KubeApiError."""


@attrs.frozen
class Event:
    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: JsonObject
    previous: JsonObject | None


class StoreState:
    """The store's shared state (see :class:`~nvdra.kubeletplugin.store.objectstore.ObjectStore`)."""

    def __init__(
        self,
        *,
        on_call: Callable[[str, str, str], None] | None = None,
        history: int = 10_000,
        strict_namespaces: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[Key, JsonObject] = {}
        self._by_type: dict[tuple[str, str], dict[Key, JsonObject]] = {}
        self._raw: dict[Key, dict[str, str]] = {}
        self._revision = 0
        self._events: list[Event] = []
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

    def _set(self, key: Key, obj: JsonObject) -> None:
        self._objects[key] = obj
        self._by_type.setdefault((key[0], key[1]), {})[key] = obj

    def _pop(self, key: Key) -> JsonObject | None:
        self._by_type.get((key[0], key[1]), {}).pop(key, None)
        return self._objects.pop(key, None)

    @property
    def revision(self) -> int:
        """The newest revision (etcd's): the resourceVersion of the last write."""
        with self._lock:
            return self._revision

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _record(self, kind: str, key: Key, obj: JsonObject, previous: JsonObject | None) -> None:
        self._events.append(
            Event(self._revision, kind, key, obj, previous)
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

    def _key(self, rt: ResourceType, name: str, namespace: str | None) -> Key:
        return (rt.group, rt.plural, (namespace or "default") if rt.namespaced else "", name)

    def _missing(self, rt: ResourceType, name: str) -> KubeNotFound:
        return KubeNotFound(f'{rt.qualified} "{name}" not found', status=404)

    def _conflict(self, rt: ResourceType, name: str) -> KubeConflict:
        return KubeConflict(
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            status=409,
        )

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
