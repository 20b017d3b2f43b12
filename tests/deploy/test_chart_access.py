"""What the chart lets each nvdra process do: RBAC per service account, the Node-label policy, and a
``namespaceOverride`` that really moves every object (and every reference to the namespace).

The grants are the calls the code makes (see the rbac-*.yaml headers and docs/install.md); the
ValidatingAdmissionPolicy on Nodes is evaluated here with a CEL engine on the requests a kube-apiserver
would admit, so its logic is checked, not only its shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import cel
import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.imex import DOMAIN_LABEL, Settings
from nvdra.imex.reconcile import Observed, plan
from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.objects import NODES
from nvdra.plugins.computedomain.driver import ComputeDomainDriver
from tests.deploy.helm import find, render, render_files

JsonObject = dict[str, Any]
Grants = dict[tuple[str, str], set[str]]

GPUS = {"resources": {"gpus": {"enabled": True}}}
NS = "nvdra"
PLUGIN = f"system:serviceaccount:{NS}:nvdra-kubeletplugin"
CONTROLLER = f"system:serviceaccount:{NS}:nvdra-controller"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"


def grants(docs: list[JsonObject], account: str, namespace: str = NS) -> tuple[Grants, Grants]:
    """(cluster-wide, namespaced) (group, resource) → verbs of a service account, from its bindings."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("ClusterRole", "Role")}
    cluster: Grants = {}
    local: Grants = {}
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = binding["subjects"]
        if not any(s["name"] == account and s["namespace"] == namespace for s in subjects):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        if binding["kind"] == "RoleBinding":
            assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
        into = cluster if binding["kind"] == "ClusterRoleBinding" else local
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    into.setdefault((group, resource), set()).update(rule["verbs"])
    return cluster, local


def test_kubelet_plugin_accounts_get_exactly_the_verbs_their_calls_need() -> None:
    """Both plugins: claims get, own slices, own Node get/watch; the CD plugin patches (never updates)
    its Node's labels and reads ComputeDomains and cliques. MPS Deployments only with MPSSupport."""
    cluster, local = grants(render(GPUS), "nvdra-kubeletplugin")
    assert cluster == {
        ("resource.k8s.io", "resourceclaims"): {"get"},
        ("resource.k8s.io", "resourceclaims/status"): {"update"},  # the GPU plugin's device status
        # ... which 1.36 also checks per driver (only gpu.nvidia.com: see the test below)
        ("resource.k8s.io", "resourceclaims/driver"): {"associated-node:update"},
        ("resource.k8s.io", "resourceslices"): {"list", "create", "update", "delete"},
        ("", "nodes"): {"get", "list", "watch", "patch"},
        ("resource.nvidia.com", "computedomains"): {"get", "list"},
        ("resource.nvidia.com", "computedomaincliques"): {"get"},
    }
    assert local == {}
    gpu_only = render({"resources": {"gpus": {"enabled": True}, "computeDomains": {"enabled": False}}})
    cluster, _ = grants(gpu_only, "nvdra-kubeletplugin")
    assert cluster[("", "nodes")] == {"get", "list", "watch"}
    assert ("resource.nvidia.com", "computedomains") not in cluster
    cluster, _ = grants(render({}), "nvdra-kubeletplugin")
    assert cluster[("", "nodes")] == {"get", "patch"}  # no GPU plugin: nobody watches the Node
    _, local = grants(render({**GPUS, "featureGates": {"MPSSupport": True}}), "nvdra-kubeletplugin")
    assert local == {("apps", "deployments"): {"get", "create", "delete"}}


def test_device_status_is_granted_for_gpu_claims_on_the_plugins_own_node_only() -> None:
    """Kubernetes 1.36 checks a status.devices change per driver on resourceclaims/driver (found on a
    real 1.36.2 apiserver: without the rule every device-status write was a 422). Only the GPU
    plugin's driver, and only ``associated-node`` (the token's node is the claim's), never
    ``arbitrary-node``, which would let a plugin write the status of claims on any node."""
    (plugin,) = find(render(GPUS), "ClusterRole", "nvdra-kubeletplugin")
    rules = [r for r in plugin["rules"] if "resourceclaims/driver" in r["resources"]]
    assert rules == [
        {
            "apiGroups": ["resource.k8s.io"],
            "resources": ["resourceclaims/driver"],
            "resourceNames": ["gpu.nvidia.com"],
            "verbs": ["associated-node:update"],
        }
    ]
    (cd_only,) = find(render({}), "ClusterRole", "nvdra-kubeletplugin")
    assert not [r for r in cd_only["rules"] if "resourceclaims/driver" in r["resources"]]


def test_controller_and_daemon_accounts() -> None:
    """The controller: cluster-wide what lives in users' namespaces (domains, their templates, Nodes),
    namespaced what lives in the driver's; the daemon: read its domain and clique, label its pod."""
    docs = render({})
    cluster, local = grants(docs, "nvdra-controller")
    assert cluster == {
        ("resource.nvidia.com", "computedomains"): {"get", "list", "watch", "patch"},
        ("resource.nvidia.com", "computedomains/status"): {"update"},
        ("resource.k8s.io", "resourceclaimtemplates"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "nodes"): {"get", "list", "watch", "patch"},
    }
    assert local == {
        ("apps", "daemonsets"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "pods"): {"list", "watch"},
        ("resource.nvidia.com", "computedomaincliques"): {"list", "watch", "create", "update", "delete"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    }
    cluster, local = grants(docs, "compute-domain-daemon-service-account")
    assert cluster == {("resource.nvidia.com", "computedomains"): {"list", "watch"}}
    assert local == {
        ("resource.nvidia.com", "computedomaincliques"): {"list", "watch"},
        ("", "pods"): {"patch"},
    }


def test_no_account_may_update_nodes_or_use_wildcards() -> None:
    """Node writes are patches (reviewed by the policy below); no rule grants ``*`` or ``update`` on
    nodes, and the webhook's account has no binding at all."""
    docs = render(
        {
            **GPUS,
            "webhook": {"enabled": True, "tls": {"mode": "secret", "secret": {"name": "t", "caBundle": "x"}}},
        }
    )
    for role in [d for d in docs if d["kind"] in ("ClusterRole", "Role")]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            if "nodes" in rule["resources"]:
                assert "update" not in rule["verbs"], role["metadata"]["name"]
    assert grants(docs, "nvdra-webhook") == ({}, {})
    (webhook,) = find(docs, "Deployment", "nvdra-webhook")
    assert webhook["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# -- the Node policy, evaluated -----------------------------------------------------------------------


def node(name: str, labels: Mapping[str, str], **spec: Any) -> JsonObject:
    """A Node as admission sees it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels), "annotations": {"a": "1"}},
        "spec": dict(spec),
    }


def admit(
    policy: JsonObject, user: str, old: JsonObject, new: JsonObject, node_name: str | None
) -> list[str]:
    """Evaluate the policy on an UPDATE of ``old`` to ``new`` by ``user``: the messages of the failed
    validations (empty: admitted); ``["<not matched>"]`` when the policy does not apply."""
    extra = {NODE_NAME_KEY: [node_name]} if node_name is not None else {}
    request = {"userInfo": {"username": user, "extra": extra}, "operation": "UPDATE"}
    spec = policy["spec"]
    context = cel.Context()
    context.add_variable("request", request)
    context.add_variable("object", new)
    context.add_variable("oldObject", old)
    if not all(cel.evaluate(c["expression"], context) for c in spec["matchConditions"]):
        return ["<not matched>"]
    variables: dict[str, Any] = {}
    for variable in spec["variables"]:
        context.add_variable("variables", variables)
        variables[variable["name"]] = cel.evaluate(variable["expression"], context)
    context.add_variable("variables", variables)
    failed = []
    for validation in spec["validations"]:
        if cel.evaluate(validation["expression"], context) is not True:
            if "messageExpression" in validation:
                failed.append(str(cel.evaluate(validation["messageExpression"], context)))
            else:
                failed.append(validation["message"])
    return failed


@pytest.fixture(scope="module")
def node_policy() -> JsonObject:
    """The rendered Node policy (ComputeDomains on, as by default)."""
    (policy,) = find(render(GPUS), "ValidatingAdmissionPolicy", "nodes-policy-nvdra")
    (binding,) = find(render(GPUS), "ValidatingAdmissionPolicyBinding", "nodes-policy-nvdra")
    assert binding["spec"] == {"policyName": "nodes-policy-nvdra", "validationActions": ["Deny"]}
    rule = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}
    ]
    return policy


BASE = {"kubernetes.io/hostname": "n1", "resource.nvidia.com/computeDomain": "old"}


@pytest.mark.parametrize(
    ("case", "user", "new_labels", "spec", "token_node", "denied"),
    [
        ("plugin adds a CD label", PLUGIN, {**BASE, "resource.nvidia.com/computeDomain": "u1"}, {}, "n1", ""),
        ("plugin removes a CD label", PLUGIN, {"kubernetes.io/hostname": "n1"}, {}, "n1", ""),
        (
            "plugin on another node",
            PLUGIN,
            {**BASE, "resource.nvidia.com/x": "1"},
            {},
            "n2",
            "node n2 may not",
        ),
        ("token without a node", PLUGIN, {**BASE, "resource.nvidia.com/x": "1"}, {}, None, "no node name"),
        ("plugin sets a foreign label", PLUGIN, {**BASE, "team": "a"}, {}, "n1", "only labels under"),
        ("plugin changes a foreign label", PLUGIN, {**BASE, "kubernetes.io/hostname": "x"}, {}, "n1", "only"),
        ("plugin taints the node", PLUGIN, BASE, {"unschedulable": True}, "n1", "not its spec"),
        ("controller unlabels any node", CONTROLLER, {"kubernetes.io/hostname": "n1"}, {}, None, ""),
        (
            "controller removes a foreign label",
            CONTROLLER,
            {"resource.nvidia.com/computeDomain": "old"},
            {},
            None,
            "only",
        ),
        ("someone else", "system:node:n1", {"team": "a"}, {"unschedulable": True}, "n1", "<not matched>"),
    ],
)
def test_node_policy_admits_only_own_node_nvidia_labels(
    node_policy: JsonObject,
    case: str,
    user: str,
    new_labels: dict[str, str],
    spec: dict[str, Any],
    token_node: str | None,
    denied: str,
) -> None:
    """Each case is an UPDATE of node n1 (a PATCH reaches admission as one)."""
    failed = admit(node_policy, user, node("n1", BASE), node("n1", new_labels, **spec), token_node)
    if denied:
        assert failed and any(denied in m for m in failed), (case, failed)
    else:
        assert failed == [], (case, failed)


def test_node_policy_is_left_out_without_compute_domains() -> None:
    """Without the CD side no account may patch Nodes, so there is nothing to police."""
    docs = render({"resources": {"gpus": {"enabled": True}, "computeDomains": {"enabled": False}}})
    assert [p["metadata"]["name"] for p in find(docs, "ValidatingAdmissionPolicy")] == [
        "resourceslices-policy-nvdra"
    ]


# -- namespaceOverride --------------------------------------------------------------------------------


def namespace_references(doc: JsonObject) -> Iterable[str]:
    """Every place an object names a namespace: its own, subjects, the webhook's service, usernames."""
    meta = doc["metadata"]
    if "namespace" in meta:
        yield meta["namespace"]
    for subject in doc.get("subjects", []):
        yield subject["namespace"]
    for hook in doc.get("webhooks", []):
        yield hook["clientConfig"]["service"]["namespace"]
    inject = meta.get("annotations", {}).get("cert-manager.io/inject-ca-from")
    if inject:
        yield inject.partition("/")[0]
    for condition in (
        doc.get("spec", {}).get("matchConditions", []) if isinstance(doc.get("spec"), dict) else []
    ):
        for part in condition["expression"].split("system:serviceaccount:")[1:]:
            yield part.partition(":")[0]


NAMESPACED = {
    "Deployment",
    "DaemonSet",
    "Role",
    "RoleBinding",
    "ServiceAccount",
    "Service",
    "Certificate",
    "Issuer",
}


def test_namespace_override_moves_every_object_and_reference() -> None:
    """With namespaceOverride every namespaced object, subject, service reference and policy username
    uses it; the chart creates the namespace (privileged, for the plugin pods), and the notes say it."""
    values = {**GPUS, "namespaceOverride": "gpu-system", "webhook": {"enabled": True}}
    docs = render(values, api_versions=("cert-manager.io/v1",))
    seen = set()
    for doc in docs:
        refs = set(namespace_references(doc))
        assert refs <= {"gpu-system"}, (doc["kind"], doc["metadata"]["name"], refs)
        seen |= refs
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"]["namespace"] == "gpu-system", (doc["kind"], doc["metadata"]["name"])
    assert seen == {"gpu-system"}
    (namespace,) = find(docs, "Namespace")
    assert namespace["metadata"]["name"] == "gpu-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    controller = find(docs, "Deployment", "nvdra-controller")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in controller["env"]}
    assert env["LEADER_ELECTION_LEASE_LOCK_NAMESPACE"] == "gpu-system"
    notes = render_files(values, api_versions=("cert-manager.io/v1",))["nvdra/templates/NOTES.txt"]
    assert "namespace gpu-system" in notes and "kubectl get pods -n gpu-system" in notes
    assert f"-n {NS}" not in notes


def test_namespace_is_created_only_when_it_is_not_the_release_namespace() -> None:
    """No Namespace object without an override, for an override equal to the release namespace, or
    with createNamespace=false (an existing namespace)."""
    assert not find(render({}), "Namespace")
    assert not find(render({"namespaceOverride": NS}), "Namespace")
    docs = render({"namespaceOverride": "elsewhere", "createNamespace": False})
    assert not find(docs, "Namespace")
    assert {d["metadata"]["namespace"] for d in docs if "namespace" in d["metadata"]} == {"elsewhere"}


def test_the_writes_nvdra_makes_to_nodes_pass_the_policy(node_policy: JsonObject, tmp_path: Path) -> None:
    """The CD plugin's real label and unlabel patches of its Node, and the controller's unlabel of an
    orphaned Node, each applied to a Node with other labels, annotations and a spec: admitted."""
    kube = FakeKube()
    kube.add_node("n1", labels={"kubernetes.io/hostname": "n1", "team": "a"})
    node = kube.get_node("n1")
    node["metadata"]["annotations"] = {"node.alpha.kubernetes.io/ttl": "0"}
    node["spec"] = {"podCIDR": "10.0.0.0/24", "taints": [{"key": "gpu", "effect": "NoSchedule"}]}
    kube.objects.update_object(NODES, node)
    writes: list[tuple[JsonObject, JsonObject]] = []
    real = kube.patch_object

    def recorded(*args: Any, **kw: Any) -> Any:
        before = kube.get_node("n1")
        out = real(*args, **kw)
        writes.append((before, kube.get_node("n1")))
        return out

    kube.patch_object = recorded  # type: ignore[method-assign]
    driver = ComputeDomainDriver(
        node_name="n1",
        clique_id="",
        gates=parse_feature_gates(""),
        store=cast(Any, type("Store", (), {"boot_id": "boot"})()),
        specs=cast(Any, None),
        kube=cast(Any, kube),
        namespace=NS,
        domains_dir=tmp_path,
    )
    driver._set_node_label("u1", add=True)
    driver._set_node_label("u1", add=False)
    assert len(writes) == 2
    assert writes[0][1]["metadata"]["labels"][DOMAIN_LABEL] == "u1"
    assert writes[0][1]["spec"]["taints"] and writes[0][1]["metadata"]["annotations"]  # kept, unchanged
    for old, new in writes:
        assert admit(node_policy, PLUGIN, old, new, "n1") == []
        assert admit(node_policy, PLUGIN, old, new, "n2") != []  # the same write from another node

    driver._set_node_label("u9", add=True)  # a label the controller finds orphaned
    writes.clear()
    actions = plan(Observed(domains=[], nodes=[kube.get_node("n1")]), Settings(namespace=NS))
    (unlabel,) = [a for a in actions if a.kind == "Node"]
    assert unlabel.body is not None
    kube.patch_object(NODES, unlabel.name, unlabel.body)
    ((old, new),) = writes
    assert DOMAIN_LABEL not in new["metadata"]["labels"]
    assert admit(node_policy, CONTROLLER, old, new, None) == []
