"""The test API server answers ``kubectl get``'s Table requests: the printers' columns per kind, the
CRDs' printer columns, ``includeObject``, watch events as Tables, plain JSON when that comes first."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.fake import FakeKube
from nvdra.kubeletplugin.objects import PODS, RESOURCE_CLAIMS, RESOURCE_SLICES
from nvdra.kubeletplugin.testing_apiserver import ApiServer
from nvdra.kubeletplugin.testing_tables import human_age, table_version, to_table
from tests.kubeletplugin.wire import chart_crds

KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
    "application/json"
)


@pytest.fixture
def server() -> Iterator[ApiServer]:
    kube = FakeKube()
    kube.add_node("node-a")
    kube.objects.put(
        RESOURCE_CLAIMS,
        {"metadata": {"name": "waiting", "namespace": "default"}, "spec": {"devices": {"requests": []}}},
    )
    kube.objects.put(
        RESOURCE_CLAIMS,
        {
            "metadata": {"name": "held", "namespace": "default"},
            "spec": {"devices": {"requests": []}},
            "status": {
                "allocation": {"devices": {"results": []}},
                "reservedFor": [{"resource": "pods", "name": "p", "uid": "u1"}],
            },
        },
    )
    kube.objects.put(
        PODS,
        {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "ubuntu"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.7",
                "containerStatuses": [
                    {"name": "c", "ready": True, "restartCount": 2, "state": {"running": {}}}
                ],
            },
        },
    )
    with ApiServer(kube) as srv:
        yield srv


def get(server: ApiServer, path: str, accept: str = KUBECTL_ACCEPT) -> tuple[int, Any]:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def columns(table: dict[str, Any]) -> list[tuple[str, int]]:
    return [(c["name"], c["priority"]) for c in table["columnDefinitions"]]


def test_claims_table_says_their_state(server: ApiServer) -> None:
    status, table = get(server, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims")
    assert status == 200 and table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert columns(table) == [("Name", 0), ("State", 0), ("Age", 0)]
    cells = sorted(r["cells"][:2] for r in table["rows"])
    assert cells == [["held", "allocated,reserved"], ["waiting", "pending"]]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["rows"][0]["object"]["metadata"]["namespace"] == "default"
    assert table["metadata"]["resourceVersion"]


def test_slices_table_names_node_driver_pool(server: ApiServer) -> None:
    server.store.objects.put(
        RESOURCE_SLICES,
        {
            "metadata": {"name": "s1"},
            "spec": {
                "driver": "gpu.nvidia.com",
                "nodeName": "node-a",
                "pool": {"name": "node-a", "generation": 1, "resourceSliceCount": 1},
                "devices": [],
            },
        },
    )
    for version in ("v1", "v1beta1"):
        status, table = get(server, f"/apis/resource.k8s.io/{version}/resourceslices")
        assert status == 200, table
        assert columns(table) == [("Name", 0), ("Node", 0), ("Driver", 0), ("Pool", 0), ("Age", 0)]
        assert table["rows"][0]["cells"][:4] == ["s1", "node-a", "gpu.nvidia.com", "node-a"]


def test_pod_table_and_its_wide_columns(server: ApiServer) -> None:
    status, table = get(server, "/api/v1/namespaces/default/pods/p")  # one object: a one-row Table
    assert status == 200
    assert columns(table)[5:] == [("IP", 1), ("Node", 1), ("Nominated Node", 1), ("Readiness Gates", 1)]
    name, ready, phase, restarts, _age, ip, node, nominated, gates = table["rows"][0]["cells"]
    assert (name, ready, phase, restarts) == ("p", "1/1", "Running", "2")
    assert (ip, node, nominated, gates) == ("10.0.0.7", "node-a", "<none>", "<none>")


def test_other_kinds_get_name_and_age(server: ApiServer) -> None:
    status, table = get(server, "/apis/resource.k8s.io/v1/deviceclasses")
    assert status == 200 and columns(table) == [("Name", 0), ("Age", 0)] and table["rows"] == []
    status, table = get(server, "/api/v1/nodes")
    assert [r["cells"][:3] for r in table["rows"]] == [["node-a", "Unknown", "<none>"]]


def test_crd_printer_columns(server: ApiServer) -> None:
    types = {rt.plural: rt for rt in map(server.install_crd, chart_crds())}
    server.store.objects.put(
        types["computedomains"],
        {"metadata": {"name": "cd", "namespace": "default"}, "spec": {"numNodes": 2, "channel": {}}},
    )
    status, table = get(server, "/apis/resource.nvidia.com/v1beta1/namespaces/default/computedomains")
    assert status == 200, table
    assert [(c["name"], c["type"]) for c in table["columnDefinitions"]] == [
        ("Name", "string"),
        ("Status", "string"),
        ("Nodes", "integer"),
        ("Age", "date"),
    ]
    name, state, nodes, age = table["rows"][0]["cells"]
    assert (name, state, nodes) == ("cd", None, 2) and age.endswith("s")


def test_include_object_and_plain_json_first(server: ApiServer) -> None:
    path = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/held"
    status, table = get(server, path + "?includeObject=Object")
    assert status == 200 and table["rows"][0]["object"]["status"]["reservedFor"][0]["name"] == "p"
    assert table["rows"][0]["object"]["kind"] == "ResourceClaim"
    status, table = get(server, path + "?includeObject=None")
    assert "object" not in table["rows"][0]
    status, body = get(server, path + "?includeObject=All")
    assert status == 400 and 'includeObject: Unsupported value: "All"' in body["message"]
    status, body = get(server, path, accept="application/json, application/json;as=Table;v=v1;g=meta.k8s.io")
    assert status == 200 and body["kind"] == "ResourceClaim"
    status, body = get(server, path, accept="application/json;as=Table;v=v1beta1;g=meta.k8s.io")
    assert body["apiVersion"] == "meta.k8s.io/v1beta1"
    status, body = get(server, "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/nope")
    assert status == 404 and body["kind"] == "Status"


def test_watch_sends_tables(server: ApiServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "GET", "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1", headers={"Accept": KUBECTL_ACCEPT}
    )
    answer = conn.getresponse()
    server.store.objects.put(
        PODS, {"metadata": {"name": "q", "namespace": "default"}, "spec": {"containers": [{"name": "c"}]}}
    )
    events = [json.loads(line) for line in answer.read().splitlines() if line.strip()]
    conn.close()
    tables = [e["object"] for e in events if e["type"] == "ADDED"]
    assert [t["kind"] for t in tables] == ["Table"] * len(tables) and len(tables) == 2
    assert len(tables[0]["columnDefinitions"]) == 9 and tables[1]["columnDefinitions"] == []
    assert sorted(t["rows"][0]["cells"][0] for t in tables) == ["p", "q"]


def test_accept_header_parsing() -> None:
    assert table_version(KUBECTL_ACCEPT) == "v1"
    assert table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "v1beta1"
    assert table_version("application/json;as=Table;v=v2;g=meta.k8s.io,application/json") is None
    assert table_version(None) is None
    assert table_version("application/vnd.kubernetes.protobuf,application/json") is None


@pytest.mark.parametrize(
    ("seconds", "age"),
    [(5, "5s"), (119, "119s"), (190, "3m10s"), (600, "10m"), (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"),
     (3 * 86400 + 3600, "3d1h"), (20 * 86400, "20d"), (800 * 86400, "2y70d"), (-5, "<invalid>")],
)  # fmt: skip
def test_ages_read_as_the_apiserver_writes_them(seconds: int, age: str) -> None:
    assert human_age(seconds) == age


def test_claim_being_deleted_and_pod_states() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    created = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    claim = {
        "kind": "ResourceClaim",
        "metadata": {"name": "c", "creationTimestamp": created, "deletionTimestamp": created},
        "status": {"allocation": {}},
    }
    assert to_table(claim, now=now)["rows"][0]["cells"] == ["c", "deleted,allocated", "5m"]
    init = {
        "kind": "Pod",
        "metadata": {"name": "i"},
        "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "c"}]},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {"state": {"terminated": {"exitCode": 0}}},
                {"state": {"waiting": {"reason": "ImagePullBackOff"}}},
            ],
        },
    }
    assert to_table(init, now=now)["rows"][0]["cells"][:3] == ["i", "0/1", "Init:ImagePullBackOff"]
    crashed = {
        "kind": "Pod",
        "metadata": {"name": "r"},
        "spec": {"containers": [{"name": "c"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": created}},
                }
            ],
        },
    }
    assert to_table(crashed, now=now)["rows"][0]["cells"][1:4] == ["0/1", "CrashLoopBackOff", "3 (5m ago)"]
    with pytest.raises(KubeApiError, match="includeObject"):
        to_table(claim, include_object="Everything")
