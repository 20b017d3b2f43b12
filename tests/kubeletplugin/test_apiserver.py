"""The in-process API server speaks Kubernetes' REST dialect over real HTTP (raw http.client requests)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from nvdra.kubeletplugin.fake import FakeKube
from nvdra.kubeletplugin.testing_apiserver import ApiServer

DRIVER = "gpu.nvidia.com"


def v1_slice(node: str = "node-a") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"generateName": f"00000-{DRIVER}-{node}-"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "gpu-0", "attributes": {"type": {"string": "gpu"}}}],
        },
    }


class Http:
    """One keep-alive HTTP/1.1 connection to the server, JSON in and out."""

    def __init__(self, server: ApiServer, token: str | None = None) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.token = token

    def __call__(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(FakeKube()) as srv:
        yield srv


def test_discovery_lists_served_versions_in_preference_order() -> None:
    """/apis/resource.k8s.io lists exactly the configured versions, v1 preferred when served."""
    with ApiServer(FakeKube(served_versions=("v1beta1", "v1"))) as srv:
        status, group = Http(srv)("GET", "/apis/resource.k8s.io")
    assert status == 200 and group["kind"] == "APIGroup"
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
    assert group["preferredVersion"]["groupVersion"] == "resource.k8s.io/v1"


def test_version_api_and_apis_documents(server: ApiServer) -> None:
    """/version, /api and /apis answer with their Kubernetes kinds."""
    call = Http(server)
    assert call("GET", "/version")[1]["major"] == "1"
    assert call("GET", "/api")[1]["versions"] == ["v1"]
    groups = call("GET", "/apis")[1]
    assert groups["kind"] == "APIGroupList" and groups["groups"][0]["name"] == "resource.k8s.io"


def test_keep_alive_serves_many_requests_on_one_connection(server: ApiServer) -> None:
    """HTTP/1.1 keep-alive: several answers come back over the same connection."""
    call = Http(server)
    for _ in range(3):
        assert call("GET", "/version")[0] == 200
    assert call.conn.sock is not None


def test_unknown_path_and_unserved_version_are_404_status_bodies() -> None:
    """Paths and versions the server does not serve answer a 404 meta/v1 Status."""
    with ApiServer(FakeKube(served_versions=("v1beta1",))) as srv:
        call = Http(srv)
        status, body = call("GET", "/apis/resource.k8s.io/v1/resourceslices")
        assert (status, body["kind"], body["reason"], body["code"]) == (404, "Status", "NotFound", 404)
        assert call("GET", "/nope")[0] == 404
        assert call("GET", "/apis/resource.k8s.io/v1beta1/resourceslices")[0] == 200


def test_v1beta1_server_stores_v1_and_serves_basic(server: ApiServer) -> None:
    """A v1beta1 request body is stored in the v1 shape and served back with devices under basic."""
    store = FakeKube(served_versions=("v1beta1",))
    with ApiServer(store) as srv:
        call = Http(srv)
        body = v1_slice()
        body["apiVersion"] = "resource.k8s.io/v1beta1"
        body["spec"]["devices"] = [{"name": "gpu-0", "basic": {"attributes": {"type": {"string": "gpu"}}}}]
        status, created = call("POST", "/apis/resource.k8s.io/v1beta1/resourceslices", body)
        assert status == 201
        assert created["apiVersion"] == "resource.k8s.io/v1beta1"
        assert created["spec"]["devices"][0]["basic"]["attributes"]["type"] == {"string": "gpu"}
        stored = store.resource_slices()[0]
        assert stored["spec"]["devices"][0] == {"name": "gpu-0", "attributes": {"type": {"string": "gpu"}}}


def test_body_of_another_version_is_rejected(server: ApiServer) -> None:
    """A v1 body posted to a v1beta2 path is a 400, like the real server's version check."""
    status, body = Http(server)("POST", "/apis/resource.k8s.io/v1beta2/resourceslices", v1_slice())
    assert status == 400 and body["reason"] == "BadRequest"


def test_field_selector_filters_lists(server: ApiServer) -> None:
    """fieldSelector=spec.driver=...,spec.nodeName=... narrows the list; other fields are a 400."""
    call = Http(server)
    for node in ("node-a", "node-b"):
        assert call("POST", "/apis/resource.k8s.io/v1/resourceslices", v1_slice(node))[0] == 201
    selector = "spec.driver%3Dgpu.nvidia.com%2Cspec.nodeName%3Dnode-b"
    path = f"/apis/resource.k8s.io/v1/resourceslices?fieldSelector={selector}"
    status, listed = call("GET", path)
    assert status == 200 and listed["kind"] == "ResourceSliceList"
    assert [i["spec"]["nodeName"] for i in listed["items"]] == ["node-b"]
    assert call("GET", "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.foo%3Dx")[0] == 400


def test_put_get_delete_round_trip_with_conflicts(server: ApiServer) -> None:
    """PUT with a stale resourceVersion is a 409; DELETE honours the UID precondition."""
    call = Http(server)
    _, created = call("POST", "/apis/resource.k8s.io/v1/resourceslices", v1_slice())
    path = f"/apis/resource.k8s.io/v1/resourceslices/{created['metadata']['name']}"
    changed = {**created, "metadata": {**created["metadata"], "labels": {"changed": "yes"}}}
    status, updated = call("PUT", path, changed)  # a write that changes nothing would keep the version
    assert status == 200
    status, body = call("PUT", path, created)
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = call("DELETE", path, {"preconditions": {"uid": "wrong"}})
    assert status == 409
    assert call("GET", path)[1]["metadata"]["uid"] == updated["metadata"]["uid"]
    assert call("DELETE", path, {"preconditions": {"uid": updated["metadata"]["uid"]}})[0] == 200
    assert call("GET", path)[0] == 404


def test_invalid_slice_is_422_with_field_path(server: ApiServer) -> None:
    """A slice breaking a validation rule answers 422 Invalid naming the field."""
    body = v1_slice()
    body["spec"]["devices"] = [{"name": f"gpu-{i}"} for i in range(129)]
    status, answer = Http(server)("POST", "/apis/resource.k8s.io/v1/resourceslices", body)
    assert (status, answer["reason"]) == (422, "Invalid")
    assert "spec.devices" in answer["message"]


def test_injected_fault_reaches_http(server: ApiServer) -> None:
    """FakeKube.fail_next shows up on the wire as the given status (429 here)."""
    server.store.fail_next("list", status=429)
    status, body = Http(server)("GET", "/apis/resource.k8s.io/v1/resourceslices")
    assert (status, body["reason"]) == (429, "TooManyRequests")


def test_claims_and_nodes_are_served(server: ApiServer) -> None:
    """ResourceClaims (converted per version) and Nodes can be fetched."""
    server.store.add_claim(
        {
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {
                "devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}
            },
        }
    )
    server.store.add_node("node-a")
    call = Http(server)
    assert call("GET", "/api/v1/nodes/node-a")[1]["metadata"]["name"] == "node-a"
    status, claim = call("GET", "/apis/resource.k8s.io/v1beta1/namespaces/ns/resourceclaims/c")
    assert status == 200 and claim["spec"]["devices"]["requests"] == [
        {"name": "r", "deviceClassName": "gpu.nvidia.com"}
    ]
    assert call("GET", "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/missing")[0] == 404
    assert call("POST", "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c", {})[0] == 405


def test_token_is_required_when_configured() -> None:
    """With a token set, a request without the bearer header is a 401; with it, a 200."""
    with ApiServer(token="s3cret") as srv:
        assert Http(srv)("GET", "/version")[0] == 401
        assert Http(srv, token="s3cret")("GET", "/version")[0] == 200


def test_close_ends_open_keep_alive_connections() -> None:
    """After close, a connection kept alive gets no more answers."""
    srv = ApiServer().start()
    call = Http(srv)
    assert call("GET", "/version")[0] == 200
    srv.close()
    with pytest.raises((OSError, http.client.HTTPException)):
        call("GET", "/version")


def test_nagle_is_off_in_the_handler() -> None:
    """The handler disables Nagle: two-write answers must not stall on delayed ACKs."""
    from nvdra.kubeletplugin.testing_http import Handler

    assert Handler.disable_nagle_algorithm is True
    assert Handler.protocol_version == "HTTP/1.1"


def test_importing_the_test_server_does_not_load_the_kubernetes_client() -> None:
    """The server and FakeKube share the adapter's conversions without importing kubernetes."""
    code = (
        "import sys, nvdra.kubeletplugin.testing_apiserver, nvdra.kubeletplugin.publisher;"
        "print('kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
