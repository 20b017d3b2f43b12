"""``GET …?watch=1`` on the test API server: the kube-apiserver's streaming watch protocol over HTTP."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.objects import NODES
from nvdra.kubeletplugin.store.objectstore import ObjectStore
from tests.kubeletplugin.wire import Wire


class Watch:
    """One watch request; events read line by line as the server flushes them."""

    def __init__(self, server: ApiServer, path: str) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.conn.request("GET", path)
        self.response = self.conn.getresponse()

    def events(self, n: int | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while n is None or len(out) < n:
            line = self.response.readline()
            if not line:
                break
            out.append(json.loads(line))
        return out


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(FakeKube()) as srv:
        yield srv


def test_watch_streams_chunked_json_lines_after_a_resource_version(server: ApiServer) -> None:
    server.store.add_node("a", labels={"role": "gpu"})
    listed = Wire(server)("GET", "/api/v1/nodes").body
    rv = listed["metadata"]["resourceVersion"]
    watch = Watch(server, f"/api/v1/nodes?watch=1&resourceVersion={rv}&labelSelector=role%3Dgpu")
    assert watch.response.status == 200
    assert watch.response.getheader("Transfer-Encoding") == "chunked"
    server.store.add_node("b", labels={"role": "gpu"})
    server.store.add_node("c")  # not selected
    server.store.objects.patch_object(NODES, "a", {"metadata": {"labels": {"role": None}}})  # leaves
    events = watch.events(2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > int(rv)


def test_watch_true_without_version_sends_current_objects_and_ends_at_timeout(server: ApiServer) -> None:
    server.store.add_node("a")
    server.store.add_node("b")
    started = time.monotonic()
    watch = Watch(
        server,
        "/api/v1/nodes?watch=true&fieldSelector=metadata.name%3Db&timeoutSeconds=1&allowWatchBookmarks=true",
    )
    events = watch.events()  # until the server ends the stream
    assert 0.9 < time.monotonic() - started < 5
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[0]["object"]["metadata"]["name"] == "b"
    assert events[1]["object"]["metadata"]["resourceVersion"] == str(server.store.objects.revision)


def test_a_too_old_resource_version_is_an_error_event_with_410_expired(server: ApiServer) -> None:
    node = server.store.add_node("a")
    server.store.add_node("b")
    server.store.objects.compact()
    watch = Watch(server, f"/api/v1/nodes?watch=1&resourceVersion={node['metadata']['resourceVersion']}")
    (event,) = watch.events()
    assert event["type"] == "ERROR"
    status = event["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {node['metadata']['resourceVersion']} (")


def test_history_is_bounded_as_etcd_compaction_does() -> None:
    store = ObjectStore(history=3)  # a tiny window for the test
    first = store.put(NODES, {"metadata": {"name": "a"}})
    for name in "bcde":
        store.put(NODES, {"metadata": {"name": name}})
    events = list(
        store.watch_objects(NODES, resource_version=first["metadata"]["resourceVersion"], timeout_s=1)
    )
    assert [(e.type, e.object["code"]) for e in events] == [("ERROR", 410)]


def test_namespaced_watch_and_slices_watch_by_field(server: ApiServer) -> None:
    wire = Wire(server)
    watch = Watch(server, "/apis/apps/v1/namespaces/a/daemonsets?watch=1&resourceVersion=0&timeoutSeconds=2")
    wire("POST", "/apis/apps/v1/namespaces/b/daemonsets", {"metadata": {"name": "other"}})
    wire("POST", "/apis/apps/v1/namespaces/a/daemonsets", {"metadata": {"name": "mine"}})
    events = watch.events()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "mine")]
    bad = wire("GET", "/apis/resource.k8s.io/v1/resourceslices?watch=1&fieldSelector=spec.bogus%3Dx")
    assert bad.status == 400


def test_closing_the_server_ends_open_watches() -> None:
    server = ApiServer(FakeKube()).start()
    watch = Watch(server, "/api/v1/nodes?watch=1")
    done = threading.Event()

    def drain() -> None:
        watch.events()
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    time.sleep(0.2)
    server.close()
    assert done.wait(5)
