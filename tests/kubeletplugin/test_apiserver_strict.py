"""The test API server refuses what a real kube-apiserver refuses (issue 18): one test per rule.

Each rule is exercised over HTTP with raw requests, so the bytes and headers are the ones a client
sends; the in-memory FakeKube shares the store and the same rules (the last tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from nvdra.core.errors import KubeApiError, KubeConflict
from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.objects import RESOURCE_CLAIM_TEMPLATES, ResourceType
from tests.kubeletplugin.wire import Wire, chart_crds

CDS = "/apis/resource.nvidia.com/v1beta1/namespaces/team/computedomains"
TEMPLATES = "/apis/resource.k8s.io/v1/namespaces/team/resourceclaimtemplates"
CD_TYPE = ResourceType(
    group="resource.nvidia.com", version="v1beta1", plural="computedomains", kind="ComputeDomain"
)


def compute_domain(name: str = "cd", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomain",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"numNodes": 2, "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}, **spec},
    }


# Spaced JSON, as json.dumps writes by default: what a client that re-serializes sends.
SPACED_TEMPLATE = (
    '{"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", '
    '"metadata": {"name": "t", "namespace": "team", "finalizers": ["resource.nvidia.com/cd"]}, '
    '"spec": {"spec": {"devices": {"requests": [{"name": "ch", "exactly": {"deviceClassName": "c"}}], '
    '"config": [{"requests": ["ch"], "opaque": {"driver": "compute-domain.nvidia.com", '
    '"parameters": {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomainChannelConfig", '
    '"domainID": "d-1"}}}]}}}}'
)


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(FakeKube()) as srv:
        for crd in chart_crds():
            srv.install_crd(crd)
        yield srv


@pytest.fixture
def wire(server: ApiServer) -> Wire:
    return Wire(server)


# --- resourceVersion -----------------------------------------------------------------------------


def test_custom_resource_update_needs_a_resource_version_main_and_status(wire: Wire) -> None:
    """A PUT of a ComputeDomain (or its /status) without metadata.resourceVersion is a 422."""
    created = wire("POST", CDS, compute_domain()).body
    del created["metadata"]["resourceVersion"]
    expected = (
        'ComputeDomain.resource.nvidia.com "cd" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update"
    )
    for path in (f"{CDS}/cd", f"{CDS}/cd/status"):
        answer = wire("PUT", path, {**created, "status": {"status": "Ready"}})
        assert (answer.status, answer.body["reason"], answer.message) == (422, "Invalid", expected)


def test_built_in_kinds_update_unconditionally(wire: Wire) -> None:
    """A Node PUT without resourceVersion is accepted, as the apiserver's built-in strategies allow."""
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}).body
    del node["metadata"]["resourceVersion"]
    node["metadata"]["labels"] = {"a": "b"}
    answer = wire("PUT", "/api/v1/nodes/n1", node)
    assert answer.status == 200 and answer.body["metadata"]["labels"] == {"a": "b"}


def test_stale_resource_version_is_a_409_with_the_apiserver_message(wire: Wire) -> None:
    created = wire("POST", CDS, compute_domain()).body
    assert (
        wire(
            "PUT", f"{CDS}/cd", {**created, "metadata": {**created["metadata"], "labels": {"x": "1"}}}
        ).status
        == 200
    )
    answer = wire("PUT", f"{CDS}/cd", created)
    assert (answer.status, answer.body["reason"]) == (409, "Conflict")
    assert answer.message == (
        'Operation cannot be fulfilled on computedomains.resource.nvidia.com "cd": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )


def test_resource_versions_are_one_cluster_wide_counter_and_lists_carry_it(wire: Wire) -> None:
    """Writes to different kinds share one revision; a list names the revision it was taken at."""
    cd = wire("POST", CDS, compute_domain()).body
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}).body
    assert int(node["metadata"]["resourceVersion"]) == int(cd["metadata"]["resourceVersion"]) + 1
    listed = wire("GET", "/api/v1/nodes").body
    assert listed["metadata"]["resourceVersion"] == node["metadata"]["resourceVersion"]


def test_a_write_that_changes_nothing_is_no_write(wire: Wire) -> None:
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}).body
    again = wire("PUT", "/api/v1/nodes/n1", node).body
    assert again["metadata"]["resourceVersion"] == node["metadata"]["resourceVersion"]


# --- status subresource --------------------------------------------------------------------------


def test_status_and_main_resource_are_kept_apart(wire: Wire) -> None:
    """Create drops status; a main PUT ignores status; a /status PUT changes only status."""
    created = wire("POST", CDS, {**compute_domain(), "status": {"status": "Ready"}}).body
    assert "status" not in created
    with_status = wire("PUT", f"{CDS}/cd/status", {**created, "status": {"status": "NotReady"}}).body
    assert with_status["status"] == {"status": "NotReady"}
    labelled = {**with_status, "metadata": {**with_status["metadata"], "labels": {"a": "b"}}}
    main = wire("PUT", f"{CDS}/cd", {**labelled, "status": {"status": "Ready"}}).body
    assert main["status"] == {"status": "NotReady"} and main["metadata"]["labels"] == {"a": "b"}
    sneaky = {**main, "metadata": {**main["metadata"], "labels": {"a": "c"}}, "status": {"status": "Ready"}}
    status = wire("PUT", f"{CDS}/cd/status", sneaky).body
    assert status["status"] == {"status": "Ready"} and status["metadata"]["labels"] == {"a": "b"}
    patched = wire(
        "PATCH", f"{CDS}/cd", {"status": {"status": "NotReady"}}, content_type="application/merge-patch+json"
    )
    assert patched.body["status"] == {"status": "Ready"}
    assert wire("PUT", "/apis/coordination.k8s.io/v1/namespaces/team/leases/l/status", {}).status == 404


# --- immutable fields ----------------------------------------------------------------------------


def test_claim_template_spec_is_immutable(wire: Wire) -> None:
    created = wire("POST", TEMPLATES, raw=SPACED_TEMPLATE).body
    created["spec"]["spec"]["devices"]["requests"][0]["name"] = "other"
    answer = wire("PUT", f"{TEMPLATES}/t", created)
    assert answer.status == 422
    assert answer.message.startswith(
        'ResourceClaimTemplate.resource.k8s.io "t" is invalid: spec: Invalid value:'
    )
    assert answer.message.endswith("field is immutable")


def test_opaque_parameters_are_compared_by_their_bytes(wire: Wire) -> None:
    """Issue 18, defect 3: created with spaced JSON, any patch re-serializes the parameters compactly
    and the apiserver calls that a spec change; sent once, compactly, the same patch passes."""
    wire("POST", TEMPLATES, raw=SPACED_TEMPLATE)
    drop = {"metadata": {"finalizers": None}}
    answer = wire("PATCH", f"{TEMPLATES}/t", drop, content_type="application/merge-patch+json")
    assert (answer.status, answer.message.endswith("field is immutable")) == (422, True)
    # The same bytes again in a PUT are no change at all.
    current = wire("GET", f"{TEMPLATES}/t").body
    as_sent = json.loads(SPACED_TEMPLATE)
    as_sent["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    assert wire("PUT", f"{TEMPLATES}/t", raw=json.dumps(as_sent)).status == 200
    compact = json.dumps(
        {**json.loads(SPACED_TEMPLATE), "metadata": {"name": "c", "namespace": "team", "finalizers": ["f"]}},
        separators=(",", ":"),
    )
    assert wire("POST", TEMPLATES, raw=compact).status == 201
    answer = wire("PATCH", f"{TEMPLATES}/c", drop, content_type="application/merge-patch+json")
    assert answer.status == 200 and "finalizers" not in answer.body["metadata"]


def test_claim_specs_are_validated(wire: Wire) -> None:
    """Request names, one of exactly/firstAvailable with a class, config references, opaque parameters."""
    template = json.loads(SPACED_TEMPLATE)
    devices = template["spec"]["spec"]["devices"]
    devices["requests"].append({"name": "Second", "exactly": {"deviceClassName": "c", "count": 0}})
    devices["requests"].append({"name": "third"})
    devices["config"][0]["requests"] = ["nope"]
    devices["config"][0]["opaque"]["parameters"] = "not an object"
    answer = wire("POST", TEMPLATES, template)
    assert answer.status == 422
    for problem in (
        'spec.spec.devices.requests[1].name: Invalid value: "Second": a lowercase RFC 1123 label',
        "spec.spec.devices.requests[1].exactly.count: Invalid value: 0: must be greater than zero",
        "spec.spec.devices.requests[2]: Invalid value: exactly one of `exactly` or `firstAvailable`",
        'spec.spec.devices.config[0].requests[0]: Invalid value: "nope": must be the name of a request',
        "spec.spec.devices.config[0].opaque.parameters: Invalid value: parameters must be a valid JSON",
    ):
        assert problem in answer.message


def test_compute_domain_spec_is_immutable_by_its_crd_rule(wire: Wire) -> None:
    created = wire("POST", CDS, compute_domain()).body
    created["spec"]["numNodes"] = 3
    answer = wire("PUT", f"{CDS}/cd", created)
    assert answer.status == 422
    assert answer.message == (
        'ComputeDomain.resource.nvidia.com "cd" is invalid: spec: Invalid value: "object": '
        "A computeDomain.spec is immutable"
    )


def test_object_meta_system_fields_cannot_change(wire: Wire) -> None:
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}).body
    answer = wire("PUT", "/api/v1/nodes/n1", {**node, "metadata": {**node["metadata"], "uid": "other"}})
    assert answer.status == 409 and "Precondition failed: UID in precondition: other" in answer.message
    renamed = wire("PUT", "/api/v1/nodes/n1", {**node, "metadata": {**node["metadata"], "name": "n2"}})
    assert renamed.status == 400


def test_object_meta_is_validated(wire: Wire) -> None:
    """Names, label keys and values, finalizers: the apiserver's ObjectMeta rules (422)."""
    bad_name = wire("POST", "/api/v1/nodes", {"metadata": {"name": "Node_1"}})
    assert bad_name.status == 422
    assert bad_name.message.startswith(
        'Node "Node_1" is invalid: metadata.name: Invalid value: "Node_1": a lowercase RFC 1123'
    )
    label = {"metadata": {"name": "n1", "labels": {"resource.nvidia.com/computeDomain": "not a value"}}}
    answer = wire("POST", "/api/v1/nodes", label)
    assert answer.status == 422 and 'metadata.labels: Invalid value: "not a value"' in answer.message
    finalizer = {"metadata": {"name": "n1", "finalizers": ["Bad Finalizer"]}}
    assert wire("POST", "/api/v1/nodes", finalizer).status == 422
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}).body
    node["metadata"]["labels"] = {"x/y/z": "v"}
    assert wire("PUT", "/api/v1/nodes/n1", node).status == 422


# --- patches -------------------------------------------------------------------------------------


def test_json_patch_test_of_the_resource_version(wire: Wire) -> None:
    """RFC 6902 with a ``test`` of metadata.resourceVersion: the safe finalizer removal; stale is 422."""
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1", "finalizers": ["a", "b"]}}).body
    rv = node["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    first = wire("PATCH", "/api/v1/nodes/n1", ops, content_type="application/json-patch+json")
    assert first.status == 200 and first.body["metadata"]["finalizers"] == ["b"]
    again = wire("PATCH", "/api/v1/nodes/n1", ops, content_type="application/json-patch+json")
    assert (again.status, again.message) == (
        422,
        "testing value /metadata/resourceVersion failed: test failed",
    )


def test_strategic_merge_patch_is_for_built_in_kinds_only(wire: Wire) -> None:
    wire("POST", CDS, compute_domain())
    answer = wire(
        "PATCH",
        f"{CDS}/cd",
        {"metadata": {"labels": {"a": "b"}}},
        content_type="application/strategic-merge-patch+json",
    )
    assert (answer.status, answer.body["reason"]) == (415, "UnsupportedMediaType")
    wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1", "finalizers": ["a"]}})
    node = wire(
        "PATCH",
        "/api/v1/nodes/n1",
        {"metadata": {"finalizers": ["b"], "labels": {"x": "y"}}},
        content_type="application/strategic-merge-patch+json",
    ).body
    assert node["metadata"]["finalizers"] == ["a", "b"] and node["metadata"]["labels"] == {"x": "y"}
    plain = wire("PATCH", "/api/v1/nodes/n1", {"metadata": {}}, content_type="application/json")
    assert plain.status == 415


def test_resource_version_in_a_patch_is_a_precondition(wire: Wire) -> None:
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}).body
    merge = "application/merge-patch+json"
    assert (
        wire("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"a": "b"}}}, content_type=merge).status
        == 200
    )
    patch = {"metadata": {"labels": {"a": "c"}, "resourceVersion": node["metadata"]["resourceVersion"]}}
    answer = wire("PATCH", "/api/v1/nodes/n1", patch, content_type=merge)
    assert (answer.status, answer.body["reason"]) == (409, "Conflict")


# --- query strings and field validation ----------------------------------------------------------


def test_query_strings_are_parsed_and_ignored_where_the_apiserver_ignores_them(wire: Wire) -> None:
    created = wire("POST", f"{CDS}?fieldManager=nvdra&timeout=10s", compute_domain())
    assert created.status == 201
    listed = wire("GET", f"{CDS}?limit=500&timeout=10s&labelSelector=")
    assert listed.status == 200 and [i["metadata"]["name"] for i in listed.body["items"]] == ["cd"]
    assert wire("GET", f"{CDS}/cd?resourceVersion=0").status == 200
    assert wire("GET", f"{CDS}?fieldSelector=spec.numNodes%3D2").status == 400


def test_field_validation_strict_refuses_unknown_fields(wire: Wire) -> None:
    bad = compute_domain()
    bad["spec"]["foo"] = 1
    answer = wire("POST", f"{CDS}?fieldValidation=Strict", bad)
    assert (answer.status, answer.message) == (400, 'strict decoding error: unknown field "spec.foo"')
    template = json.loads(SPACED_TEMPLATE)
    template["spec"]["spec"]["devices"]["bogus"] = True
    answer = wire("POST", f"{TEMPLATES}?fieldValidation=Strict", template)
    assert (answer.status, answer.message) == (
        400,
        'strict decoding error: unknown field "spec.spec.devices.bogus"',
    )
    # Opaque parameters are a RawExtension: any field is fine there.
    template["spec"]["spec"]["devices"].pop("bogus")
    template["spec"]["spec"]["devices"]["config"][0]["opaque"]["parameters"]["anything"] = 1
    assert wire("POST", f"{TEMPLATES}?fieldValidation=Strict", template).status == 201


def test_field_validation_warn_by_default_and_unknown_fields_of_custom_resources_are_pruned(
    wire: Wire,
) -> None:
    bad = compute_domain()
    bad["spec"]["foo"] = 1
    answer = wire("POST", CDS, bad)
    assert answer.status == 201 and "foo" not in answer.body["spec"]
    assert answer.headers.get_all("Warning") == ['299 - "unknown field \\"spec.foo\\""']
    assert wire("POST", f"{CDS}?fieldValidation=Loose", compute_domain("x")).status == 400


def test_unknown_fields_of_built_in_kinds_are_dropped_as_decoding_drops_them(wire: Wire) -> None:
    template = json.loads(SPACED_TEMPLATE)
    template["spec"]["spec"]["devices"]["bogus"] = True
    answer = wire("POST", TEMPLATES, template)
    assert answer.status == 201 and "bogus" not in answer.body["spec"]["spec"]["devices"]
    assert answer.headers.get_all("Warning") == ['299 - "unknown field \\"spec.spec.devices.bogus\\""']


def test_dry_run_validates_and_answers_but_keeps_nothing(wire: Wire, server: ApiServer) -> None:
    revision = server.store.objects.revision
    answer = wire("POST", f"{CDS}?dryRun=All", compute_domain())
    assert answer.status == 201 and answer.body["metadata"]["name"] == "cd"
    assert wire("GET", f"{CDS}/cd").status == 404 and server.store.objects.revision == revision
    assert wire("POST", f"{CDS}?dryRun=All", {**compute_domain(), "metadata": {"name": "Bad"}}).status == 422
    wire("POST", CDS, compute_domain())
    assert wire("DELETE", f"{CDS}/cd?dryRun=All").status == 200
    assert wire("GET", f"{CDS}/cd").status == 200
    assert wire("POST", f"{CDS}?dryRun=Some", compute_domain("x")).status == 400


# --- finalizers, deletion, namespaces ------------------------------------------------------------


def test_delete_with_finalizers_marks_and_the_last_removal_deletes(wire: Wire) -> None:
    body = compute_domain()
    body["metadata"]["finalizers"] = ["resource.nvidia.com/cd"]
    wire("POST", CDS, body)
    marked = wire("DELETE", f"{CDS}/cd").body
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 0
    current = wire("GET", f"{CDS}/cd").body
    added = {**current, "metadata": {**current["metadata"], "finalizers": ["resource.nvidia.com/cd", "x/y"]}}
    answer = wire("PUT", f"{CDS}/cd", added)
    assert answer.status == 422 and answer.message.endswith(
        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, "
        'found new finalizers []string{"x/y"}'
    )
    patch = {"metadata": {"finalizers": None}}
    assert wire("PATCH", f"{CDS}/cd", patch, content_type="application/merge-patch+json").status == 200
    assert wire("GET", f"{CDS}/cd").status == 404
    assert wire("DELETE", f"{CDS}/cd").status == 404


def test_delete_preconditions(wire: Wire) -> None:
    node = wire("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}).body
    stale = {"preconditions": {"resourceVersion": str(int(node["metadata"]["resourceVersion"]) - 1)}}
    assert wire("DELETE", "/api/v1/nodes/n1", stale).status == 409
    assert wire("DELETE", "/api/v1/nodes/n1", {"preconditions": {"uid": "nope"}}).status == 409
    assert (
        wire("DELETE", "/api/v1/nodes/n1", {"preconditions": {"uid": node["metadata"]["uid"]}}).status == 200
    )


def test_namespace_deletion_waits_for_its_objects(wire: Wire) -> None:
    assert wire("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}}).status == 201
    body = compute_domain()
    body["metadata"]["finalizers"] = ["resource.nvidia.com/cd"]
    wire("POST", CDS, body)
    ns = wire("DELETE", "/api/v1/namespaces/team").body
    assert ns["status"]["phase"] == "Terminating"
    refused = wire("POST", CDS, compute_domain("late"))
    assert refused.status == 403 and "because it is being terminated" in refused.message
    assert wire("GET", f"{CDS}/cd").body["metadata"]["deletionTimestamp"]
    patch = {"metadata": {"finalizers": None}}
    wire("PATCH", f"{CDS}/cd", patch, content_type="application/merge-patch+json")
    assert wire("GET", "/api/v1/namespaces/team").status == 404


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    """An ``ownerReferences[]`` entry naming the ComputeDomain ``owner``."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": "ComputeDomain",
        "name": "cd",
        "uid": owner["metadata"]["uid"],
    }


def test_dependents_go_with_their_owner(wire: Wire) -> None:
    ref = owner_ref(wire("POST", CDS, compute_domain()).body)
    template = json.loads(SPACED_TEMPLATE)
    template["metadata"] = {"name": "t", "namespace": "team", "ownerReferences": [ref]}
    wire("POST", TEMPLATES, template)
    wire("DELETE", f"{CDS}/cd")
    assert wire("GET", f"{TEMPLATES}/t").status == 404


def test_foreground_and_orphan_propagation(wire: Wire) -> None:
    """Foreground: the owner waits (foregroundDeletion) for its dependents; Orphan: they stay, unowned."""
    ref = owner_ref(wire("POST", CDS, compute_domain()).body)
    template = json.loads(SPACED_TEMPLATE)
    template["metadata"]["ownerReferences"] = [ref]
    wire("POST", TEMPLATES, raw=json.dumps(template, separators=(",", ":")))  # compact: patchable
    waiting = wire("DELETE", f"{CDS}/cd", {"propagationPolicy": "Foreground"}).body
    assert waiting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert wire("GET", f"{TEMPLATES}/t").body["metadata"]["deletionTimestamp"]  # held by its finalizer
    merge = "application/merge-patch+json"
    wire("PATCH", f"{TEMPLATES}/t", {"metadata": {"finalizers": None}}, content_type=merge)
    assert (wire("GET", f"{TEMPLATES}/t").status, wire("GET", f"{CDS}/cd").status) == (404, 404)
    owner = wire("POST", CDS, compute_domain()).body
    ref["uid"] = owner["metadata"]["uid"]
    template["metadata"] = {"name": "u", "namespace": "team", "ownerReferences": [ref]}
    wire("POST", TEMPLATES, template)
    assert wire("DELETE", f"{CDS}/cd?propagationPolicy=Orphan").status == 200
    assert "ownerReferences" not in wire("GET", f"{TEMPLATES}/u").body["metadata"]
    assert wire("DELETE", f"{TEMPLATES}/u", {"propagationPolicy": "Sometimes"}).status == 422


def test_unserved_versions_are_404_for_every_resource_k8s_io_kind() -> None:
    with ApiServer(FakeKube(served_versions=("v1beta1",), kubernetes_version=(1, 32))) as srv:
        wire = Wire(srv)
        for plural in ("resourceclaimtemplates", "resourceclaims"):
            assert wire("GET", f"/apis/resource.k8s.io/v1/namespaces/a/{plural}").status == 404
            assert wire("GET", f"/apis/resource.k8s.io/v1beta1/namespaces/a/{plural}").status == 200
        assert wire("GET", "/apis/resource.k8s.io/v1/deviceclasses").status == 404
        assert wire("GET", "/apis/resource.k8s.io/v1/resourceslices").status == 404


# --- the same rules in memory --------------------------------------------------------------------


def test_the_in_memory_fake_enforces_the_same_rules() -> None:
    kube = FakeKube()
    for crd in chart_crds():
        kube.objects.install_crd(crd)
    created = kube.create_object(CD_TYPE, compute_domain())
    unconditional = {
        **created,
        "metadata": {k: v for k, v in created["metadata"].items() if k != "resourceVersion"},
    }
    with pytest.raises(KubeApiError, match="must be specified for an update") as info:
        kube.update_object(CD_TYPE, unconditional, status=True)
    assert info.value.status == 422
    kube.update_object(CD_TYPE, {**created, "status": {"status": "Ready"}}, status=True)
    with pytest.raises(KubeConflict, match="the object has been modified"):
        kube.update_object(CD_TYPE, {**created, "status": {"status": "NotReady"}}, status=True)
    with pytest.raises(KubeApiError, match="unknown format"):
        kube.patch_object(CD_TYPE, "cd", {"metadata": {}}, "team", patch_type="strategic")
    template = kube.create_object(RESOURCE_CLAIM_TEMPLATES, json.loads(SPACED_TEMPLATE))
    template["spec"]["spec"]["devices"]["requests"] = []
    with pytest.raises(KubeApiError, match="field is immutable"):
        kube.update_object(RESOURCE_CLAIM_TEMPLATES, template)
