"""Normalize and validate: gate rules, defaults, the timeSlicingConfig fix, MPS limits, fabric rules."""

from __future__ import annotations

from typing import Any

import pytest

from nvdra.core.config import (
    ComputeDomainChannelConfig,
    ComputeDomainDaemonConfig,
    ConfigErrors,
    FabricStrategy,
    FabricTopologyConfig,
    GpuConfig,
    GpuSharing,
    IommuBackendPolicy,
    MigDeviceConfig,
    MigDeviceSharing,
    MpsConfig,
    Quantity,
    SharingStrategy,
    TimeSliceInterval,
    TimeSlicingConfig,
    VfioDeviceConfig,
    VirtualizationModel,
    decode_config,
    load_config,
    normalize_memory_limit,
    resolve_pinned_memory_limits,
)
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import parse_feature_gates

GATES = parse_feature_gates("TimeSlicingSettings=true,MPSSupport=true,FabricTopologySupport=true")
NO_GATES = parse_feature_gates("")
TS_ONLY = parse_feature_gates("TimeSlicingSettings=true")


def _paths(err: ConfigError) -> list[str]:
    return [e.path for e in err.errors] if isinstance(err, ConfigErrors) else [err.path]


def gpu(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", **fields}


def test_default_gpu_config_follows_time_slicing_gate() -> None:
    """The implicit GpuConfig has no sharing unless TimeSlicingSettings is on (then TimeSlicing/Default)."""
    assert GpuConfig().normalize(NO_GATES) == GpuConfig()
    assert GpuConfig().normalize(TS_ONLY).sharing == GpuSharing(
        strategy=SharingStrategy.TIME_SLICING,
        time_slicing_config=TimeSlicingConfig(interval=TimeSliceInterval.DEFAULT),
    )
    assert MigDeviceConfig().normalize(TS_ONLY).sharing == MigDeviceSharing(
        strategy=SharingStrategy.TIME_SLICING
    )


def test_empty_time_slicing_config_gets_default_interval() -> None:
    """timeSlicingConfig: {} normalizes to interval Default (upstream crashed here)."""
    config = load_config(gpu(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {}}), gates=TS_ONLY)
    assert isinstance(config, GpuConfig) and config.sharing is not None
    assert config.sharing.time_slicing_config == TimeSlicingConfig(interval=TimeSliceInterval.DEFAULT)


def test_mps_gets_empty_config() -> None:
    """Strategy MPS without mpsConfig normalizes to an empty MpsConfig when MPSSupport is on."""
    config = load_config(gpu(sharing={"strategy": "MPS"}), gates=GATES)
    assert isinstance(config, GpuConfig) and config.sharing is not None
    assert config.sharing.mps_config == MpsConfig()


@pytest.mark.parametrize(
    ("kind", "strategy", "gate"),
    [
        ("GpuConfig", "TimeSlicing", "TimeSlicingSettings"),
        ("GpuConfig", "MPS", "MPSSupport"),
        ("MigDeviceConfig", "MPS", "MPSSupport"),
        ("MigDeviceConfig", "TimeSlicing", "TimeSlicingSettings"),
    ],
)
def test_strategy_needs_gate(kind: str, strategy: str, gate: str) -> None:
    """Selecting a strategy whose gate is off fails with upstream's message naming both."""
    doc = {"apiVersion": "nvidia.com/v1beta1", "kind": kind, "sharing": {"strategy": strategy}}
    with pytest.raises(ConfigError) as info:
        load_config(doc, gates=NO_GATES)
    assert info.value.path == "$.sharing.strategy"
    assert f'"{strategy}" is selected as the' in str(info.value)
    assert f'but the "{gate}" feature gate is not enabled' in str(info.value)


@pytest.mark.parametrize(
    ("pct", "words"), [(-1, "must not be negative"), (101, "must not be greater than 100")]
)
def test_thread_percentage_bounds(pct: int, words: str) -> None:
    """defaultActiveThreadPercentage outside 0..100 fails with upstream's wording."""
    doc = gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": pct}})
    with pytest.raises(ConfigError, match=words) as info:
        load_config(doc, gates=GATES)
    assert info.value.path == "$.sharing.mpsConfig.defaultActiveThreadPercentage"


@pytest.mark.parametrize("pct", [0, 100])
def test_thread_percentage_edges_ok(pct: int) -> None:
    """0 and 100 are allowed."""
    load_config(
        gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": pct}}), gates=GATES
    )


def test_cross_strategy_settings_rejected() -> None:
    """mpsConfig with TimeSlicing and timeSlicingConfig with MPS are rejected with the getters' text."""
    with pytest.raises(ConfigError, match="cannot use MpsConfig with the 'TimeSlicing' strategy"):
        load_config(gpu(sharing={"strategy": "TimeSlicing", "mpsConfig": {}}), gates=GATES)
    with pytest.raises(ConfigError, match="cannot use TimeSlicingConfig with the 'MPS' strategy"):
        load_config(gpu(sharing={"strategy": "MPS", "timeSlicingConfig": {}}), gates=GATES)
    sharing = GpuSharing(strategy=SharingStrategy.MPS)
    with pytest.raises(ConfigError, match="strategy is not set to 'TimeSlicing'"):
        sharing.get_time_slicing_config()
    assert sharing.get_mps_config() == MpsConfig()


@pytest.mark.parametrize(
    ("text", "expected"), [("2Gi", "2048M"), ("10Mi", "10M"), ("10M", "9M"), ("1G", "953M")]
)
def test_memory_limit_normalization(text: str, expected: str) -> None:
    """Limits render as whole MiB with upstream's truncation."""
    assert normalize_memory_limit(Quantity(text)) == expected


def test_memory_limit_too_low() -> None:
    """1M is below 1 MiB: an error, also reported by validate."""
    with pytest.raises(ConfigError, match="too low"):
        normalize_memory_limit(Quantity("1M"))
    doc = gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "1M"}})
    with pytest.raises(ConfigError, match="too low"):
        load_config(doc, gates=GATES)


def test_per_device_limits_resolution() -> None:
    """Per-device keys are UUIDs or indices into the sorted UUIDs, overriding the default limit."""
    mps = MpsConfig(
        default_pinned_device_memory_limit=Quantity("1Gi"),
        default_per_device_pinned_memory_limit={"0": Quantity("2Gi"), "GPU-c": Quantity("10Mi")},
    )
    limits = resolve_pinned_memory_limits(mps, ["GPU-c", "GPU-a", "GPU-b"])
    assert limits == {"GPU-a": "2048M", "GPU-b": "1024M", "GPU-c": "10M"}


def test_per_device_limits_invalid_devices_reported_together() -> None:
    """Out-of-range indices and unknown UUIDs are invalid devices, all named by key."""
    mps = MpsConfig(
        default_per_device_pinned_memory_limit={
            "2": Quantity("1Gi"),
            "-1": Quantity("1Gi"),
            "GPU-z": Quantity("1Gi"),
            "GPU-a": Quantity("1M"),
        }
    )
    with pytest.raises(ConfigErrors) as info:
        resolve_pinned_memory_limits(mps, ["GPU-a", "GPU-b"])
    assert _paths(info.value) == [
        "$.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit['2']",
        "$.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit['-1']",
        "$.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit['GPU-z']",
        "$.sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit['GPU-a']",
    ]
    assert "invalid device" in str(info.value)


def test_fabric_normalize_defaults() -> None:
    """An empty fabricTopologyConfig means Auto on BareMetal preferring NVLink, with no constraints."""
    config = load_config(gpu(fabricTopologyConfig={}), gates=GATES)
    assert isinstance(config, GpuConfig)
    assert config.fabric_topology_config == FabricTopologyConfig(
        strategy=FabricStrategy.AUTO, virtualization_model=VirtualizationModel.BARE_METAL, prefer_nvlink=True
    )


def test_auto_with_partition_ids_narrows() -> None:
    """Under Auto, partition ids in either spelling are accepted (they narrow, not conflict)."""
    config = load_config(
        gpu(fabricTopologyConfig={"strategy": "Auto", "partitionIDs": ["7", "partition-3"]}), gates=GATES
    )
    assert isinstance(config, GpuConfig) and config.fabric_topology_config is not None
    assert config.fabric_topology_config.partition_ids == (7, 3)


@pytest.mark.parametrize(
    ("fabric", "paths", "fragment"),
    [
        ({"strategy": "Manual"}, ["partitionIDs"], 'strategy "Manual" requires partitionIDs'),
        ({"strategy": "Manual", "partitionIDs": []}, ["partitionIDs"], "requires partitionIDs"),
        ({"partitionSize": 3}, ["partitionSize"], "2, 4 or 8"),
        ({"minBandwidth": -1}, ["minBandwidth"], ">= 0"),
        ({"maxLatency": -0.5}, ["maxLatency"], ">= 0"),
        ({"partitionIDs": ["1", "partition-1"]}, ["partitionIDs"], "duplicate"),
        (
            {
                "strategy": "Disabled",
                "partitionSize": 2,
                "partitionIDs": ["1"],
                "minBandwidth": 1,
                "maxLatency": 1,
            },
            ["partitionSize", "partitionIDs", "minBandwidth", "maxLatency"],
            'strategy "Disabled"',
        ),
        ({"virtualizationModel": "VGPU", "minBandwidth": 100}, ["minBandwidth"], "VGPU"),
    ],
)
def test_fabric_rules(fabric: dict[str, Any], paths: list[str], fragment: str) -> None:
    """Each fabric rule violation is reported at its field, all of them together."""
    with pytest.raises(ConfigError) as info:
        load_config(gpu(fabricTopologyConfig=fabric), gates=GATES)
    assert _paths(info.value) == [f"$.fabricTopologyConfig.{p}" for p in paths]
    assert fragment in str(info.value)


def test_fabric_disabled_and_vgpu_plain_ok() -> None:
    """Disabled or VGPU without constraints validate, and preferNVLink is not filled there."""
    for fabric in (
        {"strategy": "Disabled"},
        {"virtualizationModel": "VGPU"},
        {"strategy": "Disabled", "preferNVLink": False},
    ):
        config = load_config(gpu(fabricTopologyConfig=fabric), gates=GATES)
        assert isinstance(config, GpuConfig) and config.fabric_topology_config is not None
        assert not config.fabric_topology_config.active


def test_fabric_gate_checked_by_validate() -> None:
    """validate() also rejects fabric fields when the gate is off (configs built in code)."""
    config = GpuConfig(fabric_topology_config=FabricTopologyConfig(), fabric_partition_id="1")
    with pytest.raises(ConfigErrors) as info:
        config.validate(NO_GATES)
    assert _paths(info.value) == ["$.fabricTopologyConfig", "$.fabricPartitionID"]


def test_legacy_partition_id() -> None:
    """fabricPartitionID keeps working as Manual with one id; with fabricTopologyConfig it conflicts."""
    config = load_config(gpu(fabricPartitionID="partition-5"), gates=GATES)
    assert isinstance(config, GpuConfig)
    fabric = config.effective_fabric_topology
    assert fabric is not None and fabric.strategy is FabricStrategy.MANUAL and fabric.partition_ids == (5,)
    assert decode_config(gpu(fabricPartitionID=6), gates=GATES) == GpuConfig(fabric_partition_id="6")
    with pytest.raises(ConfigError, match="conflicts"):
        load_config(gpu(fabricPartitionID="1", fabricTopologyConfig={}), gates=GATES)
    with pytest.raises(ConfigError, match="invalid partition id"):
        load_config(gpu(fabricPartitionID="one"), gates=GATES)


def test_vfio_normalize() -> None:
    """A VfioDeviceConfig without iommu normalizes to LegacyOnly without the API device."""
    config = VfioDeviceConfig().normalize(NO_GATES)
    assert config.iommu is not None
    assert config.iommu.backend_policy is IommuBackendPolicy.LEGACY_ONLY
    assert config.iommu.enable_api_device is False
    decoded = decode_config(
        {"apiVersion": "nvidia.com/v1beta1", "kind": "VfioDeviceConfig", "iommu": {"enableAPIDevice": True}},
        gates=NO_GATES,
    )
    normalized = decoded.normalize(NO_GATES)
    assert isinstance(normalized, VfioDeviceConfig) and normalized.iommu is not None
    assert normalized.iommu.enable_api_device is True


def vfio(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "VfioDeviceConfig", **fields}


def test_vfio_fabric_topology_decodes_and_normalizes_like_gpu_config() -> None:
    """VfioDeviceConfig.fabricTopologyConfig is GpuConfig's model: same defaults, same id spellings."""
    fabric = {"virtualizationModel": "SharedNVSwitch", "partitionIDs": ["partition-2"], "minBandwidth": 900}
    config = load_config(vfio(fabricTopologyConfig=fabric), gates=GATES)
    as_gpu = load_config(gpu(fabricTopologyConfig=fabric), gates=GATES)
    assert isinstance(config, VfioDeviceConfig) and isinstance(as_gpu, GpuConfig)
    assert config.effective_fabric_topology == as_gpu.effective_fabric_topology
    assert config.fabric_topology_config == FabricTopologyConfig(
        strategy=FabricStrategy.AUTO,
        virtualization_model=VirtualizationModel.SHARED_NVSWITCH,
        partition_ids=(2,),
        min_bandwidth=900.0,
        prefer_nvlink=True,
    )


def test_vfio_fabric_topology_rules_and_gate() -> None:
    """VfioDeviceConfig's fabric field follows GpuConfig's rules, and needs FabricTopologySupport."""
    with pytest.raises(ConfigErrors) as info:
        load_config(vfio(fabricTopologyConfig={"strategy": "Manual", "partitionSize": 3}), gates=GATES)
    assert _paths(info.value) == [
        "$.fabricTopologyConfig.partitionSize",
        "$.fabricTopologyConfig.partitionIDs",
    ]
    with pytest.raises(ConfigError, match="FabricTopologySupport") as gated:
        decode_config(vfio(fabricTopologyConfig={}), gates=NO_GATES)
    assert _paths(gated.value) == ["$.fabricTopologyConfig"]
    built = VfioDeviceConfig(fabric_topology_config=FabricTopologyConfig())
    with pytest.raises(ConfigError, match="FabricTopologySupport"):
        built.validate(NO_GATES)  # configs built in code meet the same gate
    with pytest.raises(ConfigError, match="fabricPartitionID"):
        decode_config(vfio(fabricPartitionID="1"), gates=GATES)  # GpuConfig's legacy field only


def test_compute_domain_ids_required() -> None:
    """ComputeDomain configs need a non-empty domainID (upstream: 'domainID cannot be empty')."""
    for config in (ComputeDomainChannelConfig(domain_id=""), ComputeDomainDaemonConfig(domain_id="")):
        with pytest.raises(ConfigError, match="domainID cannot be empty"):
            config.validate(NO_GATES)
    ComputeDomainDaemonConfig(domain_id="abc").validate(NO_GATES)


def test_validation_problems_reported_together() -> None:
    """Validation lists every problem of a document in one error."""
    doc = gpu(
        sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 200}},
        fabricTopologyConfig={"partitionSize": 16, "strategy": "Manual"},
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(doc, gates=TS_ONLY.with_override("FabricTopologySupport", True, detail="test"))
    assert _paths(info.value) == [
        "$.sharing.strategy",
        "$.sharing.mpsConfig.defaultActiveThreadPercentage",
        "$.fabricTopologyConfig.partitionSize",
        "$.fabricTopologyConfig.partitionIDs",
    ]
    assert str(info.value).startswith("4 problems: (1) $.sharing.strategy")


def test_interval_smi_values() -> None:
    """Intervals map to nvidia-smi's --set-timeslice values 0..3."""
    assert [i.nvidia_smi_value for i in TimeSliceInterval] == [0, 1, 2, 3]
