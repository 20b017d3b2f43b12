"""The nvdra chart, rendered by Helm's engine for the main value combinations and schema-checked.

Every rendered object of every documented option is validated (strict: unknown fields are errors)
against the Kubernetes OpenAPI schemas of 1.32 to 1.36; the objects' wiring is checked against the code
they run: env vars and arguments parse with the real click commands, and the commands are console
scripts of this package.
"""

from __future__ import annotations

import base64
import tomllib
from typing import Any

import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.plugins.webhook import RESOURCE_VERSIONS, VALIDATE_PATH
from tests.deploy.helm import REPO, crds, find, render
from tests.deploy.schemas import KUBE_VERSIONS, RESOURCE_API, crd_schemas, problems

CERT_MANAGER = ("cert-manager.io/v1",)
GPUS = {"resources": {"gpus": {"enabled": True}}}
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

# name → (values, extra API versions the cluster serves)
COMBOS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "defaults: ComputeDomains only": ({}, ()),
    "both plugins": (GPUS, ()),
    "GPU only": ({"resources": {"gpus": {"enabled": True}, "computeDomains": {"enabled": False}}}, ()),
    "webhook with cert-manager": ({"webhook": {"enabled": True}}, CERT_MANAGER),
    "webhook with a cluster issuer": (
        {
            "webhook": {
                "enabled": True,
                "tls": {"certManager": {"issuerType": "clusterissuer", "issuerName": "ca"}},
            }
        },
        CERT_MANAGER,
    ),
    "webhook with a secret": (
        {"webhook": {"enabled": True, "tls": {"mode": "secret", "secret": {"name": "tls", "caBundle": PEM}}}},
        (),
    ),
    "simulate": ({**GPUS, "simulate": "dgx-h100"}, ()),
    "fabric partitions": (
        {**GPUS, "featureGates": {"FabricTopologySupport": True}, "publishFabricPartitions": True},
        (),
    ),
    "namespace override": (
        {**GPUS, "namespaceOverride": "gpu-system", "webhook": {"enabled": True}},
        CERT_MANAGER,
    ),
    "real node: GPU Operator driver root, passthrough, Fabric Manager socket": (
        {
            **GPUS,
            "nvidiaDriverRoot": "/run/nvidia/driver",
            "featureGates": {"PassthroughSupport": True, "FabricTopologySupport": True},
            "kubeletPlugin": {"containers": {"gpus": {"fabricManager": {"access": "socket"}}}},
        },
        (),
    ),
    "real node: Fabric Manager over TCP (host network)": (
        {
            **GPUS,
            "featureGates": {"FabricManagerPartitioning": True},
            "kubeletPlugin": {
                "containers": {
                    "gpus": {"fabricManager": {"access": "tcp", "libraryPath": "/opt/libnvfm.so.1"}}
                }
            },
        },
        (),
    ),
    "existing namespace, own account names": (
        {"namespaceOverride": "gpu-system", "createNamespace": False, "serviceAccount": {"name": "dra"}},
        (),
    ),
    "simulate with passthrough": (
        {**GPUS, "simulate": "dgx-h100", "featureGates": {"PassthroughSupport": True}},
        (),
    ),
    "gates, verbosity, pull secrets": (
        {
            **GPUS,
            "featureGates": {"MPSSupport": True, "TimeSlicingSettings": True, "FabricTopologySupport": True},
            "logVerbosity": 2,
            "imagePullSecrets": [{"name": "regcred"}],
            "controller": {"leaderElection": {"enabled": True}},
        },
        (),
    ),
}


def rendered(name: str, kube: str = "1.34.0") -> list[dict[str, Any]]:
    """One combination as ``helm template`` renders it for a cluster of version ``kube``."""
    values, apis = COMBOS[name]
    values = {"resourceApiVersion": RESOURCE_API[kube], **values}
    return render(values, kube_version=f"v{kube}", api_versions=apis)


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("DaemonSet", "Deployment")]


def containers(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, dict[str, Any]]:
    (obj,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    spec = obj["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", COMBOS)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(name: str, kube: str) -> None:
    """All objects pass strict OpenAPI validation; only cert-manager's (no CRD schema here) go unchecked."""
    custom = crd_schemas(crds())
    unchecked = []
    for doc in rendered(name, kube):
        found = problems(doc, kube, custom)
        if found is None:
            unchecked.append(doc)
            continue
        assert found == [], f"{doc['kind']} {doc['metadata']['name']}: {found}"
    assert {d["apiVersion"] for d in unchecked} <= {"cert-manager.io/v1"}


@pytest.mark.parametrize(
    ("name", "containers_", "classes"),
    [
        ("defaults: ComputeDomains only", ["compute-domains"], {"compute-domain-daemon.nvidia.com"}),
        (
            "both plugins",
            ["compute-domains", "gpus"],
            {"gpu.nvidia.com", "mig.nvidia.com", "vfio.gpu.nvidia.com"},
        ),
        ("GPU only", ["gpus"], {"gpu.nvidia.com", "mig.nvidia.com", "vfio.gpu.nvidia.com"}),
    ],
)
def test_plugins_and_classes_follow_the_enabled_resources(
    name: str, containers_: list[str], classes: set[str]
) -> None:
    """One plugin container per enabled side; DeviceClasses and the controller only for enabled sides."""
    docs = rendered(name)
    plugin = containers(docs, "DaemonSet", "-kubelet-plugin")
    assert [c for c in plugin if c != "init-driver-root"] == containers_
    names = {d["metadata"]["name"] for d in find(docs, "DeviceClass")}
    assert classes <= names
    cd_on = "compute-domains" in containers_
    assert ("compute-domain-default-channel.nvidia.com" in names) is cd_on
    assert ("gpu.nvidia.com" in names) is ("gpus" in containers_)
    assert bool(find(docs, "Deployment", "nvdra-controller")) is cd_on


def test_device_classes_use_v1_with_the_extended_resource_name() -> None:
    """On a v1 cluster the classes are v1 and gpu.nvidia.com backs the extended resource nvidia.com/gpu."""
    classes = {d["metadata"]["name"]: d for d in find(rendered("both plugins"), "DeviceClass")}
    assert {d["apiVersion"] for d in classes.values()} == {"resource.k8s.io/v1"}
    assert classes["gpu.nvidia.com"]["spec"]["extendedResourceName"] == "nvidia.com/gpu"
    assert all("extendedResourceName" not in d["spec"] for n, d in classes.items() if n != "gpu.nvidia.com")
    expr = classes["compute-domain-default-channel.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"]
    assert "type == 'channel'" in expr
    assert ".id == 0" in expr


@pytest.mark.parametrize("api", ["resource.k8s.io/v1beta1", "resource.k8s.io/v1beta2"])
def test_forced_older_api_version_renders_valid_classes_without_extended_resources(api: str) -> None:
    """resourceApiVersion sets the classes' version (1.32/1.33); v1beta* lack extendedResourceName."""
    docs = render({**GPUS, "resourceApiVersion": api})
    classes = find(docs, "DeviceClass")
    assert len(classes) == 5
    for doc in classes:
        assert doc["apiVersion"] == api
        assert "extendedResourceName" not in doc["spec"]
        assert problems(doc, "1.34.0", {}) == []


def test_policy_restricts_the_account_the_plugin_pods_really_use() -> None:
    """The ValidatingAdmissionPolicy matches the DaemonSet's service account (upstream matched another)."""
    docs = render({**GPUS, "serviceAccount": {"name": "custom"}})
    (ds,) = find(docs, "DaemonSet")
    account = ds["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == "custom-kubeletplugin"
    assert find(docs, "ServiceAccount", account)
    (policy,) = find(docs, "ValidatingAdmissionPolicy", "resourceslices-policy-nvdra")
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == f'request.userInfo.username == "system:serviceaccount:nvdra:{account}"'
    (binding,) = find(docs, "ValidatingAdmissionPolicyBinding", policy["metadata"]["name"])
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (nodes,) = find(docs, "ValidatingAdmissionPolicy", "nodes-policy-nvdra")
    assert f'"system:serviceaccount:nvdra:{account}"' in nodes["spec"]["matchConditions"][0]["expression"]


@pytest.mark.parametrize("name", COMBOS)
def test_every_pod_runs_as_a_rendered_service_account_and_a_shipped_command(name: str) -> None:
    """Pods name accounts the chart creates, and commands that the image provides."""
    docs = rendered(name)
    accounts = {d["metadata"]["name"] for d in find(docs, "ServiceAccount")}
    scripts = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    dockerfile = (REPO / "deployments" / "container" / "Dockerfile").read_text()
    for spec in pod_specs(docs):
        assert spec["serviceAccountName"] in accounts
        for ctr in spec.get("initContainers", []) + spec["containers"]:
            command = ctr["command"][0]
            assert command in scripts or f" {command}\n" in dockerfile, command


def _parse(command: Any, ctr: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse a container's args and env with the real click command (fieldRefs get sample values)."""
    for env in ctr.get("env", []):
        monkeypatch.setenv(env["name"], env.get("value", "from-field-ref"))
    ctx = command.make_context(ctr["command"][0], list(ctr.get("args", [])))
    return dict(ctx.params)


def test_gpu_plugin_container_parses_with_the_plugin_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every env var of the gpus container is one of nvdra-gpu-plugin's (or the NVIDIA runtime's)."""
    from nvdra.plugins.gpu.main import main as gpu_main

    ctr = containers(rendered("gates, verbosity, pull secrets"), "DaemonSet", "-kubelet-plugin")["gpus"]
    known = {
        e for p in gpu_main.params for e in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])
    }
    runtime_only = {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_MIG_CONFIG_DEVICES"}
    assert {e["name"] for e in ctr["env"]} - runtime_only <= known
    params = _parse(gpu_main, ctr, monkeypatch)
    assert params["verbosity"] == 2
    assert params["cdi_root"] == "/var/run/cdi"
    assert params["healthcheck_port"] == 51516
    assert params["image_name"] == "nvdra:v0.1.0"
    gates = parse_feature_gates(params["feature_gates"])
    assert gates.enabled("MPSSupport")
    assert gates.enabled("FabricTopologySupport")
    probe = ctr["livenessProbe"]["grpc"]
    assert (probe["port"], probe["service"]) == (51516, "liveness")


def _env_names(command: Any) -> set[str]:
    return {e for p in command.params for e in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])}


def test_compute_domain_containers_parse_with_their_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CD plugin and controller containers' env and args parse with nvdra-cd-plugin/-controller."""
    plugin_main = pytest.importorskip("nvdra.plugins.computedomain.plugin_main").main
    controller_main = pytest.importorskip("nvdra.plugins.computedomain.controller_main").main
    docs = rendered("gates, verbosity, pull secrets")
    plugin = containers(docs, "DaemonSet", "-kubelet-plugin")["compute-domains"]
    assert {e["name"] for e in plugin["env"]} - {"NVIDIA_VISIBLE_DEVICES"} <= _env_names(plugin_main)
    params = _parse(plugin_main, plugin, monkeypatch)
    assert (params["healthcheck_port"], params["verbosity"]) == (51515, 2)
    controller = containers(docs, "Deployment", "-controller")["compute-domain"]
    assert {e["name"] for e in controller["env"]} <= _env_names(controller_main)
    params = _parse(controller_main, controller, monkeypatch)
    assert params["leader_election_enabled"] is True
    assert params["leader_election_lease_duration"] == 15.0
    assert params["image_name"] == "nvdra:v0.1.0"


def test_webhook_deployment_parses_with_the_webhook_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook's args and FEATURE_GATES parse with nvdra-webhook; the port matches the Service."""
    from nvdra.plugins.webhook.main import main as webhook_main

    docs = render(
        {"webhook": {"enabled": True}, "featureGates": {"MPSSupport": True}}, api_versions=CERT_MANAGER
    )
    ctr = containers(docs, "Deployment", "-webhook")["webhook"]
    params = _parse(webhook_main, ctr, monkeypatch)
    assert params["port"] == 8443
    assert str(params["tls_cert_file"]) == "/cert/tls.crt"
    assert params["feature_gates"] == "MPSSupport=true"
    (service,) = find(docs, "Service")
    assert service["spec"]["ports"][0]["port"] == 443
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_webhook_registration_matches_the_server() -> None:
    """The webhook registration sends v1/v1beta2/v1beta1 claims and templates to the server's path."""
    docs = rendered("webhook with cert-manager")
    (config,) = find(docs, "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["clientConfig"]["service"]["path"] == VALIDATE_PATH
    (rule,) = hook["rules"]
    assert tuple(rule["apiVersions"]) == RESOURCE_VERSIONS
    assert sorted(rule["resources"]) == ["resourceclaims", "resourceclaimtemplates"]
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "nvdra/nvdra-webhook-cert"
    (cert,) = find(docs, "Certificate")
    assert "nvdra-webhook.nvdra.svc" in cert["spec"]["dnsNames"]
    assert cert["spec"]["issuerRef"]["name"] == find(docs, "Issuer")[0]["metadata"]["name"]
    (deployment,) = find(docs, "Deployment", "nvdra-webhook")
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"]


def test_cluster_issuer_and_secret_modes() -> None:
    """A named ClusterIssuer signs the certificate; secret mode mounts the Secret and encodes a PEM CA."""
    (cert,) = find(rendered("webhook with a cluster issuer"), "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    docs = rendered("webhook with a secret")
    assert not find(docs, "Certificate")
    (config,) = find(docs, "ValidatingWebhookConfiguration")
    assert "annotations" not in config["metadata"]
    assert base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]).decode() == PEM


def test_simulate_drops_the_driver_wait_and_the_gpu_node_affinity() -> None:
    """With a profile the plugins get NVDRA_SIMULATE, no driver-root init container, no GPU-node affinity."""
    docs = rendered("simulate")
    (ds,) = find(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert "affinity" not in spec
    for ctr in spec["containers"]:
        assert {"name": "NVDRA_SIMULATE", "value": "dgx-h100"} in ctr["env"]
    real = find(rendered("both plugins"), "DaemonSet")[0]["spec"]["template"]["spec"]
    assert real["initContainers"][0]["command"] == ["/usr/local/bin/kubelet-plugin-prestart.sh"]
    assert "nodeAffinity" in real["affinity"]


def test_mps_role_only_with_the_mps_gate() -> None:
    """Deployments may be managed by the plugin only where MPSSupport is on (least privilege)."""
    assert not find(rendered("both plugins"), "Role", "nvdra-kubeletplugin-mps")
    (role,) = find(rendered("gates, verbosity, pull secrets"), "Role", "nvdra-kubeletplugin-mps")
    assert role["rules"][0]["resources"] == ["deployments"]


def test_controller_gets_pull_secrets_and_leader_election() -> None:
    """Pull secrets reach the controller (for the daemons it starts) and leader election is switched on."""
    ctr = containers(rendered("gates, verbosity, pull secrets"), "Deployment", "-controller")[
        "compute-domain"
    ]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["CD_DAEMON_IMAGE_PULL_SECRET_NAMES"] == "regcred"
    assert env["LEADER_ELECTION_ENABLED"] == "true"
    assert ctr["args"] == ["-vv"]


def test_crds_in_the_chart_validate() -> None:
    """The ComputeDomain CRDs shipped in crds/ are valid CustomResourceDefinitions."""
    found = crds()
    if not found:
        pytest.skip("deployments/helm/nvdra/crds/ has no CRDs yet (written with the ComputeDomain work)")
    for crd in found:
        for kube in KUBE_VERSIONS:
            assert problems(crd, kube, {}) == [], crd["metadata"]["name"]
