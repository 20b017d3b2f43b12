"""``nvdra explain --kubeconfig K --node N`` against the in-process API server.

The cluster's DeviceClasses replace the chart's built-in copies, and devices that claims already
hold are not offered again, as the scheduler would see them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from nvdra.alloc import builtin_device_classes
from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.objects import DEVICE_CLASSES
from nvdra.tool.cli import main
from nvdra.tool.explain import simulated_slices

NODE = "n1"


def claim(
    name: str, count: int = 1, device_class: str = "gpu.nvidia.com", ns: str = "default"
) -> dict[str, Any]:
    """A v1 ResourceClaim asking for ``count`` devices of ``device_class``."""
    exactly = {"deviceClassName": device_class, "allocationMode": "ExactCount", "count": count}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}},
    }


def allocated(body: dict[str, Any], devices: list[str]) -> dict[str, Any]:
    """``body`` with a status.allocation of ``devices`` on NODE."""
    results = [{"request": "gpu", "driver": "gpu.nvidia.com", "pool": NODE, "device": d} for d in devices]
    return {
        **body,
        "metadata": {**body["metadata"], "uid": str(uuid.uuid4())},
        "status": {"allocation": {"devices": {"results": results}}},
    }


class Cluster:
    """A FakeKube behind an ApiServer, seeded with a dgx-h100 node's slices and the chart's classes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = FakeKube()
        self.store.add_node(NODE)
        for sl in simulated_slices("dgx-h100", parse_feature_gates(""), NODE):
            self.store.create_resource_slice(sl)
        for cls in builtin_device_classes().values():
            self.store.objects.put(DEVICE_CLASSES, cls)
        self.kubeconfig = ""

    def explain(self, *docs: dict[str, Any], node: str = NODE) -> Any:
        """Run ``nvdra explain FILE --kubeconfig K --node node``."""
        path = self.tmp / f"claims-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
        args = ["explain", str(path), "--kubeconfig", self.kubeconfig, "--node", node]
        return CliRunner().invoke(main, args)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A served cluster (DeviceClasses registered as the API server serves them)."""
    c = Cluster(tmp_path)
    with ApiServer(c.store) as api:
        api.register(DEVICE_CLASSES)
        c.kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
        yield c


def test_devices_held_by_allocated_claims_are_not_offered(cluster: Cluster) -> None:
    """With gpu-0..gpu-6 held by another claim, one GPU fits (gpu-7) and two do not."""
    cluster.store.add_claim(allocated(claim("holder", 7, ns="other"), [f"gpu-{i}" for i in range(7)]))
    one = cluster.explain(claim("one"))
    assert one.exit_code == 0, one.output
    assert "gpu-7" in one.output and "gpu-0" not in one.output
    two = cluster.explain(claim("two", 2))
    assert two.exit_code == 1, two.output
    assert "NO ALLOCATION" in two.output


def test_claim_being_explained_does_not_block_itself(cluster: Cluster) -> None:
    """Re-explaining a claim the cluster already allocated ignores that claim's own allocation."""
    body = claim("mine", 8)
    cluster.store.add_claim(allocated(body, [f"gpu-{i}" for i in range(8)]))
    result = cluster.explain(body)
    assert result.exit_code == 0, result.output
    assert "gpu-7" in result.output


def test_the_clusters_own_classes_are_used(cluster: Cluster) -> None:
    """A class only the cluster defines works; a chart class the cluster lacks is reported missing."""
    only_h100 = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "h100"},
        "spec": {
            "selectors": [
                {
                    "cel": {  # driver first: the ComputeDomain plugin's devices have no productName
                        "expression": "device.driver == 'gpu.nvidia.com' && "
                        "device.attributes['gpu.nvidia.com'].productName.contains('H100')"
                    }
                }
            ]
        },
    }
    cluster.store.objects.put(DEVICE_CLASSES, only_h100)
    cluster.store.objects.delete_object(DEVICE_CLASSES, "gpu.nvidia.com")
    ok = cluster.explain(claim("h", device_class="h100"))
    assert ok.exit_code == 0, ok.output
    assert "gpu-0" in ok.output
    missing = cluster.explain(claim("g"))
    assert missing.exit_code == 1, missing.output
    assert 'DeviceClass "gpu.nvidia.com" not found' in missing.output


def test_unknown_node_is_a_clear_error(cluster: Cluster) -> None:
    """--node naming no node fails with a message naming it, not a traceback."""
    result = cluster.explain(claim("x"), node="nope")
    assert result.exit_code != 0
    assert "nope" in result.output and "Traceback" not in result.output
