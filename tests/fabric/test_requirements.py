"""nvdra.fabric.requirements: what a claim must tell the scheduler, the refusals with numbers, --fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from nvdra.core.config import FabricTopologyConfig, VirtualizationModel
from nvdra.fabric import FabricMode
from nvdra.fabric.attributes import DOMAIN, is_board_attribute, max_latency_ns, model_modes
from nvdra.fabric.requirements import demand_problems, fabric_demands, fix_claim, selector, unmeetable
from nvdra.plugins.gpu.config import DRIVER_NAME
from nvdra.tool.cli import main as cli_main
from tests.fabric.test_scheduler_agrees import (
    allocate,
    node_fabric,
    prepare_check,
    readme_claim,
    slices,
)
from tests.manifests import gpu_claim
from tests.readme_examples import README_V1ALPHA2_CLAIM, readme_fabric_topology

README = readme_fabric_topology()
A = 'device.attributes["gpu.nvidia.com"]'


def selectors_of(claim: dict[str, Any]) -> list[str]:
    """The CEL expressions of the claim's one request."""
    body = claim["spec"]["devices"]["requests"][0]["exactly"]
    return [s["cel"]["expression"] for s in body.get("selectors", [])]


def test_the_attribute_domain_is_the_gpu_driver() -> None:
    """The attributes live in the GPU driver's domain."""
    assert DOMAIN == DRIVER_NAME


def test_every_field_of_the_readme_example_becomes_a_demand() -> None:
    """Size -> constraint; model, ids, bandwidth, latency -> one selector each, with exact values."""
    demands = fabric_demands(readme_claim(4, **README))
    said = {(d.field, d.kind, d.text) for d in demands}
    assert ("partitionSize", "constraint", "gpu.nvidia.com/partition4") in said
    texts = {d.field: d.text for d in demands if d.kind == "selector"}
    assert texts["partitionIDs"].endswith(f"{A}.partition4 in [1]")
    assert texts["minBandwidth"].endswith(f"{A}.partition4Bandwidth >= 600")
    assert texts["maxLatency"].endswith(f"{A}.partition4LatencyNs <= 100000")
    assert texts["virtualizationModel"].endswith(f'{A}.fabricManagerMode in ["bare-metal", "none"]')
    assert not any(d.present for d in demands)
    problems = demand_problems(readme_claim(4, **README))
    assert len(problems) == 5
    assert problems[0].startswith("spec.devices.constraints: spec.devices.config[0].opaque.parameters.")


def test_fix_adds_everything_and_is_idempotent() -> None:
    """fix_claim adds the constraint and selectors; the result has no problem and fixes to itself."""
    fixed, changes = fix_claim(readme_claim(4, **README))
    assert len(changes) == 5
    assert demand_problems(fixed) == []
    assert fix_claim(fixed) == (fixed, [])


def test_fix_sets_the_count_from_partition_size() -> None:
    """A single request whose count differs from partitionSize gets the partition size."""
    fixed, changes = fix_claim(readme_claim(1, partitionSize=8))
    assert fixed["spec"]["devices"]["requests"][0]["exactly"]["count"] == 8
    assert any("count: set to 8" in c for c in changes)
    assert demand_problems(fixed) == []


@pytest.mark.parametrize(
    ("written", "ok"),
    [
        (f"{A}.partition4Bandwidth >= 600", True),  # unguarded
        (f"{A}.partition4Bandwidth>=900", True),  # stricter, no spaces
        (f"{A}.partition4Bandwidth == 900", True),
        (f"{A}.partition4Bandwidth >= 500", False),  # weaker
        (f"{A}.partition8Bandwidth >= 900", False),  # another size
        (f"{A}.partition4Bandwidth >= 600 || true", False),
    ],
)
def test_an_equal_or_stricter_selector_counts(written: str, ok: bool) -> None:
    """Selectors are compared as comparisons, not as text."""
    claim = readme_claim(4, partitionSize=4, minBandwidth=600)
    claim["spec"]["devices"]["requests"][0]["exactly"]["selectors"] = [{"cel": {"expression": written}}]
    (bandwidth,) = [d for d in fabric_demands(claim) if d.field == "minBandwidth"]
    assert bandwidth.present is ok


def test_ids_may_be_written_as_equality_or_a_subset() -> None:
    """``== 1`` and ``in [1]`` say partitionIDs [1, 2]; ``in [1, 3]`` does not."""
    claim = readme_claim(4, partitionSize=4, partitionIDs=["partition-1", "partition-2"])
    body = claim["spec"]["devices"]["requests"][0]["exactly"]
    for written, ok in (
        (f"{A}.partition4 == 1", True),
        (f"{A}.partition4 in [1]", True),
        (f"{A}.partition4 in [1, 3]", False),
    ):
        body["selectors"] = [{"cel": {"expression": written}}]
        (ids,) = [d for d in fabric_demands(claim) if d.field == "partitionIDs"]
        assert ids.present is ok, written


def test_counts_that_cannot_form_a_partition_are_reported() -> None:
    """A count of 3 without partitionSize, or an All-mode request: one clear line, nothing auto-fixed."""
    (line,) = [p for p in demand_problems(readme_claim(3)) if ".count:" in p]
    assert "partition size (2, 4 or 8), got 3" in line
    claim = readme_claim(1, partitionSize=2)
    claim["spec"]["devices"]["requests"][0]["exactly"] = {"deviceClassName": DOMAIN, "allocationMode": "All"}
    problems = demand_problems(claim)
    assert any("allocationMode ExactCount" in p for p in problems)
    assert all("count: set" not in c for c in fix_claim(claim)[1])


def test_templates_and_the_flat_request_shape() -> None:
    """ResourceClaimTemplates are read under spec.spec, and the v1beta1 flat request shape too."""
    claim = readme_claim(2, partitionSize=2)
    template = {"kind": "ResourceClaimTemplate", "metadata": {"name": "t"}, "spec": {"spec": claim["spec"]}}
    assert demand_problems(template)[0].startswith("spec.spec.devices.constraints:")
    flat = readme_claim(2, partitionSize=2)
    flat["spec"]["devices"]["requests"][0] = {"name": "gpus", "deviceClassName": DOMAIN, "count": 2}
    fixed, _ = fix_claim(flat)
    assert fixed["spec"]["devices"]["requests"][0]["selectors"]
    assert demand_problems(fixed) == []


def test_disabled_and_vgpu_demand_nothing() -> None:
    """Fabric logic off: nothing to say."""
    assert fabric_demands(readme_claim(2, strategy="Disabled")) == []
    assert fabric_demands(readme_claim(2, virtualizationModel="VGPU")) == []


def test_bounds_no_partition_can_meet_are_refused_with_the_numbers() -> None:
    """minBandwidth above 18 NVLink 5.0 links, maxLatency below a direct NVLink hop."""
    fabric = FabricTopologyConfig(min_bandwidth=2000.0, max_latency=0.001)
    why = dict(unmeetable(fabric))
    assert "2000 GB/s" in why["minBandwidth"] and "1800 GB/s" in why["minBandwidth"]
    assert "0.001 ms" in why["maxLatency"] and "0.002 ms" in why["maxLatency"]
    problems = demand_problems(readme_claim(2, partitionSize=2, minBandwidth=2000.0))
    assert any("1800 GB/s" in p and "no allocation could ever be prepared" in p for p in problems)


def test_latency_the_model_cannot_meet_allocates_nothing_and_prepare_says_the_numbers() -> None:
    """0.0022 ms is under the 0.0025 ms NVSwitch hop: the selector excludes every dgx-h100 partition."""
    node = node_fabric("dgx-h100", FabricMode.BARE_METAL)
    claim, _ = fix_claim(readme_claim(2, partitionSize=2, maxLatency=0.0022))
    assert allocate(claim, slices("dgx-h100", node), set()) is None
    bare = readme_claim(2, partitionSize=2, maxLatency=0.0022)
    with pytest.raises(
        Exception, match=r"0\.0025 ms \(nvswitch\), above maxLatency 0\.0022 ms.*LatencyNs <= 2200"
    ):
        prepare_check("dgx-h100", node, bare, ["gpu-0", "gpu-2"])


def test_passthrough_bandwidth_is_what_a_vm_gets() -> None:
    """A100 4-GPU full-passthrough VMs get 6 of 12 links: 300 GB/s, so minBandwidth 600 is refused."""
    node = node_fabric("dgx-a100", None)
    published = slices("dgx-a100", node)
    attributes = published[0]["spec"]["devices"][0]["attributes"]
    assert attributes["partition4Bandwidth"] == {"int": 600}
    assert attributes["partition4PassthroughBandwidth"] == {"int": 300}
    claim, _ = fix_claim(
        readme_claim(4, partitionSize=4, virtualizationModel="FullPassthrough", minBandwidth=600)
    )
    assert allocate(claim, published, set()) is None
    bare = readme_claim(4, partitionSize=4, virtualizationModel="FullPassthrough", minBandwidth=600)
    with pytest.raises(Exception, match=r"300 GB/s per GPU under FullPassthrough \(12 NVLinks per GPU\)"):
        prepare_check("dgx-a100", node, bare, [f"gpu-{i}" for i in range(4)])


def test_helpers() -> None:
    """Latency bounds round down to whole ns; board attributes travel to the VFIO view."""
    assert max_latency_ns(0.1) == 100_000 and max_latency_ns(0.0025) == 2500
    assert model_modes(VirtualizationModel.SHARED_NVSWITCH) == ("shared-nvswitch",)
    assert selector(FabricTopologyConfig(), 2, "minBandwidth") is None
    assert all(map(is_board_attribute, ("partition4", "partition8LatencyNs", "fabricManagerMode")))
    assert not is_board_attribute("uuid")


def test_validate_refuses_and_fix_rewrites(tmp_path: Path) -> None:
    """`nvdra validate` names the selector to add; `--fix` rewrites the file so that it validates."""
    path = tmp_path / "claim.yaml"
    path.write_text(yaml.safe_dump(readme_claim(4, **README)))
    gates = ["--feature-gates", "FabricTopologySupport=true"]
    plain = CliRunner().invoke(cli_main, ["validate", *gates, str(path)])
    assert plain.exit_code == 1 and "add the selector" in plain.output
    CliRunner().invoke(cli_main, ["validate", "--fix", *gates, str(path)])
    (doc,) = yaml.safe_load_all(path.read_text())
    assert len(selectors_of(doc)) == 4
    again = CliRunner().invoke(cli_main, ["validate", *gates, str(path)])
    assert again.exit_code == 0, again.output


def test_validate_fix_turns_the_readme_v1alpha2_example_into_v1_with_its_selectors(tmp_path: Path) -> None:
    """The README's example as written: --fix writes the v1 claim with the constraint and 4 selectors."""
    path = tmp_path / "readme.yaml"
    path.write_text(README_V1ALPHA2_CLAIM)
    CliRunner().invoke(cli_main, ["validate", "--fix", str(path)])
    (doc,) = yaml.safe_load_all(path.read_text())
    assert doc["apiVersion"] == "resource.k8s.io/v1"
    assert doc["spec"]["devices"]["constraints"][0]["matchAttribute"] == "gpu.nvidia.com/partition4"
    assert [s.split("&&")[-1].strip() for s in selectors_of(doc)] == [
        f'{A}.fabricManagerMode in ["bare-metal", "none"]',
        f"{A}.partition4 in [1]",
        f"{A}.partition4Bandwidth >= 600",
        f"{A}.partition4LatencyNs <= 100000",
    ]
    again = CliRunner().invoke(cli_main, ["validate", str(path)])
    assert again.exit_code == 0, again.output


def test_a_config_without_requests_covers_only_the_gpu_requests() -> None:
    """A GpuConfig naming no requests applies to the GPU driver's devices: a ComputeDomain channel
    request beside the GPUs is not counted into the partition."""
    claim = readme_claim(4, partitionSize=4)
    devices = claim["spec"]["devices"]
    del devices["config"][0]["requests"]
    devices["requests"].append(
        {"name": "channel", "exactly": {"deviceClassName": "compute-domain-default-channel.nvidia.com"}}
    )
    fixed, _ = fix_claim(claim)
    assert demand_problems(fixed) == []
    assert fixed["spec"]["devices"]["constraints"] == [
        {"requests": ["gpus"], "matchAttribute": "gpu.nvidia.com/partition4"}
    ]
    assert "selectors" not in fixed["spec"]["devices"]["requests"][1]["exactly"]


@pytest.mark.parametrize("driver", [["gpu.nvidia.com"], {"name": "gpu.nvidia.com"}, None, 7])
def test_a_malformed_opaque_driver_is_not_a_fabric_config(driver: object) -> None:
    """A driver name that is not a string (what a fuzzed or hand-written claim may carry) is skipped,
    never a TypeError: the webhook answers such a review instead of failing."""
    claim = gpu_claim("c", config=[{"opaque": {"driver": driver, "parameters": {"kind": "GpuConfig"}}}])
    assert demand_problems(claim) == []
