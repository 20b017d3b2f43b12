"""Kubernetes 1.32 to 1.36: version discovery, per-release ResourceSlice layout, strict per-version shapes.

The in-memory API server plays a release (``kubernetes_version``) serving a set of ``resource.k8s.io``
versions; the publisher reads ``/version`` once and lays shared counters out as that release wants them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import tenacity

from nvdra.core import errors
from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin._kube import (
    KubernetesKubeApi,
    parse_server_version,
    shape_problems,
    template_from_version,
    template_to_version,
)
from nvdra.kubeletplugin.objects import DEVICE_CLASSES, RESOURCE_CLAIM_TEMPLATES
from nvdra.kubeletplugin.publisher import (
    CounterPlacement,
    ResourceSlicePublisher,
    RetryPolicy,
    counter_placement,
    split_pool,
)
from nvdra.kubeletplugin.types import DriverResources, Pool, Slice
from nvdra.tool.devices import driver_resources, simulated_inventory

JsonObject = dict[str, Any]
DRIVER = "gpu.nvidia.com"
NODE = "node-a"
FAST = RetryPolicy(wait=tenacity.wait_none(), stop=tenacity.stop_after_attempt(3), after_error=0.01)
DYN = parse_feature_gates("DynamicMIG=true")


def counter_set(name: str, n: int) -> JsonObject:
    return {"name": name, "counters": {f"c{i}": {"value": "1"} for i in range(n)}}


def consumer(name: str, set_name: str, n: int) -> JsonObject:
    counters = {f"c{i}": {"value": "1"} for i in range(n)}
    return {"name": name, "consumesCounters": [{"counterSet": set_name, "counters": counters}]}


def publish(store: FakeKube, resources: DriverResources) -> tuple[ResourceSlicePublisher, list[Any]]:
    """Publish once into ``store``; returns the publisher and what it reported."""
    store.add_node(NODE)
    reported: list[Any] = []
    pub = ResourceSlicePublisher(
        store, driver_name=DRIVER, node_name=NODE, retry=FAST, on_error=lambda e, m: reported.append(e)
    )
    pub.update(resources)
    try:
        pub.sync_now()
    except errors.ConfigError as exc:
        reported.append(exc)
    return pub, reported


@pytest.mark.parametrize(
    ("release", "placement"),
    [
        ((1, 32), CounterPlacement.UNSUPPORTED),
        ((1, 33), CounterPlacement.WITH_DEVICES),
        ((1, 34), CounterPlacement.WITH_DEVICES),
        ((1, 35), CounterPlacement.SEPARATE),
        ((1, 36), CounterPlacement.SEPARATE),
    ],
)
def test_counter_placement_follows_the_release(release: tuple[int, int], placement: CounterPlacement) -> None:
    """KEP-4815: no counters in 1.32, counters beside their consumers in 1.33/1.34, apart from 1.35."""
    assert counter_placement(release) is placement


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"gitVersion": "v1.35.2-gke.1071000", "major": "1", "minor": "35+"}, (1, 35)),
        ({"major": "1", "minor": "33+"}, (1, 33)),
        ({"gitVersion": "v1.32.0"}, (1, 32)),
    ],
)
def test_server_version_parses_managed_cluster_answers(info: JsonObject, expected: tuple[int, int]) -> None:
    """gitVersion first; else major/minor with a provider's "+" suffix."""
    assert parse_server_version(info) == expected


def test_unparseable_server_version_is_a_config_error() -> None:
    """A /version answer without a version names the document."""
    with pytest.raises(errors.ConfigError, match="/version"):
        parse_server_version({"platform": "linux/amd64"})


def test_a_server_without_dra_is_named_as_such(tmp_path: Path) -> None:
    """No resource.k8s.io group at all (DRA off): the error says which gate and API to enable."""
    with ApiServer(FakeKube(served_versions=(), kubernetes_version=(1, 32))) as server:
        api = KubernetesKubeApi.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kc")), qps=0)
        with pytest.raises(errors.KubeNotFound, match="DynamicResourceAllocation feature gate") as info:
            api.resource_api_version()
        api.close()
    assert "does not serve resource.k8s.io" in str(info.value)


def test_fake_refuses_a_version_its_release_does_not_serve() -> None:
    """v1 came in 1.34 and v1beta2 in 1.33: a 1.33 server with v1 is no real server."""
    with pytest.raises(ValueError, match=r"1\.33 has no resource\.k8s\.io/v1 "):
        FakeKube(served_versions=("v1",), kubernetes_version=(1, 33))
    with pytest.raises(ValueError, match="v1beta2"):
        FakeKube(served_versions=("v1beta2",), kubernetes_version=(1, 32))


# --- the fake plays each release's ResourceSlice rules --------------------------------------------


def slice_body(spec: JsonObject) -> JsonObject:
    base = {
        "driver": DRIVER,
        "nodeName": NODE,
        "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
    }
    return {"metadata": {"generateName": "s-"}, "spec": {**base, **spec}}


def test_release_1_32_has_no_shared_counters() -> None:
    """1.32 (v1beta1 only): sharedCounters and consumesCounters are unknown fields."""
    store = FakeKube(served_versions=("v1beta1",), kubernetes_version=(1, 32))
    body = slice_body({"sharedCounters": [counter_set("cs", 2)], "devices": [consumer("d", "cs", 2)]})
    with pytest.raises(errors.KubeApiError, match='unknown field "sharedCounters"') as info:
        store.create_resource_slice(body)
    assert info.value.status == 422 and 'devices[0]: unknown field "consumesCounters"' in str(info.value)


def test_release_1_34_wants_counters_beside_their_consumers() -> None:
    """1.34: a slice may mix counters and devices, but a reference must resolve inside the slice."""
    store = FakeKube(kubernetes_version=(1, 34))
    store.create_resource_slice(
        slice_body({"sharedCounters": [counter_set("cs", 2)], "devices": [consumer("d", "cs", 2)]})
    )
    with pytest.raises(errors.KubeApiError, match="must reference a counterSet defined in the ResourceSlice"):
        store.create_resource_slice(slice_body({"devices": [consumer("e", "cs", 2)]}))
    with pytest.raises(errors.KubeApiError, match="total number of shared counters must not exceed 32"):
        store.create_resource_slice(
            slice_body({"sharedCounters": [counter_set("a", 20), counter_set("b", 13)], "devices": []})
        )


def test_release_1_35_wants_counters_apart() -> None:
    """1.35: the 1.34 mixed slice is refused; counters alone and devices alone are fine."""
    store = FakeKube(kubernetes_version=(1, 35))
    with pytest.raises(errors.KubeApiError, match="only one of `sharedCounters` or `devices`"):
        store.create_resource_slice(
            slice_body({"sharedCounters": [counter_set("cs", 2)], "devices": [consumer("d", "cs", 2)]})
        )
    store.create_resource_slice(slice_body({"sharedCounters": [counter_set("cs", 2)]}))
    store.create_resource_slice(slice_body({"devices": [consumer("d", "cs", 2)]}))


# --- the publisher lays pools out per release ------------------------------------------------------


@pytest.mark.parametrize(("release", "served"), [((1, 33), ("v1beta2", "v1beta1")), ((1, 34), ("v1beta1",))])
def test_dynamic_mig_before_1_35_puts_each_gpus_counter_set_beside_its_devices(
    release: tuple[int, int], served: tuple[str, ...]
) -> None:
    """dgx-h100 with DynamicMIG on a 1.33/1.34 server: 8 slices, each one GPU's 26 devices and its set."""
    store = FakeKube(served_versions=served, kubernetes_version=release)
    _, reported = publish(store, driver_resources(simulated_inventory("dgx-h100"), NODE, DYN))
    assert reported == []
    slices = store.resource_slices()
    assert len(slices) == 8
    for sl in slices:
        spec = sl["spec"]
        (own,) = spec["sharedCounters"]
        assert len(spec["devices"]) == 26
        assert {u["counterSet"] for d in spec["devices"] for u in d["consumesCounters"]} == {own["name"]}
        assert spec["pool"]["resourceSliceCount"] == 8


def test_dynamic_mig_from_1_35_publishes_counters_in_a_slice_of_their_own() -> None:
    """The same node on 1.35: one counter-only slice plus one device slice per GPU."""
    store = FakeKube(kubernetes_version=(1, 35))
    _, reported = publish(store, driver_resources(simulated_inventory("dgx-h100"), NODE, DYN))
    assert reported == []
    shapes = sorted(
        (len(s["spec"].get("sharedCounters") or []), len(s["spec"].get("devices") or []))
        for s in store.resource_slices()
    )
    assert shapes == [(0, 26)] * 8 + [(8, 0)]


@pytest.mark.parametrize("release", [(1, 33), (1, 34), (1, 35)])
def test_fabric_partitions_publish_on_every_release_with_counters(release: tuple[int, int]) -> None:
    """--publish-fabric-partitions: GPUs and partitions share the nvlink-gpus set in a valid layout."""
    store = FakeKube(served_versions=("v1beta2",), kubernetes_version=release)
    gates = parse_feature_gates("FabricTopologySupport=true")
    inventory = simulated_inventory("dgx-h100")
    _, reported = publish(store, driver_resources(inventory, NODE, gates, fabric_partitions=True))
    assert reported == []
    shapes = [
        (len(s["spec"].get("devices") or []), len(s["spec"].get("sharedCounters") or []))
        for s in store.resource_slices()
    ]
    assert sorted(shapes) == ([(0, 1), (15, 0)] if release >= (1, 35) else [(15, 1)])


def test_a_server_upgraded_to_1_35_gets_the_new_layout_from_a_restarted_plugin() -> None:
    """1.34 slices (counters beside devices) are replaced by the 1.35 layout at a new generation."""
    store = FakeKube(kubernetes_version=(1, 34))
    wanted = driver_resources(simulated_inventory("dgx-h100"), NODE, DYN)
    publish(store, wanted)
    assert len(store.resource_slices()) == 8
    store.kubernetes_version = (1, 35)  # the control plane is upgraded; the plugin restarts
    again = ResourceSlicePublisher(store, driver_name=DRIVER, node_name=NODE, retry=FAST)
    again.update(wanted)
    again.sync_now()
    slices = store.resource_slices()
    assert {s["spec"]["pool"]["generation"] for s in slices} == {2}
    assert sorted(len(s["spec"].get("sharedCounters") or []) for s in slices) == [0] * 8 + [8]


def test_counters_on_a_1_32_server_are_refused_before_any_write() -> None:
    """DynamicMIG on 1.32: a ConfigError naming the release and the gate; nothing is written."""
    store = FakeKube(served_versions=("v1beta1",), kubernetes_version=(1, 32))
    _, reported = publish(store, driver_resources(simulated_inventory("dgx-h100"), NODE, DYN))
    (error,) = reported
    assert isinstance(error, errors.ConfigError)
    assert "older than Kubernetes 1.33" in str(error) and "DRAPartitionableDevices" in str(error)
    assert store.resource_slices() == []
    assert [c.verb for c in store.calls() if c.resource == "resourceslices"] == ["list"]


def test_a_refused_pool_is_reported_once_until_the_driver_changes_it() -> None:
    """In the background a ConfigError waits for update() (or the resync), not the short error retry."""
    store = FakeKube(served_versions=("v1beta1",), kubernetes_version=(1, 32))
    store.add_node(NODE)
    reported: list[BaseException] = []
    pub = ResourceSlicePublisher(
        store, driver_name=DRIVER, node_name=NODE, retry=FAST, on_error=lambda e, m: reported.append(e)
    )
    pub.start()
    try:
        pub.update(driver_resources(simulated_inventory("dgx-h100"), NODE, DYN))
        deadline = time.monotonic() + 5
        while not reported and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # 30 retries' worth of FAST.after_error
        assert len(reported) == 1 and isinstance(reported[0], errors.ConfigError)
        pub.update(driver_resources(simulated_inventory("dgx-h100"), NODE, parse_feature_gates("")))
        while not store.resource_slices() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(store.resource_slices()) == 1
    finally:
        pub.stop()


def test_classic_devices_publish_on_every_release() -> None:
    """Without counters the layout is the same everywhere, and 1.32 publishes it too."""
    for release, served in (((1, 32), ("v1beta1",)), ((1, 34), ("v1",)), ((1, 36), ("v1",))):
        store = FakeKube(served_versions=served, kubernetes_version=release)
        _, reported = publish(
            store, driver_resources(simulated_inventory("dgx-h100"), NODE, parse_feature_gates(""))
        )
        assert reported == [] and len(store.resource_slices()) == 1


def test_small_counter_groups_pack_into_few_slices_before_1_35() -> None:
    """20 sets of 5 counters, each with two consumers: 6 sets per slice (30 <= 32 shared counters)."""
    sets = tuple(counter_set(f"s{i}", 5) for i in range(20))
    devices = tuple(consumer(f"d{i}-{j}", f"s{i}", 5) for i in range(20) for j in range(2))
    pool = Pool(slices=(Slice(shared_counters=sets), Slice(devices=devices)))
    out = split_pool(pool, CounterPlacement.WITH_DEVICES, pool_name="p")
    assert [len(s.shared_counters) for s in out] == [6, 6, 6, 2]
    assert [len(s.devices) for s in out] == [12, 12, 12, 4]
    for sl in out:
        names = {c["name"] for c in sl.shared_counters}
        assert {u["counterSet"] for d in sl.devices for u in d["consumesCounters"]} == names
    assert [d["name"] for s in out for d in s.devices] == [d["name"] for d in devices]


def test_a_counter_group_too_big_for_one_slice_is_refused_before_1_35() -> None:
    """Two 20-counter sets tied by one device cannot share a 1.34 slice (32 shared counters)."""
    tie = {
        "name": "both",
        "consumesCounters": [
            {"counterSet": "a", "counters": {"c0": {"value": "1"}}},
            {"counterSet": "b", "counters": {"c0": {"value": "1"}}},
        ],
    }
    pool = Pool(slices=(Slice(shared_counters=(counter_set("a", 20), counter_set("b", 20)), devices=(tie,)),))
    with pytest.raises(errors.ConfigError, match=r"40 shared.*at most 64 devices, 32 shared"):
        split_pool(pool, CounterPlacement.WITH_DEVICES, pool_name="p")
    assert len(split_pool(pool, CounterPlacement.SEPARATE, pool_name="p")) == 2


def test_a_reference_to_an_unknown_counter_set_is_refused_on_every_release() -> None:
    """A device consuming a set the pool lacks is named with its path, whatever the placement."""
    pool = Pool(slices=(Slice(devices=(consumer("d", "missing", 1),)),))
    for placement in CounterPlacement:
        with pytest.raises(errors.ConfigError, match=r"pools\[p\]\.devices\[d\]\.consumesCounters\[0\]"):
            split_pool(pool, placement, pool_name="p")


# --- strict shapes per version and generic resource.k8s.io objects ---------------------------------


def template(name: str = "t") -> JsonObject:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "spec": {
                "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}
            }
        },
    }


def test_template_round_trips_and_flattens_in_v1beta1() -> None:
    """v1beta1 keeps a request's fields flat; v1beta2 has v1's shape."""
    flat = template_to_version(template(), "v1beta1")
    assert flat["spec"]["spec"]["devices"]["requests"] == [
        {"name": "gpu", "deviceClassName": "gpu.nvidia.com"}
    ]
    assert template_from_version(flat) == template()
    assert template_to_version(template(), "v1beta2")["spec"] == template()["spec"]


def test_shape_problems_name_the_fields_a_version_lacks() -> None:
    """v1 bodies sent as v1beta1 (and the reverse) are what a strict decoder refuses."""
    assert shape_problems("ResourceClaimTemplate", template(), "v1beta1") == [
        'unknown field "spec.spec.devices.requests[0].exactly"'
    ]
    flat = template_to_version(template(), "v1beta1")
    assert shape_problems("ResourceClaimTemplate", flat, "v1") == [
        'unknown field "spec.spec.devices.requests[0].deviceClassName"'
    ]
    device = {"name": "d", "basic": {"attributes": {}}}
    assert shape_problems("ResourceSlice", {"spec": {"devices": [device]}}, "v1beta2") == [
        'unknown field "spec.devices[0].basic"'
    ]


class Recorder:
    """Wraps an ApiServer's router to keep (method, path) of every request."""

    def __init__(self, server: ApiServer) -> None:
        self.requests: list[tuple[str, str]] = []
        self.writes: list[JsonObject] = []
        inner = server.route

        def route(method: str, path: str, query: dict[str, str], body: JsonObject) -> tuple[int, JsonObject]:
            self.requests.append((method, path))
            if method in ("POST", "PUT"):
                self.writes.append(json.loads(json.dumps(body)))
            return inner(method, path, query, body)

        server.route = route  # type: ignore[method-assign]


@pytest.mark.parametrize("version", ["v1", "v1beta2", "v1beta1"])
def test_generic_resource_objects_travel_at_the_served_version(version: str, tmp_path: Path) -> None:
    """Templates and DeviceClasses go to the served version's path in its shape; callers see v1."""
    store = FakeKube(served_versions=(version,), kubernetes_version=(1, 34))
    with ApiServer(store) as server:
        seen = Recorder(server)
        api = KubernetesKubeApi.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kc")), qps=0)
        made = api.create_object(RESOURCE_CLAIM_TEMPLATES, template())
        listed = api.list_objects(RESOURCE_CLAIM_TEMPLATES, "ns")
        api.create_object(
            DEVICE_CLASSES,
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": "c"},
                "spec": {},
            },
        )
        api.close()
    assert made["spec"] == template()["spec"] and made["apiVersion"] == "resource.k8s.io/v1"
    assert [t["spec"] for t in listed] == [template()["spec"]]
    paths = {p for _, p in seen.requests if "resourceclaimtemplates" in p or "deviceclasses" in p}
    assert paths == {
        f"/apis/resource.k8s.io/{version}/namespaces/ns/resourceclaimtemplates",
        f"/apis/resource.k8s.io/{version}/deviceclasses",
    }


def test_server_refuses_a_body_in_another_versions_shape(tmp_path: Path) -> None:
    """A v1-shaped template posted as v1beta1 is a 400 naming the unknown field; an unserved version 404."""
    import json
    import urllib.error
    import urllib.request

    with ApiServer(FakeKube(served_versions=("v1beta1",), kubernetes_version=(1, 32))) as server:
        body = {**template(), "apiVersion": "resource.k8s.io/v1beta1"}
        request = urllib.request.Request(
            f"{server.url}/apis/resource.k8s.io/v1beta1/namespaces/ns/resourceclaimtemplates",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 400
        assert "requests[0].exactly" in json.loads(info.value.read())["message"]
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{server.url}/apis/resource.k8s.io/v1/deviceclasses", timeout=5)
        assert missing.value.code == 404
        with urllib.request.urlopen(f"{server.url}/version", timeout=5) as answer:
            assert json.loads(answer.read())["minor"] == "32"


SCHEMA_MODES = [
    pytest.param((1, 32), "v1beta1", "", id="1.32-v1beta1"),
    pytest.param((1, 33), "v1beta2", "DynamicMIG=true", id="1.33-v1beta2-dynamic-mig"),
    pytest.param((1, 34), "v1beta1", "DynamicMIG=true", id="1.34-v1beta1-dynamic-mig"),
    pytest.param((1, 34), "v1", "DynamicMIG=true", id="1.34-v1-dynamic-mig"),
    pytest.param((1, 35), "v1beta2", "DynamicMIG=true", id="1.35-v1beta2-dynamic-mig"),
    pytest.param((1, 36), "v1", "DynamicMIG=true", id="1.36-v1-dynamic-mig"),
]


@pytest.mark.parametrize(("release", "version", "gates"), SCHEMA_MODES)
def test_written_bodies_match_the_releases_openapi_schema(
    release: tuple[int, int], version: str, gates: str, tmp_path: Path
) -> None:
    """What goes on the wire (slices, a template) validates against that release's strict OpenAPI schema."""
    kv = pytest.importorskip("kubernetes_validate")
    store = FakeKube(served_versions=(version,), kubernetes_version=release)
    store.add_node(NODE)
    with ApiServer(store) as server:
        seen = Recorder(server)
        api = KubernetesKubeApi.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kc")), qps=0)
        pub = ResourceSlicePublisher(api, driver_name=DRIVER, node_name=NODE, retry=FAST)
        pub.update(driver_resources(simulated_inventory("dgx-h100"), NODE, parse_feature_gates(gates)))
        pub.sync_now()
        api.create_object(RESOURCE_CLAIM_TEMPLATES, template())
        api.close()
    assert len(seen.writes) >= 2
    for body in seen.writes:
        assert body["apiVersion"] == f"resource.k8s.io/{version}"
        kv.validate(body, f"{release[0]}.{release[1]}.0", strict=True)
