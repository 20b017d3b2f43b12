"""``nvdra explain`` on real material: files with other kinds, Pods and workloads followed to their
claims, stdin, and valid Kubernetes nvdra cannot serve (a capacity request) explained, not refused."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from nvdra.tool.cli import main
from tests.manifests import deployment, gpu_claim, gpu_claim_template

SPECS = Path(__file__).resolve().parents[2] / "demo" / "specs" / "quickstart"


def test_pods_are_followed_to_their_templates_one_claim_each() -> None:
    """gpu-test1: a Namespace, a template and two Pods; each pod's claim gets its own GPU."""
    result = CliRunner().invoke(main, ["explain", str(SPECS / "gpu-test1.yaml"), "-o", "yaml"])
    assert result.exit_code == 0, result.output
    listed = yaml.safe_load(result.output)
    assert listed["kind"] == "List"
    names = [c["metadata"]["name"] for c in listed["items"]]
    devices = [c["status"]["allocation"]["devices"]["results"][0]["device"] for c in listed["items"]]
    assert names == ["pod1-gpu", "pod2-gpu"]
    assert len(set(devices)) == 2


def test_a_claim_shared_by_two_pods_is_allocated_once() -> None:
    result = CliRunner().invoke(main, ["explain", str(SPECS / "gpu-test3.yaml")])
    assert result.exit_code == 0, result.output
    assert "== Pod gpu-test3/pod2 (shares gpu-test3/single-gpu, allocated above)" in result.output


def test_capacity_request_is_explained_not_refused() -> None:
    """A consumable-capacity request is valid Kubernetes; explain says why no device grants it."""
    claim = gpu_claim("shared-memory", capacity={"requests": {"memory": "200Gi"}})
    result = CliRunner().invoke(main, ["explain", "-"], input=yaml.safe_dump(claim))
    assert result.exit_code == 1, result.output
    assert "NO ALLOCATION" in result.output
    assert "capacity" in result.output and "200Gi" in result.output


def test_v1beta1_claim_and_other_kinds_in_the_file() -> None:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
        {
            "apiVersion": "resource.k8s.io/v1beta1",
            "kind": "ResourceClaim",
            "metadata": {"name": "old-shape", "namespace": "x"},
            "spec": {
                "devices": {"requests": [{"name": "gpu", "deviceClassName": "gpu.nvidia.com", "count": 2}]}
            },
        },
    ]
    result = CliRunner().invoke(
        main, ["explain", "-", "--simulate", "pcie-l4"], input=yaml.safe_dump_all(docs)
    )
    assert result.exit_code == 0, result.output
    assert "gpu-0" in result.output and "gpu-1" in result.output


def test_each_replica_of_a_workload_gets_its_own_claims() -> None:
    """A Deployment of 3 replicas with a one-GPU template on a 2-GPU node: the third replica has no
    GPU left, and explain says so for that replica."""
    template = gpu_claim_template("one-gpu")
    pod_spec = {
        "containers": [{"name": "c", "image": "x", "resources": {"claims": [{"name": "g"}]}}],
        "resourceClaims": [{"name": "g", "resourceClaimTemplateName": "one-gpu"}],
    }
    web = deployment("web", "default", pod_spec, {"app": "web"}, replicas=3)
    result = CliRunner().invoke(
        main, ["explain", "-", "--simulate", "pcie-l4"], input=yaml.safe_dump_all([template, web])
    )
    assert result.exit_code == 1, result.output
    assert "== Deployment default/web (pod web-2, replica 3 of 3)\nNO ALLOCATION" in result.output
    assert "web-0-g" in result.output and "web-1-g" in result.output


def test_a_removed_v1alpha2_claim_is_explained_as_its_v1_equivalent() -> None:
    """The README's classic claim (resourceClassName + parameters) is not read as asking for nothing:
    explain allocates its v1 equivalent (four GPUs of one partition) and says so."""
    claim = {
        "apiVersion": "resource.k8s.io/v1alpha2",
        "kind": "ResourceClaim",
        "metadata": {"name": "classic"},
        "spec": {
            "resourceClassName": "nvidia.com/gpu",
            "parameters": {
                "apiVersion": "nvidia.com/v1beta1",
                "kind": "GpuConfig",
                "fabricTopologyConfig": {
                    "strategy": "Auto",
                    "partitionSize": 4,
                    "virtualizationModel": "BareMetal",
                },
            },
        },
    }
    result = CliRunner().invoke(
        main, ["explain", "-", "--feature-gates", "FabricTopologySupport=true"], input=yaml.safe_dump(claim)
    )
    assert result.exit_code == 0, result.output
    assert "explained as its resource.k8s.io/v1 equivalent" in result.output
    assert sum(1 for line in result.output.splitlines() if line.startswith("classic ")) == 4
