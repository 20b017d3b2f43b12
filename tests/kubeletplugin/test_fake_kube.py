"""FakeKube keeps the API server's semantics: versions, names, concurrency, validation, faults, call log."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin.fake import FakeKube, KubeCall, validate_resource_slice

DRIVER = "gpu.nvidia.com"


def slice_body(
    *, name: str = "", devices: list[dict[str, Any]] | None = None, node: str = "node-a", **spec: object
) -> dict[str, Any]:
    meta = {"name": name} if name else {"generateName": f"00000-{DRIVER}-{node}-"}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": meta,
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "gpu-0"}] if devices is None else devices,
            **spec,
        },
    }


def test_create_assigns_uid_version_and_generated_name() -> None:
    """A create fills uid, resourceVersion, generation and a 5-character generated suffix."""
    kube = FakeKube()
    stored = kube.create_resource_slice(slice_body())
    meta = stored["metadata"]
    assert meta["name"].startswith(f"00000-{DRIVER}-node-a-")
    suffix = meta["name"].removeprefix(f"00000-{DRIVER}-node-a-")
    assert len(suffix) == 5 and set(suffix) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert meta["uid"] and meta["resourceVersion"] and meta["generation"] == 1


def test_generated_name_base_is_cut_to_58_characters() -> None:
    """Like the API server's name generator, a long generateName keeps 58 characters plus 5 random."""
    kube = FakeKube()
    body = slice_body(node="n" * 80)
    stored = kube.create_resource_slice(body)
    assert len(stored["metadata"]["name"]) == 63


def _relabelled(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with a new label: an update that changes nothing is no write (no new resourceVersion)."""
    return {**obj, "metadata": {**obj["metadata"], "labels": {"changed": "yes"}}}


def test_a_write_that_changes_nothing_keeps_the_resource_version() -> None:
    """As the apiserver: an identical update is answered with the stored object, no new revision."""
    kube = FakeKube()
    first = kube.create_resource_slice(slice_body())
    assert (
        kube.update_resource_slice(first)["metadata"]["resourceVersion"]
        == first["metadata"]["resourceVersion"]
    )


def test_resource_version_increases_on_every_write() -> None:
    """Each write gets a larger resourceVersion than the one before."""
    kube = FakeKube()
    first = kube.create_resource_slice(slice_body())
    second = kube.update_resource_slice(_relabelled(first))
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


def test_create_of_existing_name_conflicts() -> None:
    """Creating a name that exists is a 409."""
    kube = FakeKube()
    kube.create_resource_slice(slice_body(name="a"))
    with pytest.raises(errors.KubeConflict) as info:
        kube.create_resource_slice(slice_body(name="a"))
    assert info.value.status == 409


def test_stale_update_conflicts() -> None:
    """An update carrying an old resourceVersion is a 409; the current one succeeds."""
    kube = FakeKube()
    stored = kube.create_resource_slice(slice_body())
    kube.update_resource_slice(_relabelled(stored))
    with pytest.raises(errors.KubeConflict):
        kube.update_resource_slice(stored)


def test_update_of_missing_slice_is_not_found() -> None:
    """Updating a name that does not exist is a 404."""
    with pytest.raises(errors.KubeNotFound):
        FakeKube().update_resource_slice(slice_body(name="ghost"))


def test_immutable_fields_are_rejected_on_update() -> None:
    """spec.driver, spec.pool.name and spec.nodeName cannot change (422)."""
    kube = FakeKube()
    stored = kube.create_resource_slice(slice_body())
    stored["spec"]["nodeName"] = "node-b"
    with pytest.raises(errors.KubeApiError, match="immutable") as info:
        kube.update_resource_slice(stored)
    assert info.value.status == 422


def test_spec_change_bumps_metadata_generation_only_when_spec_changes() -> None:
    """metadata.generation counts spec changes, not metadata-only writes."""
    kube = FakeKube()
    stored = kube.create_resource_slice(slice_body())
    same = kube.update_resource_slice(stored)
    same["spec"]["devices"] = [{"name": "gpu-1"}]
    changed = kube.update_resource_slice(same)
    assert (same["metadata"]["generation"], changed["metadata"]["generation"]) == (1, 2)


def test_delete_with_wrong_uid_conflicts_and_keeps_the_slice() -> None:
    """A UID precondition that does not match is a 409 and deletes nothing."""
    kube = FakeKube()
    stored = kube.create_resource_slice(slice_body())
    with pytest.raises(errors.KubeConflict):
        kube.delete_resource_slice(stored["metadata"]["name"], uid="other")
    assert len(kube.resource_slices()) == 1
    kube.delete_resource_slice(stored["metadata"]["name"], uid=stored["metadata"]["uid"])
    assert kube.resource_slices() == []


def test_delete_of_missing_slice_is_not_an_error_but_pop_is() -> None:
    """delete_resource_slice tolerates a missing slice (KubeApi contract); pop_resource_slice says 404."""
    kube = FakeKube()
    kube.delete_resource_slice("ghost")
    with pytest.raises(errors.KubeNotFound):
        kube.pop_resource_slice("ghost")


def test_list_selects_by_driver_and_node() -> None:
    """The list honours the driver and nodeName field selectors."""
    kube = FakeKube()
    kube.create_resource_slice(slice_body(node="node-a"))
    kube.create_resource_slice(slice_body(node="node-b"))
    other = slice_body(node="node-a")
    other["spec"]["driver"] = "compute-domain.nvidia.com"
    kube.create_resource_slice(other)
    assert len(kube.list_resource_slices(driver=DRIVER)) == 2
    only_a = kube.list_resource_slices(driver=DRIVER, node_name="node-a")
    assert [s["spec"]["nodeName"] for s in only_a] == ["node-a"]


def test_returned_objects_do_not_alias_the_store() -> None:
    """Mutating a returned object changes nothing stored."""
    kube = FakeKube()
    stored = kube.create_resource_slice(slice_body())
    stored["spec"]["devices"].clear()
    assert kube.resource_slices()[0]["spec"]["devices"] == [{"name": "gpu-0"}]


def test_served_version_is_the_newest_supported() -> None:
    """resource_api_version prefers v1, then v1beta2, then v1beta1; none supported is a 404."""
    assert FakeKube().resource_api_version() == "v1"
    assert FakeKube(served_versions=("v1beta1", "v1beta2")).resource_api_version() == "v1beta2"
    assert FakeKube(served_versions=("v1beta1",)).resource_api_version() == "v1beta1"
    with pytest.raises(errors.KubeNotFound):
        FakeKube(served_versions=("v1alpha3",)).resource_api_version()


def test_claims_and_nodes_helpers() -> None:
    """add_claim/add_node store objects that the GETs return; unknown names are 404."""
    kube = FakeKube()
    kube.add_claim({"metadata": {"name": "c", "namespace": "ns"}, "spec": {}})
    node = kube.add_node("node-a", labels={"k": "v"}, uid="u-1")
    assert kube.get_resource_claim("ns", "c")["metadata"]["uid"]
    assert kube.get_node("node-a") == node and node["metadata"]["labels"] == {"k": "v"}
    with pytest.raises(errors.KubeNotFound):
        kube.get_resource_claim("ns", "other")
    with pytest.raises(errors.KubeNotFound):
        kube.get_node("node-b")


def test_injected_faults_fire_the_given_number_of_times() -> None:
    """fail_next makes exactly N calls of that verb fail with the mapped error, then calls succeed."""
    kube = FakeKube()
    kube.fail_next("list", times=2, status=503)
    for _ in range(2):
        with pytest.raises(errors.KubeUnavailable) as info:
            kube.list_resource_slices(driver=DRIVER)
        assert info.value.status == 503
    assert kube.list_resource_slices(driver=DRIVER) == []


def test_faults_are_scoped_to_a_resource() -> None:
    """A fault for resourceclaims does not hit a node GET."""
    kube = FakeKube()
    kube.add_node("n")
    kube.add_claim({"metadata": {"name": "c", "namespace": "ns"}})
    kube.fail_next("get", status=409, resource="resourceclaims")
    kube.get_node("n")
    with pytest.raises(errors.KubeConflict):
        kube.get_resource_claim("ns", "c")


def test_faults_fire_before_any_state_change() -> None:
    """A failed create stores nothing."""
    kube = FakeKube()
    kube.fail_next("create", status=500)
    with pytest.raises(errors.KubeUnavailable):
        kube.create_resource_slice(slice_body())
    assert kube.resource_slices() == []


def test_call_log_records_verb_resource_name() -> None:
    """Every served call is logged in order; clear_calls empties the log."""
    kube = FakeKube()
    stored = kube.create_resource_slice(slice_body(name="s"))
    kube.list_resource_slices(driver=DRIVER)
    kube.delete_resource_slice("s", uid=stored["metadata"]["uid"])
    assert kube.calls() == (
        KubeCall(verb="create", resource="resourceslices", name="s"),
        KubeCall(verb="list", resource="resourceslices", name=""),
        KubeCall(verb="delete", resource="resourceslices", name="s"),
    )
    kube.clear_calls()
    assert kube.calls() == ()


def test_concurrent_creates_get_distinct_names_and_versions() -> None:
    """Threads creating at once get unique names and unique resourceVersions."""
    kube = FakeKube()
    out: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            stored = kube.create_resource_slice(slice_body())
            with lock:
                out.append(stored)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({s["metadata"]["name"] for s in out}) == 80
    assert len({s["metadata"]["resourceVersion"] for s in out}) == 80


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"devices": [{"name": f"gpu-{i}"} for i in range(129)]}, "at most 128"),
        (
            {
                "devices": [
                    {"name": f"gpu-{i}", "taints": [{"key": "k", "effect": "NoSchedule"}]} for i in range(65)
                ]
            },
            "at most 64",
        ),
        ({"sharedCounters": [{"name": "c", "counters": {}}]}, "only one of `sharedCounters` or `devices`"),
        ({"allNodes": True}, "exactly one of"),
        ({"nodeName": None}, "exactly one of"),
        ({"devices": [{"name": "GPU_0"}]}, "DNS label"),
        ({"devices": [{"name": "gpu-0"}, {"name": "gpu-0"}]}, "Duplicate value"),
        ({"devices": [{"name": "g", "attributes": {f"a{i}": {"int": i} for i in range(33)}}]}, "<= 32"),
        ({"devices": [{"name": "g", "attributes": {"a": {"string": "x" * 65}}}]}, "64 bytes"),
        ({"devices": [{"name": "g", "attributes": {"a": {"int": 1, "bool": True}}}]}, "one of int"),
        ({"driver": "GPU.nvidia.com"}, "spec.driver"),
        ({"driver": "a" * 64}, "spec.driver"),
        ({"pool": {"name": "p", "generation": 1, "resourceSliceCount": 0}}, "resourceSliceCount"),
    ],
)
def test_validation_rejects_what_the_api_server_rejects(change: dict[str, Any], message: str) -> None:
    """Each ResourceSlice rule nvdra could break is a 422 naming the field."""
    body = slice_body(name="s")
    body["spec"].update(change)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    with pytest.raises(errors.KubeApiError, match=message) as info:
        FakeKube().create_resource_slice(body)
    assert info.value.status == 422


def test_validation_accepts_limits_exactly() -> None:
    """128 plain devices, 64 tainted devices, and a counters-only slice are valid."""
    validate_resource_slice(slice_body(devices=[{"name": f"gpu-{i}"} for i in range(128)]))
    tainted = [
        {"name": f"gpu-{i}", "consumesCounters": [{"counterSet": "s", "counters": {}}]} for i in range(64)
    ]
    validate_resource_slice(slice_body(devices=tainted))
    counters_only = slice_body(devices=[])
    counters_only["spec"]["sharedCounters"] = [
        {"name": "gpu-0-counters", "counters": {"memory": {"value": "1"}}}
    ]
    validate_resource_slice(counters_only)
