"""An open watch of the in-process store: initial events, then changes, bookmarks and the timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from nvdra.kubeletplugin.objects import JsonObject, ResourceType, WatchEvent

if TYPE_CHECKING:
    from nvdra.kubeletplugin.store.objectstore import ObjectStore

__all__ = ["StoreWatch"]


class StoreWatch:
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
