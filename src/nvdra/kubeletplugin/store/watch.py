"""WATCH of the in-process store: the events after a revision as a selecting watcher sees them, and an
open watch (initial events, then changes, bookmarks and the timeout)."""

from __future__ import annotations

__all__ = ["StoreWatch", "Watching"]

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Unpack

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.objects import (
    JsonObject,
    Query,
    ResourceType,
    WatchEvent,
    WatchOptions,
    WatchStream,
    expired_status,
)
from nvdra.kubeletplugin.store.selectors import FieldSelector, LabelSelector
from nvdra.kubeletplugin.store.state import StoreState, clone


class Watching(StoreState):
    """WATCH of the store's history (a part of the :class:`~.objectstore.ObjectStore`)."""

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
                    WatchEvent(type="ADDED", object=clone(o))
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
                pending.append(WatchEvent(type=kind, object=clone(event.obj)))
        return pending, events[-1].revision if events else position


class StoreWatch:
    """An open in-memory watch (see :meth:`ObjectStore.watch_objects`); ``close()`` from any thread."""

    def __init__(
        self,
        store: Watching,
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
