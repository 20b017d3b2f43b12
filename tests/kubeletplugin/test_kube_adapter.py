"""KubernetesKubeApi against the in-process API server: real HTTP through the kubernetes client."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin._kube import KubernetesKubeApi
from nvdra.kubeletplugin.fake import FakeKube, KubeCall
from nvdra.kubeletplugin.ratelimit import TokenBucket
from nvdra.kubeletplugin.testing_apiserver import ApiServer

DRIVER = "gpu.nvidia.com"
CLAIM = {
    "metadata": {"name": "claim-a", "namespace": "ns"},
    "spec": {
        "devices": {
            "requests": [{"name": "gpus", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 2}}]
        }
    },
    "status": {
        "allocation": {
            "devices": {"results": [{"request": "gpus", "driver": DRIVER, "pool": "n", "device": "gpu-0"}]}
        }
    },
}


def v1_slice(node: str = "node-a") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"generateName": f"00000-{DRIVER}-{node}-"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": "gpu-0",
                    "attributes": {"type": {"string": "gpu"}},
                    "capacity": {"memory": {"value": "80Gi"}},
                }
            ],
        },
    }


def connect(server: ApiServer, tmp_path: Path, **kwargs: Any) -> KubernetesKubeApi:
    return KubernetesKubeApi.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kubeconfig")), **kwargs)


def raw_get(server: ApiServer, path: str) -> dict[str, Any]:
    """What the server sends on the wire, bypassing the adapter."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path)
    body: dict[str, Any] = json.loads(conn.getresponse().read())
    return body


@pytest.fixture(params=["v1", "v1beta2", "v1beta1"])
def served(request: pytest.FixtureRequest) -> Iterator[ApiServer]:
    """A server speaking only one resource.k8s.io version."""
    with ApiServer(FakeKube(served_versions=(request.param,))) as srv:
        yield srv


def test_discovery_prefers_v1_when_everything_is_served(tmp_path: Path) -> None:
    """With v1, v1beta2 and v1beta1 served, the adapter picks v1."""
    with ApiServer(FakeKube()) as srv:
        assert connect(srv, tmp_path).resource_api_version() == "v1"


def test_discovery_falls_back_and_callers_see_v1_shape(served: ApiServer, tmp_path: Path) -> None:
    """Whatever single version is served, slices go in and come out in the v1 shape."""
    api = connect(served, tmp_path)
    version = served.store.served_versions[0]
    assert api.resource_api_version() == version
    created = api.create_resource_slice(v1_slice())
    assert created["apiVersion"] == "resource.k8s.io/v1"
    assert created["spec"]["devices"] == v1_slice()["spec"]["devices"]
    listed = api.list_resource_slices(driver=DRIVER, node_name="node-a")
    assert [s["metadata"]["name"] for s in listed] == [created["metadata"]["name"]]
    assert listed[0]["spec"]["devices"][0]["capacity"] == {"memory": {"value": "80Gi"}}
    wire = raw_get(served, f"/apis/resource.k8s.io/{version}/resourceslices/{created['metadata']['name']}")
    assert wire["apiVersion"] == f"resource.k8s.io/{version}"
    if version == "v1beta1":
        assert "basic" in wire["spec"]["devices"][0] and wire["spec"]["nodeName"] == "node-a"
    else:
        assert "attributes" in wire["spec"]["devices"][0]


def test_update_and_delete_through_a_v1beta1_server(tmp_path: Path) -> None:
    """Updates and deletes convert too; the stored object follows."""
    store = FakeKube(served_versions=("v1beta1",))
    with ApiServer(store) as srv:
        api = connect(srv, tmp_path)
        created = api.create_resource_slice(v1_slice())
        created["spec"]["devices"].append({"name": "gpu-1"})
        updated = api.update_resource_slice(created)
        assert [d["name"] for d in updated["spec"]["devices"]] == ["gpu-0", "gpu-1"]
        assert store.resource_slices()[0]["spec"]["devices"][1] == {"name": "gpu-1"}
        api.delete_resource_slice(created["metadata"]["name"], uid=created["metadata"]["uid"])
        assert store.resource_slices() == []


def test_claim_get_converts_v1beta1_requests(tmp_path: Path) -> None:
    """A claim read from a v1beta1 server has its requests under `exactly`, status unchanged."""
    store = FakeKube(served_versions=("v1beta1",))
    store.add_claim(CLAIM)
    with ApiServer(store) as srv:
        wire = raw_get(srv, "/apis/resource.k8s.io/v1beta1/namespaces/ns/resourceclaims/claim-a")
        assert wire["spec"]["devices"]["requests"][0]["count"] == 2
        claim = connect(srv, tmp_path).get_resource_claim("ns", "claim-a")
    assert claim["spec"] == CLAIM["spec"] and claim["status"] == CLAIM["status"]
    assert claim["apiVersion"] == "resource.k8s.io/v1"


def test_node_get(tmp_path: Path) -> None:
    """get_node returns the Node with its UID and labels."""
    with ApiServer() as srv:
        srv.store.add_node("node-a", labels={"a": "b"}, uid="uid-1")
        node = connect(srv, tmp_path).get_node("node-a")
    assert node["metadata"]["uid"] == "uid-1" and node["metadata"]["labels"] == {"a": "b"}


def test_error_mapping(tmp_path: Path) -> None:
    """404 → KubeNotFound, 409 → KubeConflict, 500 → KubeUnavailable, 422 → KubeApiError; status kept."""
    with ApiServer() as srv:
        api = connect(srv, tmp_path)
        with pytest.raises(errors.KubeNotFound) as nf:
            api.get_resource_claim("ns", "missing")
        created = api.create_resource_slice(v1_slice())
        api.update_resource_slice({**created, "metadata": {**created["metadata"], "labels": {"a": "b"}}})
        with pytest.raises(errors.KubeConflict) as cf:
            api.update_resource_slice(created)
        srv.store.fail_next("list", status=500)
        with pytest.raises(errors.KubeUnavailable) as un:
            api.list_resource_slices(driver=DRIVER)
        bad = v1_slice()
        bad["spec"]["devices"] = [{"name": "Not_A_Label"}]
        with pytest.raises(errors.KubeApiError) as inv:
            api.create_resource_slice(bad)
    assert (nf.value.status, cf.value.status, un.value.status, inv.value.status) == (404, 409, 500, 422)
    assert type(inv.value) is errors.KubeApiError
    assert "not found" in str(nf.value) and "DNS label" in str(inv.value)


def test_delete_of_missing_slice_is_silent(tmp_path: Path) -> None:
    """DELETE answering 404 is not an error for the caller."""
    with ApiServer() as srv:
        connect(srv, tmp_path).delete_resource_slice("ghost")
        assert srv.store.calls()[-1] == KubeCall(verb="delete", resource="resourceslices", name="ghost")


def test_unreachable_server_is_unavailable_with_status_0(tmp_path: Path) -> None:
    """No server at the address: KubeUnavailable with status 0."""
    srv = ApiServer()
    path = srv.write_kubeconfig(tmp_path / "kubeconfig")
    srv.close()
    api = KubernetesKubeApi.from_kubeconfig(str(path), timeout=(1.0, 1.0))
    with pytest.raises(errors.KubeUnavailable) as info:
        api.resource_api_version()
    assert info.value.status == 0


def test_bearer_token_from_kubeconfig_is_sent(tmp_path: Path) -> None:
    """The kubeconfig's token reaches the server (a server requiring it answers)."""
    with ApiServer(token="abc") as srv:
        assert connect(srv, tmp_path).resource_api_version() == "v1"


def test_bad_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    """A missing kubeconfig file is reported as a ConfigError naming --kubeconfig."""
    with pytest.raises(errors.ConfigError, match="--kubeconfig"):
        KubernetesKubeApi.from_kubeconfig(str(tmp_path / "missing"))


class FakeTime:
    """A clock that moves only when slept on; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_limiter_counts_background_calls_only(tmp_path: Path) -> None:
    """Slice calls take tokens and wait once the burst is spent; claim and node GETs never touch it."""
    fake = FakeTime()
    limiter = TokenBucket(1.0, 2, clock=fake.clock, sleep=fake.sleep)
    with ApiServer() as srv:
        srv.store.add_claim(CLAIM)
        srv.store.add_node("node-a")
        api = connect(srv, tmp_path, limiter=limiter)
        for _ in range(3):
            api.list_resource_slices(driver=DRIVER)
        assert limiter.statistics().acquired == 3 and len(fake.sleeps) == 1
        for _ in range(10):
            api.get_resource_claim("ns", "claim-a")
        api.get_node("node-a")
    assert limiter.statistics().acquired == 3 and len(fake.sleeps) == 1


def test_claim_get_overtakes_a_background_call_waiting_on_the_limiter(tmp_path: Path) -> None:
    """While a slice LIST is held in the limiter, a claim GET is served first."""
    release = threading.Event()
    entered = threading.Event()

    def blocking_sleep(seconds: float) -> None:
        entered.set()
        release.wait(10)

    limiter = TokenBucket(1.0, 1, sleep=blocking_sleep)
    with ApiServer() as srv:
        srv.store.add_claim(CLAIM)
        api = connect(srv, tmp_path, limiter=limiter)
        api.resource_api_version()
        api.list_resource_slices(driver=DRIVER)  # spends the only token
        worker = threading.Thread(target=api.list_resource_slices, kwargs={"driver": DRIVER})
        worker.start()
        assert entered.wait(10)
        api.get_resource_claim("ns", "claim-a")
        release.set()
        worker.join(10)
        verbs = [(c.verb, c.resource) for c in srv.store.calls()]
    assert verbs == [("list", "resourceslices"), ("get", "resourceclaims"), ("list", "resourceslices")]


def test_concurrent_claim_gets_share_the_pool(tmp_path: Path) -> None:
    """Many threads fetching claims at once all succeed over the shared connection pool."""
    with ApiServer() as srv:
        srv.store.add_claim(CLAIM)
        api = connect(srv, tmp_path)
        results: list[str] = []
        lock = threading.Lock()

        def fetch() -> None:
            for _ in range(5):
                name = api.get_resource_claim("ns", "claim-a")["metadata"]["name"]
                with lock:
                    results.append(name)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == ["claim-a"] * 40
