"""RBAC in the test API server: Roles and bindings evaluated as the kube-apiserver's authorizer does."""

from __future__ import annotations

from typing import Any

import pytest

from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.testing_rbac import Attributes, Rbac, forbidden_message, service_account_user
from tests.kubeletplugin.wire import Wire

SA = service_account_user("drv", "plugin")
NO_PATCH = (
    f'nodes "n1" is forbidden: User "{SA}" cannot patch resource "nodes" in API group "" at the cluster scope'
)


def role(kind: str, name: str, rules: list[dict[str, Any]], namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def binding(
    kind: str, name: str, role_kind: str, namespace: str = "", subjects: Any = None
) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "subjects": subjects or [{"kind": "ServiceAccount", "name": "plugin", "namespace": "drv"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
    }


def ask(
    verb: str, resource: str, *, group: str = "", namespace: str = "", name: str = "", user: str = SA
) -> Attributes:
    plural, _, sub = resource.partition("/")
    return Attributes(
        user=user,
        verb=verb,
        api_group=group,
        resource=plural,
        subresource=sub,
        namespace=namespace,
        name=name,
    )


def test_a_role_grants_in_its_namespace_only() -> None:
    rbac = Rbac(
        [
            role(
                "Role",
                "r",
                [{"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list"]}],
                "drv",
            ),
            binding("RoleBinding", "r", "Role", "drv"),
        ]
    )
    assert rbac.allows(ask("get", "daemonsets", group="apps", namespace="drv", name="x"))
    assert not rbac.allows(ask("get", "daemonsets", group="apps", namespace="other", name="x"))
    assert not rbac.allows(ask("list", "daemonsets", group="apps"))  # all namespaces: cluster scope
    assert not rbac.allows(ask("delete", "daemonsets", group="apps", namespace="drv", name="x"))
    assert not rbac.allows(ask("get", "daemonsets", group="", namespace="drv", name="x"))


def test_a_cluster_role_via_role_binding_is_namespaced_via_cluster_role_binding_is_everywhere() -> None:
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    by_role_binding = Rbac(
        [role("ClusterRole", "c", rules), binding("RoleBinding", "c", "ClusterRole", "drv")]
    )
    assert by_role_binding.allows(ask("get", "pods", namespace="drv", name="p"))
    assert not by_role_binding.allows(ask("get", "pods", namespace="x", name="p"))
    everywhere = Rbac([role("ClusterRole", "c", rules), binding("ClusterRoleBinding", "c", "ClusterRole")])
    assert everywhere.allows(ask("get", "pods", namespace="x", name="p"))
    assert not everywhere.allows(
        ask("get", "pods", namespace="x", name="p", user=service_account_user("drv", "other"))
    )


def test_subresources_wildcards_resource_names_and_groups() -> None:
    rules = [
        {"apiGroups": ["resource.nvidia.com"], "resources": ["computedomains"], "verbs": ["get"]},
        {"apiGroups": ["resource.nvidia.com"], "resources": ["*/status"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"], "resourceNames": ["n1"]},
        {"apiGroups": ["*"], "resources": ["leases"], "verbs": ["*"]},
    ]
    group_subject = [{"kind": "Group", "name": "system:serviceaccounts:drv"}]
    rbac = Rbac(
        [
            role("ClusterRole", "c", rules),
            binding("ClusterRoleBinding", "c", "ClusterRole", subjects=group_subject),
        ]
    )
    cd = "resource.nvidia.com"
    assert rbac.allows(ask("get", "computedomains", group=cd, namespace="a", name="x"))
    assert not rbac.allows(ask("get", "computedomains/status", group=cd, namespace="a", name="x"))
    assert rbac.allows(ask("update", "computedomains/status", group=cd, namespace="a", name="x"))
    assert not rbac.allows(ask("update", "computedomains", group=cd, namespace="a", name="x"))
    assert rbac.allows(ask("patch", "nodes", name="n1"))
    assert not rbac.allows(ask("patch", "nodes", name="n2"))
    assert rbac.allows(ask("delete", "leases", group="coordination.k8s.io", namespace="a", name="l"))
    assert not rbac.allows(ask("get", "nodes", name="n1", user="someone"))


def test_bad_bindings_are_refused_with_their_name() -> None:
    with pytest.raises(
        ValueError, match="ClusterRoleBinding /c: a ClusterRoleBinding can only reference a ClusterRole"
    ):
        Rbac([binding("ClusterRoleBinding", "c", "Role")])
    with pytest.raises(ValueError, match="a rule needs verbs"):
        Rbac([role("ClusterRole", "c", [{"apiGroups": [""], "resources": ["pods"]}])])


def test_forbidden_messages_are_the_apiservers() -> None:
    assert forbidden_message(ask("patch", "nodes", name="n1")) == NO_PATCH
    assert forbidden_message(
        ask("update", "computedomains/status", group="resource.nvidia.com", namespace="a", name="x")
    ) == (
        f'computedomains.resource.nvidia.com "x" is forbidden: User "{SA}" cannot update resource '
        '"computedomains/status" in API group "resource.nvidia.com" in the namespace "a"'
    )
    assert forbidden_message(ask("list", "pods", namespace="a")).startswith(
        f'pods is forbidden: User "{SA}" cannot list'
    )


def test_the_server_authenticates_tokens_authorizes_and_audits() -> None:
    rbac = Rbac(
        [
            role("ClusterRole", "plugin", [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]),
            binding("ClusterRoleBinding", "plugin", "ClusterRole"),
        ]
    )
    with ApiServer(FakeKube(), token="admin", rbac=rbac) as server:
        token = server.add_service_account("drv", "plugin")
        Wire(server, "admin")("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}})
        plugin = Wire(server, token)
        assert plugin("GET", "/api/v1/nodes/n1").status == 200
        assert plugin("GET", "/version").status == 200  # discovery is open to the authenticated
        denied = plugin(
            "PATCH", "/api/v1/nodes/n1", {"metadata": {}}, content_type="application/merge-patch+json"
        )
        assert (denied.status, denied.body["reason"]) == (403, "Forbidden")
        assert denied.message == NO_PATCH
        assert Wire(server, "wrong")("GET", "/api/v1/nodes/n1").status == 401
        assert Wire(server)("GET", "/api/v1/nodes/n1").status == 401
        used = [(a.verb, a.resource, a.name) for a in server.audit(SA) if a.resource]
        assert used == [("get", "nodes", "n1")]
        assert [a.verb for a in server.audit("system:admin")] == ["create"]
