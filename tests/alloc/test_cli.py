"""``nvdra explain``, ``nvdra validate`` and ``nvdra devices --kubeconfig`` through click's runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from nvdra.tool.cli import main


def write(tmp_path: Path, name: str, *docs: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return str(path)


def gpu_claim(name: str, expression: str | None = None, count: int = 1, **extra: object) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": "gpu.nvidia.com", "count": count, **extra}
    if expression:
        exactly["selectors"] = [{"cel": {"expression": expression}}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}},
    }


BIG = "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('141G')) >= 0"


def test_explain_141g_on_dgx_h100_says_which_selector_and_by_how_much(tmp_path: Path) -> None:
    """A 141 GB claim on H100s fails (exit 1) quoting the selector, the value read and the shortfall."""
    result = CliRunner().invoke(
        main, ["explain", write(tmp_path, "c.yaml", gpu_claim("big", BIG)), "--simulate", "dgx-h100"]
    )
    assert result.exit_code == 1, result.output
    assert "NO ALLOCATION" in result.output
    assert "request selector #0 is false" in result.output
    assert BIG in result.output
    assert "gpu.nvidia.com/memory = 81559Mi" in result.output
    assert "81559Mi compareTo 141G = -1: short by 51.7Gi" in result.output


def test_explain_success_prints_table_and_yaml(tmp_path: Path) -> None:
    """An allocatable claim exits 0; -o yaml prints the claim with status.allocation."""
    path = write(tmp_path, "c.yaml", gpu_claim("two", count=2))
    table = CliRunner().invoke(main, ["explain", path, "--simulate", "dgx-h100"])
    assert table.exit_code == 0 and "gpu-0" in table.output and "gpu-1" in table.output
    out = CliRunner().invoke(main, ["explain", path, "--simulate", "dgx-h100", "-o", "yaml"])
    listed = yaml.safe_load(out.output)
    assert listed["kind"] == "List"
    doc = listed["items"][0]
    assert [r["device"] for r in doc["status"]["allocation"]["devices"]["results"]] == ["gpu-0", "gpu-1"]


def test_explain_uses_extra_classes(tmp_path: Path) -> None:
    """--class adds DeviceClasses; an unknown class is reported, not a crash."""
    cls = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "h100"},
        "spec": {
            "selectors": [
                # the driver test first: on a node that also runs the ComputeDomain plugin, its devices
                # have no productName, and a selector error aborts the allocation (as in the scheduler)
                {
                    "cel": {
                        "expression": "device.driver == 'gpu.nvidia.com' && "
                        "device.attributes['gpu.nvidia.com'].productName.contains('H100')"
                    }
                }
            ]
        },
    }
    claim = gpu_claim("c")
    claim["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = "h100"
    path = write(tmp_path, "c.yaml", claim)
    missing = CliRunner().invoke(main, ["explain", path])
    assert missing.exit_code == 1 and 'DeviceClass "h100" not found' in missing.output
    ok = CliRunner().invoke(main, ["explain", path, "--class", write(tmp_path, "cls.yaml", cls)])
    assert ok.exit_code == 0, ok.output


def test_validate_reports_cel_position_and_config_errors(tmp_path: Path) -> None:
    """validate exits 1 naming the CEL error position and the opaque config's bad field; good files pass."""
    bad = gpu_claim("bad", "device.attributes['gpu.nvidia.com'].type ==")
    bad["spec"]["devices"]["config"] = [
        {
            "requests": ["gpu"],
            "opaque": {
                "driver": "gpu.nvidia.com",
                "parameters": {
                    "apiVersion": "resource.nvidia.com/v1beta1",
                    "kind": "GpuConfig",
                    "sharing": {"strategy": "TimeSlicing", "timeSlicingConfg": {}},
                },
            },
        }
    ]
    result = CliRunner().invoke(main, ["validate", write(tmp_path, "bad.yaml", bad)])
    assert result.exit_code == 1
    assert "<input>:1:" in result.output and "timeSlicingConfg" in result.output
    good = CliRunner().invoke(main, ["validate", write(tmp_path, "good.yaml", gpu_claim("good", BIG))])
    assert good.exit_code == 0 and ": valid" in good.output


def test_devices_reads_a_live_cluster(tmp_path: Path) -> None:
    """devices --kubeconfig lists the slices an API server holds."""
    from nvdra.core.featuregates import parse_feature_gates
    from nvdra.kubeletplugin import ApiServer, FakeKube
    from nvdra.tool.explain import simulated_slices

    store = FakeKube()
    for sl in simulated_slices("pcie-l4", parse_feature_gates(""), "n1"):
        store.create_resource_slice(sl)
    with ApiServer(store) as api:
        kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
        result = CliRunner().invoke(main, ["devices", "--kubeconfig", kubeconfig, "--node", "n1"])
    assert result.exit_code == 0, result.output
    assert "gpu-0" in result.output and "n1" in result.output
