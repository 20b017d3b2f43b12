"""The opaque config API of nvdra's drivers: models, strict decoding, defaulting, validation, resolution.

Kinds (``apiVersion: resource.nvidia.com/v1beta1``, also ``nvidia.com/v1beta1``): ``GpuConfig``,
``MigDeviceConfig``, ``VfioDeviceConfig``, ``ComputeDomainChannelConfig``, ``ComputeDomainDaemonConfig``.
Typical use::

    config = load_config(params, gates=gates)          # decode (strict) + normalize + validate
    groups = resolve_configs(claim_configs, results, driver="gpu.nvidia.com", gates=gates)

Pure code: no I/O, no SDK, no nvdra import outside :mod:`nvdra.core`.
"""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "API_VERSIONS",
    "KINDS",
    "PARTITION_SIZES",
    "AllocatedDevice",
    "ChannelAllocationMode",
    "ComputeDomainChannelConfig",
    "ComputeDomainDaemonConfig",
    "Config",
    "ConfigErrors",
    "ConfigGroup",
    "ConfigSource",
    "DeviceType",
    "FabricStrategy",
    "FabricTopologyConfig",
    "GpuConfig",
    "GpuSharing",
    "IommuBackendPolicy",
    "IommuConfig",
    "MigDeviceConfig",
    "MigDeviceSharing",
    "MpsConfig",
    "Quantity",
    "SharingStrategy",
    "TimeSliceInterval",
    "TimeSlicingConfig",
    "VfioDeviceConfig",
    "VirtualizationModel",
    "decode_config",
    "default_config",
    "encode_config",
    "load_config",
    "normalize_memory_limit",
    "parse_partition_id",
    "resolve_configs",
    "resolve_pinned_memory_limits",
]

from nvdra.core.config._base import ConfigErrors
from nvdra.core.config.api import (
    API_VERSION,
    API_VERSIONS,
    KINDS,
    Config,
    decode_config,
    encode_config,
    load_config,
)
from nvdra.core.config.computedomain import (
    ChannelAllocationMode,
    ComputeDomainChannelConfig,
    ComputeDomainDaemonConfig,
)
from nvdra.core.config.fabric import (
    PARTITION_SIZES,
    FabricStrategy,
    FabricTopologyConfig,
    VirtualizationModel,
    parse_partition_id,
)
from nvdra.core.config.gpu import GpuConfig
from nvdra.core.config.mig import MigDeviceConfig
from nvdra.core.config.mps import MpsConfig, Quantity, normalize_memory_limit, resolve_pinned_memory_limits
from nvdra.core.config.resolve import (
    AllocatedDevice,
    ConfigGroup,
    ConfigSource,
    DeviceType,
    default_config,
    resolve_configs,
)
from nvdra.core.config.sharing import (
    GpuSharing,
    MigDeviceSharing,
    SharingStrategy,
    TimeSliceInterval,
    TimeSlicingConfig,
)
from nvdra.core.config.vfio import IommuBackendPolicy, IommuConfig, VfioDeviceConfig
