"""The list+watch informer over FakeKube: cache, handlers, 410 re-list, back-off, resync, stop."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.informer import Backoff, Informer
from nvdra.kubeletplugin.logrepeat import RepeatFilter
from nvdra.kubeletplugin.objects import NODES, PODS, WatchEvent

FAST = Backoff(initial_s=0.01, max_s=0.05)


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class _Log:
    def __init__(self, informer: Informer) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        informer.add_handler(
            on_add=lambda o: self._add("add", o),
            on_update=lambda old, new: self._add("update" if old is not new else "resync", new),
            on_delete=lambda o: self._add("delete", o),
        )

    def _add(self, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((kind, obj["metadata"]["name"]))

    def snapshot(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.events)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def informers() -> Iterator[list[Informer]]:
    started: list[Informer] = []
    yield started
    for informer in started:
        informer.stop()


def test_list_then_watch_keeps_the_cache_and_calls_handlers(
    kube: FakeKube, informers: list[Informer]
) -> None:
    kube.add_node("a", labels={"sel": "1"})
    informer = Informer(kube, NODES, label_selector="sel", backoff=FAST)
    seen = _Log(informer)
    informers.append(informer.start())
    assert informer.wait_synced(5)
    kube.add_node("b", labels={"sel": "1"})
    kube.patch_object(NODES, "a", {"metadata": {"labels": {"x": "y"}}})
    kube.patch_object(NODES, "b", {"metadata": {"labels": {"sel": None}}})  # leaves the selection
    _until(lambda: len(seen.snapshot()) == 4)
    assert seen.snapshot() == [("add", "a"), ("add", "b"), ("update", "a"), ("delete", "b")]
    assert [o["metadata"]["name"] for o in informer.list()] == ["a"]
    assert informer.get("a") is not None and informer.get("a")["metadata"]["labels"]["x"] == "y"  # type: ignore[index]
    assert (informer.stats.lists, informer.stats.errors) == (1, 0)


class _ExpiringOnce:
    """FakeKube whose first watch answers 410 Gone (after the test changed things), as an apiserver
    whose history no longer reaches the informer's version."""

    def __init__(self, kube: FakeKube, before_gone: Callable[[], None]) -> None:
        self.kube = kube
        self.before_gone = before_gone
        self.watches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)

    def watch_objects(self, *args: Any, **kw: Any) -> Any:
        self.watches += 1
        if self.watches > 1:
            return self.kube.watch_objects(*args, **kw)
        self.before_gone()
        gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
        return _Listed([WatchEvent(type="ERROR", object=gone)])


class _Listed(list[WatchEvent]):
    def close(self) -> None:
        """Nothing to close."""


def test_a_too_old_version_lists_again_and_delivers_the_difference(
    kube: FakeKube, informers: list[Informer]
) -> None:
    kube.create_object(PODS, {"metadata": {"name": "gone", "namespace": "ns"}})
    kube.create_object(PODS, {"metadata": {"name": "kept", "namespace": "ns"}})

    def change() -> None:
        kube.delete_object(PODS, "gone", "ns")
        kube.create_object(PODS, {"metadata": {"name": "new", "namespace": "ns"}})

    informer = Informer(cast(Any, _ExpiringOnce(kube, change)), PODS, namespace="ns", backoff=FAST)
    seen = _Log(informer)
    informers.append(informer.start())
    _until(lambda: informer.stats.relists_gone == 1 and informer.stats.lists == 2)
    _until(lambda: len(seen.snapshot()) == 4)
    assert seen.snapshot() == [("add", "gone"), ("add", "kept"), ("add", "new"), ("delete", "gone")]
    assert [o["metadata"]["name"] for o in informer.list()] == ["kept", "new"]
    assert informer.stats.errors == 0


def test_a_failed_watch_backs_off_then_lists_again(kube: FakeKube, informers: list[Informer]) -> None:
    kube.create_object(PODS, {"metadata": {"name": "a", "namespace": "ns"}})
    kube.fail_next("watch", status=503)
    informer = Informer(kube, PODS, namespace="ns", backoff=FAST)
    informers.append(informer.start())
    _until(lambda: informer.stats.lists == 2 and informer.stats.watches == 1)
    kube.create_object(PODS, {"metadata": {"name": "b", "namespace": "ns"}})
    _until(lambda: informer.get("b", "ns") is not None)
    assert informer.stats.errors == 1


def test_errors_back_off_and_recover(kube: FakeKube, informers: list[Informer]) -> None:
    kube.add_node("a")
    kube.fail_next("list", times=3, status=503)
    informer = Informer(kube, NODES, backoff=FAST)
    informers.append(informer.start())
    assert informer.wait_synced(5)
    assert informer.stats.errors == 3 and informer.stats.lists == 1


def test_resync_redelivers_the_cache_without_requests(kube: FakeKube, informers: list[Informer]) -> None:
    kube.add_node("a")
    informer = Informer(kube, NODES, resync_s=0.2, backoff=FAST)
    seen = _Log(informer)
    informers.append(informer.start())
    _until(lambda: ("resync", "a") in seen.snapshot())
    assert informer.stats.lists == 1


def test_stop_closes_an_idle_watch_at_once(kube: FakeKube) -> None:
    informer = Informer(kube, NODES, watch_timeout_s=300).start()
    assert informer.wait_synced(5)
    _until(lambda: informer.stats.watches == 1)
    started = time.monotonic()
    informer.stop()
    assert time.monotonic() - started < 2


def test_apply_takes_a_newer_write_and_ignores_an_older_one(
    kube: FakeKube, informers: list[Informer]
) -> None:
    kube.add_node("a", labels={"sel": "1"})
    informer = Informer(kube, NODES, label_selector="sel", backoff=FAST)
    informers.append(informer.start())
    assert informer.wait_synced(5)
    written = kube.patch_object(NODES, "a", {"metadata": {"labels": {"k": "v"}}})
    informer.apply(written)
    assert informer.get("a") == written
    stale = dict(written, metadata=dict(written["metadata"], resourceVersion="1"))
    informer.apply(stale)
    assert informer.get("a") == written
    created = kube.objects.put(NODES, {"metadata": {"name": "b", "labels": {"sel": "2"}}})
    informer.apply(created)  # a create's answer is known before its watch event
    assert informer.get("b") is not None
    informer.apply(kube.objects.put(NODES, {"metadata": {"name": "c"}}))  # outside the selection
    assert informer.get("c") is None
    kube.delete_object(NODES, "b")
    _until(lambda: informer.get("b") is None)
    informer.apply(created)  # an answer older than the deletion does not bring it back
    assert informer.get("b") is None


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    backoff = Backoff(initial_s=1, factor=2, max_s=8, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(1, 7)]
    for n, d in enumerate(delays, start=1):
        base = min(8, 2 ** (n - 1))
        assert base <= d <= base * 1.5


def test_repeat_filter_logs_once_then_with_a_count() -> None:
    now = [0.0]
    repeat = RepeatFilter(60, clock=lambda: now[0])
    passed = []
    for second in range(130):
        now[0] = float(second)
        r = logging.LogRecord("c", logging.WARNING, "f", 1, "pass failed: %s", ("409",), None)
        if repeat.filter(r):
            passed.append(r.getMessage())
    assert passed == [
        "pass failed: 409",
        "pass failed: 409 (repeated 59 times in 60 s)",
        "pass failed: 409 (repeated 59 times in 60 s)",
    ]
    other = logging.LogRecord("c", logging.WARNING, "f", 1, "another line", None, None)
    assert repeat.filter(other)


class _EmptyWatches:
    """FakeKube whose watches end at once without an event (a proxy that cuts streams)."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)

    def watch_objects(self, *args: Any, **kw: Any) -> Any:
        self.kube.watch_objects(*args, **kw).close()  # logged as a watch request
        return _Listed([])


def test_a_watch_that_ends_at_once_backs_off_instead_of_spinning(
    kube: FakeKube, informers: list[Informer]
) -> None:
    informer = Informer(
        cast(Any, _EmptyWatches(kube)), NODES, backoff=Backoff(initial_s=0.2, max_s=0.2, jitter=0)
    )
    informers.append(informer.start())
    time.sleep(1.0)
    assert 2 <= informer.stats.watches <= 6 and informer.stats.errors >= 2


class _BrokenStream:
    """A watch stream whose read fails with a non-API error, as urllib3 once raised a RuntimeError
    ("Cannot shutdown as connection has already been released to the pool") out of a watch the
    server had ended normally (seen on a real 1.36 apiserver after the 5-minute watch timeout)."""

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        raise RuntimeError("Cannot shutdown as connection has already been released to the pool")

    def close(self) -> None:
        return None


class _FirstWatchBreaks:
    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.broken = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)

    def watch_objects(self, *args: Any, **kw: Any) -> Any:
        if self.broken == 0:
            self.broken += 1
            return _BrokenStream()
        return self.kube.watch_objects(*args, **kw)


def test_an_unexpected_error_in_a_watch_does_not_end_the_informer(
    kube: FakeKube, informers: list[Informer], caplog: pytest.LogCaptureFixture
) -> None:
    """The informer logs it with its traceback, backs off, lists and watches again; before, its thread
    died and the plugin never saw its Node's label change."""
    api = _FirstWatchBreaks(kube)
    informer = Informer(cast(Any, api), NODES, backoff=FAST)
    with caplog.at_level(logging.WARNING, logger="nvdra.kubeletplugin.informer"):
        informers.append(informer.start())
        _until(lambda: informer.stats.errors == 1 and informer.stats.watches >= 2)
    kube.add_node("later")
    _until(lambda: informer.get("later") is not None)
    (record,) = [r for r in caplog.records if "RuntimeError" in (r.exc_text or "") or r.exc_info]
    assert "Cannot shutdown" in record.getMessage() and record.exc_info is not None
