"""The quickstart specs: schema-valid for 1.34 and 1.35, configs accepted by the project's decoder and
the webhook, and the user's examples kept in their shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.core.config import load_config
from nvdra.core.featuregates import parse_feature_gates
from nvdra.fabric.requirements import fix_claim
from nvdra.plugins.webhook import admission_gates, config_problems
from tests.deploy.helm import REPO, crds
from tests.deploy.schemas import KUBE_VERSIONS, RESOURCE_API, crd_schemas, problems
from tests.readme_examples import readme_gpu_config

V1_VERSIONS = [v for v in KUBE_VERSIONS if RESOURCE_API[v] == "resource.k8s.io/v1"]
"""The specs are written in resource.k8s.io/v1, which 1.34 and later serve."""

SPECS = REPO / "demo" / "specs" / "quickstart"
FILES = sorted(SPECS.glob("*.yaml"))
# Everything the specs use; each spec's header says which of these it needs.
GATES = parse_feature_gates(
    "TimeSlicingSettings=true,MPSSupport=true,PassthroughSupport=true,FabricTopologySupport=true"
)
USER_README_GPU_CONFIG = readme_gpu_config()  # the README's FabricManager example, as written there


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def claim_specs(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] == "ResourceClaim":
        return dict(doc["spec"])
    if doc["kind"] == "ResourceClaimTemplate":
        return dict(doc["spec"]["spec"])
    return None


def test_the_quickstart_set_is_complete() -> None:
    """The upstream quickstart set's equivalents are all here (plus fabric and ComputeDomain specs)."""
    names = {p.stem for p in FILES}
    expected = {"gpu-test1", "gpu-test2", "gpu-test3", "gpu-test4", "gpu-test5", "gpu-test-mps"}
    expected |= {"gpu-test-timeslicing", "gpu-test-dynamic-mig", "gpu-test-vfio", "gpu-claim-with-fabric"}
    expected |= {f"gpu-test-fabric-{m}" for m in ("baremetal", "fullpassthrough", "sharednvswitch", "vgpu")}
    expected |= {"imex-channel-injection", "imex-multi-node"}
    assert expected <= names


@pytest.mark.parametrize("kube", V1_VERSIONS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_spec_validates_against_the_schemas(path: Path, kube: str) -> None:
    """Every object passes strict OpenAPI validation; ComputeDomains pass the chart's CRD schema."""
    custom = crd_schemas(crds())
    for doc in docs(path):
        found = problems(doc, kube, custom)
        if found is None:
            assert doc["apiVersion"] == "resource.nvidia.com/v1beta1", doc["kind"]
            pytest.skip("the ComputeDomain CRDs are not in deployments/helm/nvdra/crds/ yet")
        assert found == [], f"{doc['kind']} {doc['metadata']['name']}: {found}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_spec_configs_pass_the_decoder_and_the_webhook(path: Path) -> None:
    """Each opaque config loads with nvdra.core.config.load_config, and the webhook admits each claim."""
    for doc in docs(path):
        spec = claim_specs(doc)
        if spec is None:
            continue
        for index, entry in enumerate(spec["devices"].get("config", [])):
            load_config(entry["opaque"]["parameters"], gates=GATES, path=f"{path.name}[{index}]")
        resource = doc["kind"].lower() + "s"
        assert config_problems(doc, resource, admission_gates(GATES)) == []


def test_gpu_test2_keeps_the_readme_shape() -> None:
    """Namespace gpu-test2, pod ``pod``, containers ctr0 and ctr1 sharing one claim from a template."""
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs(SPECS / "gpu-test2.yaml")}
    assert ("Namespace", "gpu-test2") in objects
    pod = objects[("Pod", "pod")]
    assert pod["metadata"]["namespace"] == "gpu-test2"
    (claim,) = pod["spec"]["resourceClaims"]
    assert ("ResourceClaimTemplate", claim["resourceClaimTemplateName"]) in objects
    ctrs = pod["spec"]["containers"]
    assert [c["name"] for c in ctrs] == ["ctr0", "ctr1"]
    assert all(c["resources"]["claims"] == [{"name": claim["name"]}] for c in ctrs)
    assert all("nvidia-smi -L" in c["args"][0] for c in ctrs)


def test_readme_fabric_example_is_kept_as_written() -> None:
    """The translated README example carries the README's GpuConfig unchanged, for 4 GPUs, in v1."""
    (claim,) = [d for d in docs(SPECS / "gpu-claim-with-fabric.yaml") if d["kind"] == "ResourceClaim"]
    assert claim["apiVersion"] == "resource.k8s.io/v1"
    assert claim["metadata"]["name"] == "gpu-claim-with-fabric"
    (request,) = claim["spec"]["devices"]["requests"]
    assert (request["exactly"]["deviceClassName"], request["exactly"]["count"]) == ("gpu.nvidia.com", 4)
    assert fix_claim(claim) == (claim, [])  # every fabric field is said to the scheduler already
    (config,) = claim["spec"]["devices"]["config"]
    assert config["opaque"]["parameters"] == USER_README_GPU_CONFIG
    assert "v1alpha2" in (SPECS / "README.md").read_text()


def test_computedomain_workloads_use_the_template_they_name() -> None:
    """Each pod's channel claim names the template its ComputeDomain tells the controller to create."""
    for name in ("imex-channel-injection.yaml", "imex-multi-node.yaml"):
        objects = docs(SPECS / name)
        (domain,) = [d for d in objects if d["kind"] == "ComputeDomain"]
        template = domain["spec"]["channel"]["resourceClaimTemplate"]["name"]
        pods = [d["spec"] for d in objects if d["kind"] == "Pod"]
        pods += [d["spec"]["template"]["spec"] for d in objects if d["kind"] in ("Deployment", "StatefulSet")]
        claims = [
            c["resourceClaimTemplateName"] for p in pods if "resourceClaims" in p for c in p["resourceClaims"]
        ]
        assert template in claims
