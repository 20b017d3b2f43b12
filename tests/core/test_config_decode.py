"""Opaque config decoding: the user's examples, strictness, error paths, non-strict mode, encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.core.config import (
    ConfigErrors,
    FabricStrategy,
    GpuConfig,
    MigDeviceConfig,
    MpsConfig,
    Quantity,
    SharingStrategy,
    TimeSliceInterval,
    VfioDeviceConfig,
    VirtualizationModel,
    decode_config,
    encode_config,
    load_config,
)
from nvdra.core.config.computedomain import ComputeDomainChannelConfig
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import parse_feature_gates
from tests.readme_examples import readme_fabric_topology

SAMPLE = Path(__file__).parents[1] / "data" / "samples" / "resourceclaim-allocated.yaml"
GATES = parse_feature_gates("TimeSlicingSettings=true,MPSSupport=true,FabricTopologySupport=true")
NO_GATES = parse_feature_gates("")

README_EXAMPLE = """
apiVersion: nvidia.com/v1beta1
kind: GpuConfig
sharing:
  strategy: TimeSlicing
fabricTopologyConfig:
  strategy: Auto                    # Auto, Manual, or Disabled
  partitionSize: 4                  # 2, 4, or 8 GPUs
  virtualizationModel: BareMetal    # BareMetal, FullPassthrough, SharedNVSwitch, VGPU
  minBandwidth: 600.0              # GB/s
  maxLatency: 0.1                  # ms
  partitionIDs: ["partition-1"]    # For Manual strategy
"""


def _errors(err: ConfigError) -> list[ConfigError]:
    return list(err.errors) if isinstance(err, ConfigErrors) else [err]


def _paths(err: ConfigError) -> list[str]:
    return [e.path for e in _errors(err)]


def gpu(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", **fields}


def test_readme_example_decodes_and_validates() -> None:
    """The user's README GpuConfig decodes and validates exactly as written once its gates are on."""
    config = load_config(yaml.safe_load(README_EXAMPLE), gates=GATES)
    assert isinstance(config, GpuConfig)
    fabric = config.fabric_topology_config
    assert fabric is not None
    assert fabric.strategy is FabricStrategy.AUTO
    assert fabric.partition_size == 4
    assert fabric.virtualization_model is VirtualizationModel.BARE_METAL
    assert fabric.min_bandwidth == 600.0 and fabric.max_latency == 0.1
    assert fabric.partition_ids == (1,)
    assert config.sharing is not None and config.sharing.strategy is SharingStrategy.TIME_SLICING
    assert config.sharing.get_time_slicing_config().effective_interval.nvidia_smi_value == 0


def test_sample_claim_configs_decode_with_int_for_float() -> None:
    """Both configs of the real allocated claim load; minBandwidth stored as int 600 becomes 600.0."""
    claim = yaml.safe_load(SAMPLE.read_text())
    entries = claim["status"]["allocation"]["devices"]["config"]
    assert entries[1]["opaque"]["parameters"]["fabricTopologyConfig"]["minBandwidth"] == 600
    class_cfg, claim_cfg = (load_config(e["opaque"]["parameters"], gates=GATES) for e in entries)
    assert isinstance(class_cfg, GpuConfig) and class_cfg.sharing is not None
    assert class_cfg.sharing.get_time_slicing_config().interval is TimeSliceInterval.SHORT
    assert isinstance(claim_cfg, GpuConfig) and claim_cfg.fabric_topology_config is not None
    bandwidth = claim_cfg.fabric_topology_config.min_bandwidth
    assert isinstance(bandwidth, float) and bandwidth == 600.0


def test_all_errors_reported_together_with_paths() -> None:
    """One strict decode reports every problem, each naming its JSONPath, value and what is allowed."""
    doc = {
        "apiVersion": "v9",
        "kind": "GpuConfig",
        "sharing": {"strategy": "Sometimes", "mpsConfig": {"defaultActiveThreadPercentage": "50", "x": 1}},
        "bogus": True,
    }
    with pytest.raises(ConfigErrors) as info:
        decode_config(doc, gates=GATES)
    paths = _paths(info.value)
    assert paths == [
        "$.apiVersion",
        "$.sharing.strategy",
        "$.sharing.mpsConfig.defaultActiveThreadPercentage",
        "$.sharing.mpsConfig.x",
        "$.bogus",
    ]
    message = str(info.value)
    assert "'Sometimes'" in message and '"TimeSlicing" or "MPS"' in message
    assert "unknown GPU sharing strategy" in message
    assert "expected an integer, got '50'" in message
    assert "known fields: sharing, fabricTopologyConfig, fabricPartitionID" in message


@pytest.mark.parametrize(
    ("doc", "path", "fragment"),
    [
        (gpu(sharing="x"), "$.sharing", "expected an object"),
        (gpu(sharing={}), "$.sharing.strategy", "missing required field"),
        (gpu(sharing={"strategy": 1}), "$.sharing.strategy", "unknown GPU sharing strategy"),
        (
            gpu(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Fast"}}),
            "$.sharing.timeSlicingConfig.interval",
            '"Default", "Short", "Medium" or "Long"',
        ),
        (
            gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": True}}),
            "$.sharing.mpsConfig.defaultActiveThreadPercentage",
            "expected an integer",
        ),
        (
            gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 50.0}}),
            "$.sharing.mpsConfig.defaultActiveThreadPercentage",
            "expected an integer",
        ),
        (
            gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "lots"}}),
            "$.sharing.mpsConfig.defaultPinnedDeviceMemoryLimit",
            "not a quantity",
        ),
        (
            gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultPerDevicePinnedMemoryLimit": {"0": []}}}),
            "$.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit['0']",
            "expected a quantity",
        ),
        (
            gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultPerDevicePinnedMemoryLimit": ["1Gi"]}}),
            "$.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit",
            "expected an object",
        ),
        (
            gpu(fabricTopologyConfig={"minBandwidth": "600"}),
            "$.fabricTopologyConfig.minBandwidth",
            "expected a number",
        ),
        (
            gpu(fabricTopologyConfig={"preferNVLink": "yes"}),
            "$.fabricTopologyConfig.preferNVLink",
            "expected a boolean",
        ),
        (
            gpu(fabricTopologyConfig={"partitionSize": 4.0}),
            "$.fabricTopologyConfig.partitionSize",
            "expected an integer",
        ),
        (
            gpu(fabricTopologyConfig={"partitionIDs": "partition-1"}),
            "$.fabricTopologyConfig.partitionIDs",
            "expected a list",
        ),
        (
            gpu(fabricTopologyConfig={"partitionIDs": ["p-1"]}),
            "$.fabricTopologyConfig.partitionIDs[0]",
            "invalid partition id",
        ),
        (
            gpu(fabricTopologyConfig={"partitionIDs": ["4294967296"]}),
            "$.fabricTopologyConfig.partitionIDs[0]",
            "invalid partition id",
        ),
        (
            gpu(fabricTopologyConfig={"strategy": "auto"}),
            "$.fabricTopologyConfig.strategy",
            '"Auto", "Manual" or "Disabled"',
        ),
        (
            gpu(fabricTopologyConfig={"virtualizationModel": "KVM"}),
            "$.fabricTopologyConfig.virtualizationModel",
            '"BareMetal", "FullPassthrough", "SharedNVSwitch" or "VGPU"',
        ),
        (gpu(fabricPartitionID=[1]), "$.fabricPartitionID", "expected a string"),
        (
            {
                "apiVersion": "nvidia.com/v1beta1",
                "kind": "VfioDeviceConfig",
                "iommu": {"backendPolicy": "Any"},
            },
            "$.iommu.backendPolicy",
            '"LegacyOnly" or "PreferIommuFD"',
        ),
        (
            {"apiVersion": "nvidia.com/v1beta1", "kind": "ComputeDomainChannelConfig"},
            "$.domainID",
            "missing required field",
        ),
        (
            {
                "apiVersion": "nvidia.com/v1beta1",
                "kind": "ComputeDomainChannelConfig",
                "domainID": "a",
                "allocationMode": "Some",
            },
            "$.allocationMode",
            '"Single" or "All"',
        ),
        (
            {
                "apiVersion": "nvidia.com/v1beta1",
                "kind": "MigDeviceConfig",
                "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {}},
            },
            "$.sharing.timeSlicingConfig",
            "unknown field",
        ),
        ({"apiVersion": "nvidia.com/v1beta1", "kind": "Mystery"}, "$.kind", "GpuConfig, MigDeviceConfig"),
        ({"kind": "GpuConfig"}, "$.apiVersion", "missing apiVersion"),
    ],
)
def test_rejection_names_field(doc: dict[str, Any], path: str, fragment: str) -> None:
    """Every decoding rejection is a ConfigError whose path names the offending field."""
    with pytest.raises(ConfigError) as info:
        decode_config(doc, gates=GATES)
    matching = [e for e in _errors(info.value) if e.path == path]
    assert matching, f"{path} not in {_paths(info.value)}"
    assert fragment in str(matching[0])


def test_not_an_object() -> None:
    """A non-object document is rejected at the root path."""
    with pytest.raises(ConfigError, match="expected an object"):
        decode_config(["GpuConfig"], gates=GATES)  # type: ignore[arg-type]


def test_fabric_fields_need_gate_in_strict_mode() -> None:
    """With FabricTopologySupport off, strict decoding rejects fabric fields and names the gate."""
    doc = yaml.safe_load(README_EXAMPLE)
    with pytest.raises(ConfigError) as info:
        decode_config(doc, gates=NO_GATES)
    assert _paths(info.value) == ["$.fabricTopologyConfig"]
    assert '"FabricTopologySupport" feature gate is not enabled' in str(info.value)
    with pytest.raises(ConfigError, match="fabricPartitionID"):
        decode_config(gpu(fabricPartitionID="3"), gates=NO_GATES)


def test_non_strict_drops_unknown_fields_and_ignores_gates() -> None:
    """Non-strict decoding (stored configs) drops unknown fields and keeps gated fields readable."""
    doc = yaml.safe_load(README_EXAMPLE)
    doc["futureField"] = {"a": 1}
    doc["sharing"]["futureKnob"] = 3
    config = decode_config(doc, gates=NO_GATES, strict=False)
    assert isinstance(config, GpuConfig) and config.fabric_topology_config is not None
    with pytest.raises(ConfigError, match="expected an integer"):
        decode_config(
            gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": "1"}}),
            gates=GATES,
            strict=False,
        )


def test_path_prefix() -> None:
    """A caller-supplied root path prefixes every error path."""
    with pytest.raises(ConfigError) as info:
        decode_config(gpu(sharing={"strategy": "X"}), gates=GATES, path="$.config[2].opaque.parameters")
    assert info.value.path == "$.config[2].opaque.parameters.sharing.strategy"


def test_null_means_absent() -> None:
    """JSON null for an optional field decodes as unset, like Go's omitempty pointers."""
    assert decode_config(gpu(sharing=None), gates=GATES) == GpuConfig()


def test_encode_shape() -> None:
    """Encoding writes the upstream apiVersion, camelCase names, strings for enums, and omits unset fields."""
    config = load_config(yaml.safe_load(README_EXAMPLE), gates=GATES)
    assert encode_config(config) == {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "GpuConfig",
        "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Default"}},
        "fabricTopologyConfig": {**readme_fabric_topology(), "preferNVLink": True},
    }
    mps = MpsConfig(
        default_pinned_device_memory_limit=Quantity("2Gi"),
        default_per_device_pinned_memory_limit={"0": Quantity("1Gi")},
    )
    assert encode_config(MigDeviceConfig())["kind"] == "MigDeviceConfig"
    assert encode_config(VfioDeviceConfig()) == {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "VfioDeviceConfig",
    }
    encoded = encode_config(ComputeDomainChannelConfig(domain_id="uid"))
    assert encoded["domainID"] == "uid" and "allocationMode" not in encoded
    from nvdra.core.config._serde import unstructure

    assert unstructure(mps) == {
        "defaultPinnedDeviceMemoryLimit": "2Gi",
        "defaultPerDevicePinnedMemoryLimit": {"0": "1Gi"},
    }


def test_quantity_numbers_accepted() -> None:
    """A JSON number is a quantity too (Kubernetes accepts unquoted numbers)."""
    doc = gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": 1073741824}})
    config = decode_config(doc, gates=GATES)
    assert isinstance(config, GpuConfig) and config.sharing is not None
    assert config.sharing.get_mps_config().default_pinned_device_memory_limit == Quantity("1073741824")
