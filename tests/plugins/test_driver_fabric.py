"""GpuDriver and the README's fabric example: the GpuConfig decodes, prepares, and names missing gates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.plugins.gpu.effects import Effects
from nvdra.plugins.gpu.fabric import fabric_effects
from tests.plugins.conftest import (
    DriverNode,
    allocated_claim,
    on_disk,
    opaque,
    prepare_one,
    result,
    sample_claim,
    spec_files,
    uid_of,
)
from tests.readme_examples import readme_gpu_config

JsonObject = dict[str, Any]


# -- the README's fabric example -------------------------------------------------------------------

README_PARAMETERS: JsonObject = readme_gpu_config()  # the user README's FabricManager section
FABRIC_GATES = "TimeSlicingSettings=true,FabricTopologySupport=true"


def readme_claim() -> JsonObject:
    """The README's parameters as a claim config over gpu-0 … gpu-3 of pool n1."""
    return allocated_claim(
        [result(f"gpu-{i}", request="gpus") for i in range(4)],
        config=[opaque(README_PARAMETERS, requests=["gpus"])],
    )


def test_readme_fabric_example_prepares_with_its_gates(node: DriverNode) -> None:
    """The README's GpuConfig (Auto with partitionIDs) prepares four GPUs when both gates are on."""
    driver = node.driver(gates=FABRIC_GATES)
    claim = readme_claim()

    answer = prepare_one(driver, claim)

    assert answer.error == ""
    assert [d.device_name for d in answer.devices] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert node.spec_path(uid_of(claim)).exists()


def test_sample_claim_with_class_and_claim_configs_prepares(
    tmp_path: Path, node: DriverNode, cdi_schema: Callable[[Path], JsonObject]
) -> None:
    """The real allocated sample claim (pool sim-a, class + claim GpuConfig) prepares on node sim-a."""
    sim_a = DriverNode(tmp_path / "sim-a", node.inventory, node.driver_root, node_name="sim-a")
    try:
        claim = sample_claim()
        answer = prepare_one(sim_a.driver(gates=FABRIC_GATES), claim)
        assert answer.error == ""
        assert {d.pool_name for d in answer.devices} == {"sim-a"}
        assert len(cdi_schema(sim_a.spec_path(uid_of(claim)))["devices"]) == 4
    finally:
        sim_a.close()


@pytest.mark.parametrize(
    ("gates", "missing"),
    [
        ("TimeSlicingSettings=true", "FabricTopologySupport"),
        ("FabricTopologySupport=true", "TimeSlicingSettings"),
    ],
)
def test_readme_fabric_example_is_refused_naming_the_missing_gate(
    node: DriverNode, gates: str, missing: str
) -> None:
    """With one of its gates off the README example fails with a message naming that gate."""
    driver = node.driver(gates=gates)
    claim = readme_claim()

    answer = prepare_one(driver, claim)

    assert missing in answer.error
    assert spec_files(node.cdi_root) == []
    assert on_disk(node).claims == {}


# -- prepare-time verification (ARCHITECTURE §4) ----------------------------------------------------


def test_gpus_that_cannot_form_the_partition_size_are_refused(node: DriverNode) -> None:
    """Two GPUs allocated under partitionSize 4 cannot form the partition, so the claim must fail."""
    planners, executors = fabric_effects(parse_feature_gates(FABRIC_GATES), node.inventory, fm=None)
    driver = node.driver(gates=FABRIC_GATES, effects=Effects(planners, executors))
    claim = allocated_claim(
        [result("gpu-0", request="gpus"), result("gpu-5", request="gpus")],
        config=[opaque(README_PARAMETERS, requests=["gpus"])],
    )

    answer = prepare_one(driver, claim)

    assert "partition" in answer.error
    assert spec_files(node.cdi_root) == []
