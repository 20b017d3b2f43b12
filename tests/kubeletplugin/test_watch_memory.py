"""The in-memory watch of ObjectStore/FakeKube: the protocol an informer relies on."""

from __future__ import annotations

import threading

from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.objects import NODES, PODS, WatchEvent


def _collect(stream: object, n: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    for event in stream:  # type: ignore[attr-defined]
        out.append(event)
        if len(out) == n:
            break
    return out


def test_list_then_watch_misses_nothing_and_follows_selector() -> None:
    kube = FakeKube()
    kube.add_node("a", labels={"x": "1"})
    items, rv = kube.list_versioned(NODES, label_selector="x")
    assert [i["metadata"]["name"] for i in items] == ["a"]
    stream = kube.watch_objects(NODES, label_selector="x", resource_version=rv, timeout_s=5)
    kube.add_node("b", labels={"x": "2"})
    kube.patch_object(NODES, "a", {"metadata": {"labels": {"x": None}}})  # leaves the selection
    kube.add_node("c")  # never in it
    kube.delete_object(NODES, "b")
    events = _collect(stream, 3)
    stream.close()
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("DELETED", "a"),
        ("DELETED", "b"),
    ]
    rvs = [int(e.object["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


def test_watch_without_version_sends_current_objects_first_and_field_selector() -> None:
    kube = FakeKube()
    kube.add_node("a")
    kube.add_node("b")
    stream = kube.watch_objects(NODES, field_selector="metadata.name=b", timeout_s=5)
    kube.patch_object(NODES, "b", {"metadata": {"labels": {"y": "1"}}})
    events = _collect(stream, 2)
    stream.close()
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "b"), ("MODIFIED", "b")]


def test_too_old_version_is_410_and_delete_with_finalizer_is_modified() -> None:
    kube = FakeKube()
    kube.create_object(PODS, {"metadata": {"name": "p", "namespace": "ns", "finalizers": ["f"]}})
    _, rv = kube.list_versioned(PODS, "ns")
    kube.delete_object(PODS, "p", "ns")
    events = _collect(kube.watch_objects(PODS, "ns", resource_version=rv, timeout_s=5), 1)
    assert events[0].type == "MODIFIED" and events[0].object["metadata"]["deletionTimestamp"]
    kube.objects.compact()
    gone = list(kube.watch_objects(PODS, "ns", resource_version=rv, timeout_s=5))
    assert [(e.type, e.object["code"]) for e in gone] == [("ERROR", 410)]


def test_close_ends_a_waiting_watch_and_timeout_ends_it() -> None:
    kube = FakeKube()
    stream = kube.watch_objects(NODES, resource_version="0", timeout_s=30)
    done = threading.Event()

    def drain() -> None:
        list(stream)
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    stream.close()
    assert done.wait(5)
    assert list(kube.watch_objects(NODES, timeout_s=0.05, allow_bookmarks=False)) == []
