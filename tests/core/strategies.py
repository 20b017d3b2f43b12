"""Hypothesis strategies for nvdra.core: opaque config models and feature gates."""

from __future__ import annotations

from hypothesis import strategies as st

from nvdra.core.config import (
    ChannelAllocationMode,
    ComputeDomainChannelConfig,
    ComputeDomainDaemonConfig,
    FabricStrategy,
    FabricTopologyConfig,
    GpuConfig,
    GpuSharing,
    IommuBackendPolicy,
    IommuConfig,
    MigDeviceConfig,
    MigDeviceSharing,
    MpsConfig,
    Quantity,
    SharingStrategy,
    TimeSliceInterval,
    TimeSlicingConfig,
    VfioDeviceConfig,
    VirtualizationModel,
)
from nvdra.core.featuregates import FeatureGates, parse_feature_gates

ALL_ON = parse_feature_gates(
    "TimeSlicingSettings=true,MPSSupport=true,FabricTopologySupport=true,PassthroughSupport=true"
)
"""Gates under which every generated valid config validates (PassthroughSupport is compatible with MPS)."""

quantities = st.builds(
    lambda n, unit: Quantity(f"{n}{unit}"),
    st.integers(min_value=1, max_value=4096),
    st.sampled_from(["Gi", "Mi", "G", "M"]),
).filter(lambda q: q.bytes >= 1024 * 1024)

uuids = st.from_regex(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}", fullmatch=True)

mps_configs = st.builds(
    MpsConfig,
    default_active_thread_percentage=st.none() | st.integers(0, 100),
    default_pinned_device_memory_limit=st.none() | quantities,
    default_per_device_pinned_memory_limit=st.none()
    | st.dictionaries(uuids | st.integers(0, 7).map(str), quantities, max_size=3),
)


def _gpu_sharing(strategy: SharingStrategy) -> st.SearchStrategy[GpuSharing]:
    if strategy is SharingStrategy.TIME_SLICING:
        tsc = st.none() | st.builds(
            TimeSlicingConfig, interval=st.none() | st.sampled_from(TimeSliceInterval)
        )
        return st.builds(GpuSharing, strategy=st.just(strategy), time_slicing_config=tsc)
    return st.builds(GpuSharing, strategy=st.just(strategy), mps_config=st.none() | mps_configs)


gpu_sharings = st.sampled_from(SharingStrategy).flatmap(_gpu_sharing)
mig_sharings = st.one_of(
    st.builds(MigDeviceSharing, strategy=st.just(SharingStrategy.TIME_SLICING)),
    st.builds(MigDeviceSharing, strategy=st.just(SharingStrategy.MPS), mps_config=st.none() | mps_configs),
)

partition_ids = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4, unique=True).map(tuple)
_bounds = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
_active_models = st.sampled_from(
    [
        VirtualizationModel.BARE_METAL,
        VirtualizationModel.FULL_PASSTHROUGH,
        VirtualizationModel.SHARED_NVSWITCH,
    ]
)


def _fabric(strategy: FabricStrategy | None) -> st.SearchStrategy[FabricTopologyConfig]:
    if strategy is FabricStrategy.DISABLED:
        return st.builds(
            FabricTopologyConfig,
            strategy=st.just(strategy),
            virtualization_model=st.none() | st.sampled_from(VirtualizationModel),
            prefer_nvlink=st.none() | st.booleans(),
        )
    return st.builds(
        FabricTopologyConfig,
        strategy=st.just(strategy),
        partition_size=st.none() | st.sampled_from([2, 4, 8]),
        virtualization_model=st.none() | _active_models,
        min_bandwidth=st.none() | _bounds,
        max_latency=st.none() | _bounds,
        partition_ids=partition_ids if strategy is FabricStrategy.MANUAL else st.none() | partition_ids,
        prefer_nvlink=st.none() | st.booleans(),
    )


fabric_configs = st.sampled_from([None, *FabricStrategy]).flatmap(_fabric)

gpu_configs = st.one_of(
    st.builds(GpuConfig, sharing=st.none() | gpu_sharings, fabric_topology_config=st.none() | fabric_configs),
    st.builds(
        GpuConfig,
        sharing=st.none() | gpu_sharings,
        fabric_partition_id=st.integers(0, 2**32 - 1).flatmap(
            lambda n: st.sampled_from([str(n), f"partition-{n}"])
        ),
    ),
)
mig_configs = st.builds(MigDeviceConfig, sharing=st.none() | mig_sharings)
vfio_configs = st.builds(
    VfioDeviceConfig,
    iommu=st.none()
    | st.builds(
        IommuConfig,
        backend_policy=st.none() | st.sampled_from(IommuBackendPolicy),
        enable_api_device=st.none() | st.booleans(),
    ),
    fabric_topology_config=st.none() | fabric_configs,
)
domain_ids = st.uuids().map(str)
channel_configs = st.builds(
    ComputeDomainChannelConfig,
    domain_id=domain_ids,
    allocation_mode=st.none() | st.sampled_from(ChannelAllocationMode),
)
daemon_configs = st.builds(ComputeDomainDaemonConfig, domain_id=domain_ids)

valid_configs = st.one_of(gpu_configs, mig_configs, vfio_configs, channel_configs, daemon_configs)
"""Configs that validate under :data:`ALL_ON` (before and after normalizing)."""

feature_gate_sets = st.builds(
    lambda ts, mps, fabric: parse_feature_gates(
        f"TimeSlicingSettings={ts},MPSSupport={mps},FabricTopologySupport={fabric}"
    ),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)


def json_values() -> st.SearchStrategy[object]:
    """Arbitrary JSON-like values (what a mutation may put anywhere in a document)."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6,
    )


__all__ = [
    "ALL_ON",
    "FeatureGates",
    "channel_configs",
    "daemon_configs",
    "fabric_configs",
    "feature_gate_sets",
    "gpu_configs",
    "json_values",
    "mig_configs",
    "mps_configs",
    "quantities",
    "valid_configs",
    "vfio_configs",
]
