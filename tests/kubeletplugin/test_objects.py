"""Generic objects: the in-memory store's API-server semantics, and the real adapter over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvdra.core.errors import KubeConflict, KubeNotFound
from nvdra.kubeletplugin import ApiServer, FakeKube, KubernetesKubeApi
from nvdra.kubeletplugin.objects import DEPLOYMENTS, NODES, Query, ResourceType
from nvdra.kubeletplugin.store.patches import merge_patch
from nvdra.kubeletplugin.store.selectors import match_labels

WIDGETS = ResourceType(group="example.com", version="v1", plural="widgets", kind="Widget")


def _deployment(name: str, **labels: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}, "spec": {"replicas": 1}}


def test_merge_patch_rfc7386() -> None:
    """Objects merge, null deletes, lists and scalars replace."""
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "x": None}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }


@pytest.mark.parametrize(
    ("selector", "expected"),
    [("app=x", True), ("app!=x", False), ("app", True), ("!app", False), ("app=x,tier=y", False), ("", True)],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    """Equality-based selectors match as the API server does."""
    assert match_labels({"app": "x"}, selector) is expected


def test_store_concurrency_generation_and_status() -> None:
    """Stale updates conflict, spec changes bump generation, object updates never change status."""
    kube = FakeKube()
    created = kube.create_object(DEPLOYMENTS, _deployment("d"))
    assert created["metadata"]["generation"] == 1
    with_status = kube.update_object(DEPLOYMENTS, {**created, "status": {"readyReplicas": 1}}, status=True)
    assert with_status["status"] == {"readyReplicas": 1}
    changed = {**with_status, "spec": {"replicas": 2}, "status": {"readyReplicas": 9}}
    updated = kube.update_object(DEPLOYMENTS, changed)
    assert updated["metadata"]["generation"] == 2
    assert updated["status"] == {"readyReplicas": 1}
    with pytest.raises(KubeConflict):
        kube.update_object(DEPLOYMENTS, created)  # stale resourceVersion
    with pytest.raises(KubeConflict):
        kube.create_object(DEPLOYMENTS, _deployment("d"))


def test_finalizers_delay_deletion() -> None:
    """A delete only marks an object with finalizers; removing the last one deletes it."""
    kube = FakeKube()
    obj = kube.create_object(WIDGETS, {"metadata": {"name": "w", "finalizers": ["example.com/f"]}})
    kube.delete_object(WIDGETS, "w", "default")
    marked = kube.get_object(WIDGETS, "w", "default")
    assert marked["metadata"]["deletionTimestamp"]
    kube.patch_object(WIDGETS, "w", {"metadata": {"finalizers": None}}, "default")
    with pytest.raises(KubeNotFound):
        kube.get_object(WIDGETS, "w", "default")
    assert obj["metadata"]["uid"]


def test_adapter_round_trips_generic_objects(tmp_path: Path) -> None:
    """The kubernetes-client adapter creates, lists by label, patches, updates and deletes over HTTP."""
    store = FakeKube()
    store.add_node("n1", labels={"a": "b"})
    with ApiServer(store) as server:
        server.register(WIDGETS)
        api = KubernetesKubeApi.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kc")), qps=0)
        api.create_object(DEPLOYMENTS, _deployment("d1", app="x"))
        api.create_object(DEPLOYMENTS, _deployment("d2", app="y"))
        assert [
            d["metadata"]["name"] for d in api.list_objects(DEPLOYMENTS, "ns", label_selector="app=x")
        ] == ["d1"]
        assert len(api.list_objects(DEPLOYMENTS)) == 2
        patched = api.patch_object(NODES, "n1", {"metadata": {"labels": {"c": "d"}}})
        assert patched["metadata"]["labels"] == {"a": "b", "c": "d"}
        got = api.get_object(DEPLOYMENTS, "d1", "ns")
        got["status"] = {"readyReplicas": 1}
        assert api.update_object(DEPLOYMENTS, got, status=True)["status"] == {"readyReplicas": 1}
        api.create_object(WIDGETS, {"metadata": {"generateName": "w-", "namespace": "default"}})
        assert len(api.list_objects(WIDGETS, "default")) == 1
        api.delete_object(DEPLOYMENTS, "d1", "ns")
        api.delete_object(DEPLOYMENTS, "d1", "ns")  # missing is fine
        with pytest.raises(KubeNotFound):
            api.get_object(DEPLOYMENTS, "d1", "ns")
        with pytest.raises(KubeNotFound):
            api.get_object(
                ResourceType(group="x.io", version="v1", plural="nope", kind="Nope"), "a", "default"
            )
        api.close()


def test_resource_type_of_splits_the_api_version_and_guesses_the_plural_as_the_apiserver() -> None:
    """``of`` derives group, version and plural: ``es`` after a final s, ``ies`` for a final y."""
    assert ResourceType.of("v1", "Node", namespaced=False) == ResourceType(
        group="", version="v1", plural="nodes", kind="Node", namespaced=False
    )
    classes = ResourceType.of("resource.k8s.io/v1", "DeviceClass", status_subresource=False)
    assert (classes.group, classes.version, classes.plural) == ("resource.k8s.io", "v1", "deviceclasses")
    assert not classes.status_subresource
    assert ResourceType.of("policy/v1", "PodSecurityPolicy").plural == "podsecuritypolicies"
    assert (
        ResourceType.of("apps/v1", "DaemonSet").path("ns", "x") == "/apis/apps/v1/namespaces/ns/daemonsets/x"
    )


def test_query_fills_the_watch_defaults_and_names_only_the_set_parameters() -> None:
    """A bare query watches from now for 300 s with bookmarks; only set selectors reach the URL."""
    bare = Query()
    assert (bare.resource_version, bare.timeout_s, bare.allow_bookmarks) == ("", 300.0, True)
    assert bare.params() == {}
    query = Query(field_selector="metadata.name=a", resource_version="7", timeout_s=5)
    assert query.params() == {"fieldSelector": "metadata.name=a", "resourceVersion": "7"}
