"""Config resolution: precedence, request scoping, kind fit, defaults, grouping and error context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.core.config import (
    AllocatedDevice,
    ChannelAllocationMode,
    ComputeDomainChannelConfig,
    ConfigSource,
    DeviceType,
    GpuConfig,
    MigDeviceConfig,
    SharingStrategy,
    TimeSliceInterval,
    VfioDeviceConfig,
    resolve_configs,
)
from nvdra.core.errors import ClaimError, ConfigError
from nvdra.core.featuregates import parse_feature_gates

DRIVER = "gpu.nvidia.com"
GATES = parse_feature_gates("TimeSlicingSettings=true,MPSSupport=true,FabricTopologySupport=true")
SAMPLE = Path(__file__).parents[1] / "data" / "samples" / "resourceclaim-allocated.yaml"


def ts(interval: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "GpuConfig",
        "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": interval}},
    }


def mig_mps() -> dict[str, Any]:
    return {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "MigDeviceConfig",
        "sharing": {"strategy": "MPS"},
    }


def entry(
    params: dict[str, Any], source: str = "FromClaim", requests: list[str] | None = None, driver: str = DRIVER
) -> dict[str, Any]:
    out: dict[str, Any] = {"source": source, "opaque": {"driver": driver, "parameters": params}}
    if requests is not None:
        out["requests"] = requests
    return out


def dev(name: str, request: str = "gpus", kind: DeviceType = DeviceType.GPU) -> AllocatedDevice:
    return AllocatedDevice(request=request, device=name, device_type=kind)


def interval_of(config: object) -> TimeSliceInterval | None:
    assert isinstance(config, GpuConfig) and config.sharing is not None
    assert config.sharing.time_slicing_config is not None
    return config.sharing.time_slicing_config.interval


def test_sample_claim_resolves_to_claim_config() -> None:
    """In the real sample, the claim's config beats the class's for all four GPUs, as one group."""
    claim = yaml.safe_load(SAMPLE.read_text())
    allocation = claim["status"]["allocation"]["devices"]
    results = [dev(r["device"], r["request"]) for r in allocation["results"]]
    (group,) = resolve_configs(allocation["config"], results, driver=DRIVER, gates=GATES)
    assert group.source is ConfigSource.FROM_CLAIM and group.index == 1
    assert [d.device for d in group.devices] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert interval_of(group.config) is TimeSliceInterval.DEFAULT
    assert isinstance(group.config, GpuConfig) and group.config.fabric_topology_config is not None


@pytest.mark.parametrize(
    ("configs", "winner"),
    [
        ([], None),
        ([entry(ts("Short"), "FromClass", ["gpus"])], "Short"),
        ([entry(ts("Short"), "FromClass", ["gpus"]), entry(ts("Long"), "FromClass", ["gpus"])], "Long"),
        ([entry(ts("Short"), "FromClaim"), entry(ts("Long"), "FromClass", ["gpus"])], "Short"),
        ([entry(ts("Short"), "FromClaim", ["gpus"]), entry(ts("Long"), "FromClaim")], "Short"),
        ([entry(ts("Long"), "FromClaim"), entry(ts("Short"), "FromClaim", ["gpus"])], "Short"),
        ([entry(ts("Long"), "FromClaim"), entry(ts("Medium"), "FromClaim")], "Medium"),
        ([entry(ts("Long"), "FromClaim", ["other"])], None),
        ([entry(ts("Long"), "FromClaim", ["gpus"], driver="other.example.com")], None),
    ],
)
def test_precedence_matrix(configs: list[dict[str, Any]], winner: str | None) -> None:
    """default < class < claim; scoped beats unscoped within a source; later beats earlier among equals."""
    (group,) = resolve_configs(configs, [dev("gpu-0")], driver=DRIVER, gates=GATES)
    if winner is None:
        assert group.source is ConfigSource.DEFAULT and group.index is None
        assert interval_of(group.config) is TimeSliceInterval.DEFAULT
    else:
        assert interval_of(group.config) is TimeSliceInterval(winner)


def test_subrequests_match_parent_and_exact() -> None:
    """A result of gpus/big matches configs scoped to gpus and to gpus/big; the exact one wins."""
    results = [dev("gpu-0", "gpus/big")]
    parent_only = [entry(ts("Short"), requests=["gpus"])]
    (group,) = resolve_configs(parent_only, results, driver=DRIVER, gates=GATES)
    assert interval_of(group.config) is TimeSliceInterval.SHORT
    both = [entry(ts("Long"), requests=["gpus/big"]), entry(ts("Short"), requests=["gpus"])]
    (group,) = resolve_configs(both, results, driver=DRIVER, gates=GATES)
    assert interval_of(group.config) is TimeSliceInterval.LONG


def test_unscoped_misfit_skipped_scoped_misfit_fails() -> None:
    """An unscoped config of another kind is skipped; a request-scoped one fails naming request and device."""
    mig = dev("gpu-0-mig-1g10gb-19-0", "small", DeviceType.MIG)
    (group,) = resolve_configs([entry(ts("Short"))], [mig], driver=DRIVER, gates=GATES)
    assert isinstance(group.config, MigDeviceConfig) and group.source is ConfigSource.DEFAULT
    with pytest.raises(ClaimError) as info:
        resolve_configs([entry(ts("Short"), requests=["small"])], [mig], driver=DRIVER, gates=GATES)
    message = str(info.value)
    assert "cannot apply GpuConfig to device gpu-0-mig-1g10gb-19-0" in message
    assert "request small" in message and "config[0]" in message


def test_groups_by_config_object_in_result_order() -> None:
    """Devices sharing a config form one group; groups follow their first device's position."""
    configs = [entry(mig_mps(), requests=["small"]), entry(ts("Short"), requests=["gpus"])]
    results = [
        dev("gpu-1"),
        dev("gpu-0-mig-a", "small", DeviceType.MIG),
        dev("gpu-2"),
        dev("gpu-3", "extra"),
        dev("gpu-0-mig-b", "small", DeviceType.MIG),
    ]
    groups = resolve_configs(configs, results, driver=DRIVER, gates=GATES)
    assert [(g.index, [d.device for d in g.devices]) for g in groups] == [
        (1, ["gpu-1", "gpu-2"]),
        (0, ["gpu-0-mig-a", "gpu-0-mig-b"]),
        (None, ["gpu-3"]),
    ]
    mig_config = groups[1].config
    assert isinstance(mig_config, MigDeviceConfig) and mig_config.sharing is not None
    assert mig_config.sharing.strategy is SharingStrategy.MPS and mig_config.sharing.mps_config is not None


def test_non_opaque_entry_is_error() -> None:
    """A config entry without opaque parameters fails the claim, naming its index."""
    with pytest.raises(ClaimError, match=r"config\[0\].*only opaque parameters are supported"):
        resolve_configs(
            [{"source": "FromClaim", "requests": ["gpus"]}], [dev("gpu-0")], driver=DRIVER, gates=GATES
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"source": "FromNowhere", "opaque": {"driver": DRIVER, "parameters": ts("Short")}},
        {"source": "FromClaim", "requests": "gpus", "opaque": {"driver": DRIVER, "parameters": ts("Short")}},
        "not-an-object",
    ],
)
def test_malformed_entries(bad: Any) -> None:
    """Entries with an unknown source, a non-list requests or no object shape are claim errors."""
    with pytest.raises(ClaimError, match=r"config\[0\]"):
        resolve_configs([bad], [dev("gpu-0")], driver=DRIVER, gates=GATES)


def test_decode_errors_of_all_entries_together() -> None:
    """Decoding problems of every entry of this driver are reported at once, with entry paths."""
    bad_a = {**ts("Short"), "typo": 1}
    bad_b = {**ts("Soon")}
    configs = [entry(bad_a, "FromClass", ["gpus"]), entry(ts("Long"), driver="x"), entry(bad_b)]
    with pytest.raises(ConfigError) as info:
        resolve_configs(configs, [dev("gpu-0")], driver=DRIVER, gates=GATES)
    message = str(info.value)
    assert "$.status.allocation.devices.config[0].opaque.parameters.typo" in message
    assert (
        "$.status.allocation.devices.config[2].opaque.parameters.sharing.timeSlicingConfig.interval"
        in message
    )
    with pytest.raises(ConfigError, match=r"config\[0\]\.opaque\.parameters: expected an object"):
        resolve_configs(
            [{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": "x"}}],
            [dev("gpu-0")],
            driver=DRIVER,
            gates=GATES,
        )


def test_only_chosen_configs_are_validated() -> None:
    """A config that applies to no device is decoded but not validated (it may need other gates)."""
    no_mps = parse_feature_gates("TimeSlicingSettings=true")
    configs = [entry(mig_mps(), "FromClass"), entry(ts("Short"), requests=["gpus"])]
    (group,) = resolve_configs(configs, [dev("gpu-0")], driver=DRIVER, gates=no_mps)
    assert group.index == 1
    with pytest.raises(ConfigError, match='"MPSSupport" feature gate is not enabled') as info:
        resolve_configs(configs, [dev("m", "small", DeviceType.MIG)], driver=DRIVER, gates=no_mps)
    assert info.value.path.startswith("$.status.allocation.devices.config[0].opaque.parameters")


def test_defaults_per_device_type() -> None:
    """Defaults: vfio only with PassthroughSupport; ComputeDomain defaults fail validation if chosen."""
    vfio = dev("gpu-0-vfio", "vm", DeviceType.VFIO)
    with pytest.raises(ClaimError, match="no config applies"):
        resolve_configs([], [vfio], driver=DRIVER, gates=GATES)
    passthrough = parse_feature_gates("PassthroughSupport=true")
    (group,) = resolve_configs([], [vfio], driver=DRIVER, gates=passthrough)
    assert isinstance(group.config, VfioDeviceConfig) and group.config.iommu is not None
    channel = dev("channel-0", "channel", DeviceType.CHANNEL)
    with pytest.raises(ConfigError, match="domainID cannot be empty") as info:
        resolve_configs([], [channel], driver="compute-domain.nvidia.com", gates=GATES)
    assert info.value.path == "<default ComputeDomainChannelConfig>.domainID"
    cd = entry(
        {
            "apiVersion": "resource.nvidia.com/v1beta1",
            "kind": "ComputeDomainChannelConfig",
            "domainID": "uid-1",
            "allocationMode": "All",
        },
        "FromClaim",
        driver="compute-domain.nvidia.com",
    )
    (group,) = resolve_configs([cd], [channel], driver="compute-domain.nvidia.com", gates=GATES)
    assert group.config == ComputeDomainChannelConfig(
        domain_id="uid-1", allocation_mode=ChannelAllocationMode.ALL
    )
