"""ResourceClaim status writes in the test API server need what a 1.36 kube-apiserver checks.

Found on a real Kubernetes 1.36.2 cluster: the GPU plugin, granted ``update`` on
``resourceclaims/status`` only, got ``HTTP 422 … status.devices: Forbidden: changing status.devices
requires resource="resourceclaims/driver", verb="[associated-node:update arbitrary-node:update]"``
for every prepared claim, while the in-process server accepted the write.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.testing_claimstatus import allocated_node, claim_status_denial, modified_drivers
from nvdra.kubeletplugin.testing_rbac import Rbac, service_account_user
from tests.kubeletplugin.test_apiserver_rbac import binding, role
from tests.kubeletplugin.wire import Wire

DRIVER = "gpu.nvidia.com"
NODE = "node-a"
SA = service_account_user("drv", "plugin")
PATH = "/apis/resource.k8s.io/v1/namespaces/team/resourceclaims/c1/status"
STATUS_RULE = {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims/status"], "verbs": ["update"]}
DRIVER_RULE = {
    "apiGroups": ["resource.k8s.io"],
    "resources": ["resourceclaims/driver"],
    "resourceNames": [DRIVER],
    "verbs": ["associated-node:update"],
}
JsonObject = dict[str, Any]


def claim(node: str | None = NODE) -> JsonObject:
    """An allocated claim as the scheduler leaves it: one GPU, pinned to ``node`` by a field selector."""
    allocation: JsonObject = {
        "devices": {"results": [{"request": "gpu", "driver": DRIVER, "pool": NODE, "device": "gpu-0"}]}
    }
    if node is not None:
        allocation["nodeSelector"] = {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        }
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c1", "namespace": "team"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}},
        "status": {"allocation": allocation},
    }


def with_device(obj: JsonObject, driver: str = DRIVER, device: str = "gpu-0", **data: Any) -> JsonObject:
    out = copy.deepcopy(obj)
    out["status"].setdefault("devices", []).append(
        {"driver": driver, "pool": NODE, "device": device, **({"data": data} if data else {})}
    )
    return out


class Cluster:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.admin = Wire(server, "admin")

    def seed(self, obj: JsonObject) -> JsonObject:
        created = self.admin("POST", "/apis/resource.k8s.io/v1/namespaces/team/resourceclaims", obj)
        assert created.status == 201, created
        status = self.admin("PUT", PATH, {**obj, "metadata": created.body["metadata"]})
        assert status.status == 200, status
        body: JsonObject = status.body
        return body

    def put_status(self, token: str, obj: JsonObject) -> Any:
        return Wire(self.server, token)("PUT", PATH, obj)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    rbac = Rbac(
        [
            role("ClusterRole", "plugin", [STATUS_RULE, DRIVER_RULE]),
            binding("ClusterRoleBinding", "plugin", "ClusterRole"),
        ]
    )
    with ApiServer(FakeKube(), token="admin", rbac=rbac) as server:
        yield Cluster(server)


def test_the_plugin_on_the_claims_node_may_write_its_drivers_device_status(cluster: Cluster) -> None:
    current = cluster.seed(claim())
    token = cluster.server.add_service_account("drv", "plugin", node=NODE)
    answer = cluster.put_status(token, with_device(current, uuid="GPU-1"))
    assert answer.status == 200, answer
    assert answer.body["status"]["devices"][0]["data"] == {"uuid": "GPU-1"}
    synthetic = [a for a in cluster.server.audit(SA) if a.subresource == "driver"]
    assert [(a.verb, a.name, a.namespace) for a in synthetic] == [("associated-node:update", DRIVER, "team")]


def test_status_update_alone_is_refused_as_a_real_apiserver_refuses_it() -> None:
    rbac = Rbac(
        [role("ClusterRole", "plugin", [STATUS_RULE]), binding("ClusterRoleBinding", "plugin", "ClusterRole")]
    )
    with ApiServer(FakeKube(), token="admin", rbac=rbac) as server:
        current = Cluster(server).seed(claim())
        token = server.add_service_account("drv", "plugin", node=NODE)
        answer = Cluster(server).put_status(token, with_device(current))
    assert (answer.status, answer.body["reason"]) == (422, "Invalid")
    assert answer.message == (
        'ResourceClaim.resource.k8s.io "c1" is invalid: status.devices: Forbidden: changing status.devices '
        'requires resource="resourceclaims/driver", verb="[associated-node:update arbitrary-node:update]" '
        'permission: resourceclaims.resource.k8s.io "gpu.nvidia.com" is forbidden: User '
        f'"{SA}" cannot associated-node:update resource "resourceclaims/driver" in API group '
        '"resource.k8s.io" in the namespace "team"'
    )


@pytest.mark.parametrize(
    ("token_node", "claim_node"),
    [(None, NODE), ("node-b", NODE), (NODE, None)],
    ids=["token-without-node", "token-of-another-node", "claim-not-pinned-to-a-node"],
)
def test_associated_node_needs_the_tokens_node_to_be_the_claims(
    cluster: Cluster, token_node: str | None, claim_node: str | None
) -> None:
    current = cluster.seed(claim(claim_node))
    token = cluster.server.add_service_account("drv", "plugin", node=token_node)
    answer = cluster.put_status(token, with_device(current))
    assert answer.status == 422
    assert 'verb="[arbitrary-node:update]"' in answer.message
    assert "cannot arbitrary-node:update" in answer.message


def test_another_drivers_entries_need_that_drivers_permission(cluster: Cluster) -> None:
    current = cluster.seed(claim())
    token = cluster.server.add_service_account("drv", "plugin", node=NODE)
    answer = cluster.put_status(token, with_device(current, driver="other.example.com", device="nic-0"))
    assert answer.status == 422 and 'resourceclaims.resource.k8s.io "other.example.com"' in answer.message
    # An entry of another driver that stays as it is needs nothing; removing it does.
    seeded = cluster.admin("PUT", PATH, with_device(current, driver="other.example.com", device="nic-0"))
    assert seeded.status == 200
    mine = with_device(seeded.body)
    assert cluster.put_status(token, mine).status == 200
    latest = cluster.admin("GET", PATH.removesuffix("/status")).body
    dropped = copy.deepcopy(latest)
    dropped["status"]["devices"] = [d for d in latest["status"]["devices"] if d["driver"] == DRIVER]
    refused = cluster.put_status(token, dropped)
    assert refused.status == 422 and '"other.example.com"' in refused.message


def test_allocation_and_reserved_for_need_the_binding_subresource(cluster: Cluster) -> None:
    current = cluster.seed(claim())
    token = cluster.server.add_service_account("drv", "plugin", node=NODE)
    reserved = copy.deepcopy(current)
    reserved["status"]["reservedFor"] = [{"resource": "pods", "name": "p", "uid": "u1"}]
    answer = cluster.put_status(token, reserved)
    assert answer.status == 422
    assert answer.message.startswith(
        'ResourceClaim.resource.k8s.io "c1" is invalid: status.allocation: Forbidden: changing '
        'status.allocation or status.reservedFor requires resource="resourceclaims/binding", verb="update"'
    )
    assert cluster.admin("PUT", PATH, reserved).status == 200  # system:masters is never asked


def test_the_pure_rules() -> None:
    old = claim()
    assert modified_drivers(with_device(old)["status"], old["status"]) == [DRIVER]
    same = with_device(old, uuid="x")
    assert modified_drivers(same["status"], copy.deepcopy(same)["status"]) == []
    assert modified_drivers(with_device(old, uuid="y")["status"], same["status"]) == [DRIVER]
    assert allocated_node(old["status"]) == NODE
    two_terms = copy.deepcopy(old)
    terms = two_terms["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"]
    terms.append(terms[0])
    assert allocated_node(two_terms["status"]) == ""
    # Not allocated: device status is not checked (the apiserver drops it with the allocation).
    unallocated = {
        "metadata": {},
        "status": {"devices": [{"driver": DRIVER, "pool": NODE, "device": "gpu-0"}]},
    }
    denial = claim_status_denial(
        lambda _: False,
        user=SA,
        extra={},
        verb="update",
        claim_name="c1",
        namespace="team",
        new=unallocated,
        old={"status": {}},
    )
    assert denial is None
