"""A list+watch informer over :class:`~nvdra.kubeletplugin.objects.ObjectApi`: a local cache kept current.

One :class:`Informer` mirrors one query (resource type, namespace, label and field selector) the way
client-go's reflector does, so a controller reacts to changes instead of listing every second:

- **list, then watch from the list's resourceVersion** (with bookmarks, so an idle watch still
  advances its version); a watch the server ends (its ``timeoutSeconds``) is reopened from the last
  version seen, without a list;
- **410 Gone** (the version left the server's history) → list again; the cache is replaced and the
  difference is delivered as add/update/delete events, so nothing is missed or duplicated;
- **errors** (connection refused, 5xx, 403, a garbled stream) → bounded exponential back-off with
  jitter (:class:`Backoff`), then list and watch again;
- **periodic resync**: every ``resync_s`` each cached object is delivered again as an update
  (old is new), so a handler whose earlier work failed gets another chance without any request;
- **one thread**, handlers run on it in event order, outside the cache lock; a handler error is
  logged and does not stop the informer.

The cache is keyed ``namespace/name`` (``name`` for cluster-scoped types). :meth:`Informer.apply` lets
a writer put what the server answered into the cache at once (newer resourceVersion wins), so its next
decision does not act on the state before its own write (the watch event follows and is idempotent).
"""

from __future__ import annotations

__all__ = ["Backoff", "EventHandler", "Informer", "InformerStats", "object_key"]

import logging
import random
import threading
import time
from collections.abc import Callable

import attrs

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.objects import ObjectApi, ResourceType, WatchEvent, WatchStream
from nvdra.kubeletplugin.store.selectors import match_labels
from nvdra.kubeletplugin.types import JsonObject

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Backoff:
    """Exponential back-off with jitter: ``initial_s * factor**(n-1)``, capped, times ``1..1+jitter``."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry)."""
        base = min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))
        return base * (1.0 + self.jitter * (rng or random).random())


@attrs.frozen(kw_only=True)
class EventHandler:
    """Callbacks of one consumer; each optional. ``on_update`` gets ``(old, new)``."""

    on_add: Callable[[JsonObject], None] | None = None
    on_update: Callable[[JsonObject, JsonObject], None] | None = None
    on_delete: Callable[[JsonObject], None] | None = None


@attrs.define
class InformerStats:
    """What the informer did (requests it made, events it took)."""

    lists: int = 0
    watches: int = 0
    relists_gone: int = 0
    errors: int = 0
    events: int = 0
    resyncs: int = 0


def object_key(obj: JsonObject) -> str:
    """``namespace/name``, or ``name`` for an object without a namespace."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


def _version(obj: JsonObject) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        return None


def _backoff_or_default(backoff: Backoff | None) -> Backoff:
    return backoff or Backoff()


@attrs.define(eq=False, repr=False)
class Informer:
    """Keeps a local cache of one query current by list+watch (see the module docstring).

    Built as ``Informer(api, rt, *, namespace=..., ...)``: ``api`` is where to list and watch, ``rt`` the
    resource type; the keyword fields:

    Attributes:
        namespace: one namespace, or None for all (cluster-scoped types ignore it).
        label_selector: server-side label selection (``a=b,c``).
        field_selector: server-side field selection (``metadata.name=x``).
        resync_s: how often every cached object is re-delivered as an update (0: never).
        watch_timeout_s: how long one watch request lasts before it is reopened (server side).
        backoff: retry delays after errors.
        name: for log lines (default: the plural and selectors).
    """

    _api: ObjectApi
    rt: ResourceType
    namespace: str | None = attrs.field(default=None, kw_only=True)
    label_selector: str = attrs.field(default="", kw_only=True)
    field_selector: str = attrs.field(default="", kw_only=True)
    resync_s: float = attrs.field(default=300.0, kw_only=True)
    watch_timeout_s: float = attrs.field(default=300.0, kw_only=True)
    backoff: Backoff = attrs.field(default=None, converter=_backoff_or_default, kw_only=True)
    name: str = attrs.field(default="", kw_only=True)
    stats: InformerStats = attrs.field(init=False, factory=InformerStats)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _cache: dict[str, JsonObject] = attrs.field(init=False, factory=dict)
    _deleted: dict[str, int] = attrs.field(init=False, factory=dict)  # key -> version it was deleted at
    _handlers: list[EventHandler] = attrs.field(init=False, factory=list)
    _synced: threading.Event = attrs.field(init=False, factory=threading.Event)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event)
    _stream: WatchStream | None = attrs.field(init=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    _rng: random.Random = attrs.field(init=False, factory=random.Random)
    _version: str = attrs.field(init=False, default="")

    def __attrs_post_init__(self) -> None:
        selection = (self.rt.plural, self.namespace or "", self.label_selector, self.field_selector)
        self.name = self.name or " ".join(p for p in selection if p)

    # --- consumer side -----------------------------------------------------------------------------

    def add_handler(
        self,
        on_add: Callable[[JsonObject], None] | None = None,
        on_update: Callable[[JsonObject, JsonObject], None] | None = None,
        on_delete: Callable[[JsonObject], None] | None = None,
    ) -> None:
        """Register callbacks (before :meth:`start`: later ones miss the initial adds)."""
        self._handlers.append(EventHandler(on_add=on_add, on_update=on_update, on_delete=on_delete))

    def list(self) -> list[JsonObject]:
        """The cached objects, sorted by key (the dicts are the cache's: do not modify them)."""
        with self._lock:
            return [self._cache[k] for k in sorted(self._cache)]

    def get(self, name: str, namespace: str | None = None) -> JsonObject | None:
        """One cached object, or None."""
        key = f"{namespace}/{name}" if namespace and self.rt.namespaced else name
        with self._lock:
            return self._cache.get(key)

    @property
    def synced(self) -> bool:
        """Whether the first list has been taken into the cache."""
        return self._synced.is_set()

    @property
    def resource_version(self) -> str:
        """The last resourceVersion the informer saw (list, event or bookmark)."""
        return self._version

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first list; whether it arrived within ``timeout``."""
        return self._synced.wait(timeout)

    def apply(self, obj: JsonObject) -> None:
        """Take an object a write returned into the cache now (no handler runs), unless the cache
        already holds a newer version or saw the object deleted at a newer version.

        An object outside this informer's namespace or label selection is ignored, and with a field
        selector only objects already cached are updated (the watch event follows in any case).
        """
        key = object_key(obj)
        meta = obj.get("metadata") or {}
        if self.namespace is not None and self.rt.namespaced and meta.get("namespace") != self.namespace:
            return
        if not match_labels(meta.get("labels") or {}, self.label_selector):
            return
        new_v = _version(obj)
        with self._lock:
            old = self._cache.get(key)
            if old is None and (self.field_selector or not self._synced.is_set()):
                return
            seen = _version(old) if old is not None else self._deleted.get(key)
            if new_v is not None and seen is not None and new_v <= seen:
                return
            self._cache[key] = obj

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Informer:
        """Start the list+watch thread. Returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (an open watch is closed at once)."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        need_list = True
        next_resync = time.monotonic() + self.resync_s
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                need_list = self._watch_once(next_resync)
                failures = 0
            except Exception as exc:  # any error: a dead informer thread would leave the process deaf
                failures += 1
                self.stats.errors += 1
                # As client-go's reflector: after a failed watch, list again (a server that cannot
                # watch this query still gets the cache refreshed, at the back-off's pace).
                need_list = True
                delay = self.backoff.delay(failures, self._rng)
                # One stable line per cause (the repeat filter folds repeats); the delay varies. An
                # error that is not the API's (a client library's, or a handler's bug) keeps its
                # traceback, and the informer goes on: it once died of urllib3's RuntimeError on a
                # watch the server ended, and the GPU plugin stopped following its Node for good.
                log.warning(
                    "informer %s: %s; listing and watching again after a back-off",
                    self.name,
                    exc,
                    exc_info=not isinstance(exc, KubeApiError),
                )
                log.debug("informer %s: retry %d in %.2f s", self.name, failures, delay)
                self._stop.wait(delay)
            if self.resync_s > 0 and time.monotonic() >= next_resync and not self._stop.is_set():
                self._resync()
                next_resync = time.monotonic() + self.resync_s

    def _relist(self) -> None:
        items, version = self._api.list_versioned(
            self.rt, self.namespace, label_selector=self.label_selector, field_selector=self.field_selector
        )
        self.stats.lists += 1
        fresh = {object_key(o): o for o in items}
        with self._lock:
            old = self._cache
            self._cache = fresh
            self._deleted.clear()
            self._version = version
        for key, obj in sorted(fresh.items()):
            if key not in old:
                self._dispatch("ADDED", obj, None)
            elif _version(old[key]) != _version(obj):
                self._dispatch("MODIFIED", obj, old[key])
        for key, obj in sorted(old.items()):
            if key not in fresh:
                self._dispatch("DELETED", obj, None)
        self._synced.set()

    def _watch_once(self, next_resync: float) -> bool:
        """One watch request, consumed to its end; True when the informer must list again (410)."""
        timeout = self.watch_timeout_s
        if self.resync_s > 0:
            timeout = max(1.0, min(timeout, next_resync - time.monotonic()))
        stream = self._api.watch_objects(
            self.rt,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            resource_version=self._version,
            timeout_s=timeout,
            allow_bookmarks=True,
        )
        self.stats.watches += 1
        self._stream = stream
        opened, events = time.monotonic(), 0
        try:
            if self._stop.is_set():
                return False
            for event in stream:
                events += 1
                if self._take(event):
                    self.stats.relists_gone += 1
                    return True
                if self._stop.is_set():
                    break
        finally:
            self._stream = None
            stream.close()
        if not events and not self._stop.is_set() and time.monotonic() - opened < min(1.0, timeout):
            # A watch the server ends at once, empty, would otherwise be reopened in a tight loop.
            raise KubeApiError(f"watch {self.name}: the server ended it at once, without an event", status=0)
        return False

    def _take(self, event: WatchEvent) -> bool:
        """Apply one event to the cache and the handlers; True for a 410 ERROR."""
        kind, obj = event.type, event.object
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            if code == 410:
                log.info("informer %s: %s; listing again", self.name, obj.get("message", "resource expired"))
                return True
            raise KubeApiError(f"watch {self.name}: {obj.get('message', obj)}", status=code)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if version:
            self._version = version
        if kind == "BOOKMARK":
            return False
        self.stats.events += 1
        key = object_key(obj)
        with self._lock:
            old = self._cache.get(key)
            if kind == "DELETED":
                self._cache.pop(key, None)
                if len(self._deleted) > 10_000:
                    self._deleted.clear()
                self._deleted[key] = _version(obj) or 0
            else:
                self._cache[key] = obj
        if kind == "DELETED":
            self._dispatch("DELETED", old or obj, None)
        else:
            self._dispatch("MODIFIED" if old is not None else "ADDED", obj, old)
        return False

    def _resync(self) -> None:
        self.stats.resyncs += 1
        for obj in self.list():
            self._dispatch("MODIFIED", obj, obj)

    def _dispatch(self, kind: str, obj: JsonObject, old: JsonObject | None) -> None:
        for handler in self._handlers:
            try:
                if kind == "ADDED" and handler.on_add is not None:
                    handler.on_add(obj)
                elif kind == "MODIFIED" and handler.on_update is not None:
                    handler.on_update(old if old is not None else obj, obj)
                elif kind == "DELETED" and handler.on_delete is not None:
                    handler.on_delete(obj)
            except Exception:
                log.exception("informer %s: a %s handler failed", self.name, kind)
