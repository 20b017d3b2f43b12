"""``VfioDeviceConfig``: the opaque config for GPUs handed to VMs through vfio-pci (PassthroughSupport).

Invariants owned here:
- a missing ``iommu`` normalizes to ``{backendPolicy: LegacyOnly, enableAPIDevice: false}``, and each
  missing member to its default; the policy is one of two names (checked at decoding);
- ``fabricTopologyConfig`` is the same model with the same rules as in ``GpuConfig`` (for the VM models:
  under FullPassthrough and SharedNVSwitch the partition's GPUs go to vfio-pci), and like there it needs
  the FabricTopologySupport gate: with the gate off it is rejected, not ignored. The legacy
  ``fabricPartitionID`` of GpuConfig is not accepted here (no older client ever wrote it on this kind).
"""

from __future__ import annotations

__all__ = ["VFIO_FABRIC_FIELDS", "IommuBackendPolicy", "IommuConfig", "VfioDeviceConfig"]

import enum
from typing import ClassVar

import attrs

from nvdra.core.config._base import ConfigModel, child_path, json_name
from nvdra.core.config.fabric import FabricTopologyConfig
from nvdra.core.config.gpu import fabric_gate_problem
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate

VFIO_FABRIC_FIELDS = ("fabricTopologyConfig",)
"""JSON fields of VfioDeviceConfig that belong to the FabricTopologySupport feature."""


class IommuBackendPolicy(enum.StrEnum):
    """Which IOMMU backend the VM's device should use."""

    LEGACY_ONLY = "LegacyOnly"
    PREFER_IOMMUFD = "PreferIommuFD"


@attrs.frozen(kw_only=True)
class IommuConfig:
    """``VfioDeviceConfig.iommu``.

    ``enable_api_device`` injects ``/dev/iommu`` (IOMMUFD chosen and available) or ``/dev/vfio/vfio``.
    """

    backend_policy: IommuBackendPolicy | None = attrs.field(default=None, metadata=json_name("backendPolicy"))
    enable_api_device: bool | None = attrs.field(default=None, metadata=json_name("enableAPIDevice"))


@attrs.frozen(kw_only=True)
class VfioDeviceConfig(ConfigModel):
    """Opaque config of kind ``VfioDeviceConfig`` (applies to devices of type ``vfio``)."""

    KIND: ClassVar[str] = "VfioDeviceConfig"

    iommu: IommuConfig | None = attrs.field(default=None, metadata=json_name("iommu"))
    fabric_topology_config: FabricTopologyConfig | None = attrs.field(
        default=None, metadata=json_name("fabricTopologyConfig")
    )

    def normalize(self, gates: FeatureGates) -> VfioDeviceConfig:
        """Fill the IOMMU defaults and the fabric defaults (as in GpuConfig). Idempotent."""
        iommu = self.iommu or IommuConfig()
        fabric = self.fabric_topology_config
        return VfioDeviceConfig(
            iommu=IommuConfig(
                backend_policy=iommu.backend_policy or IommuBackendPolicy.LEGACY_ONLY,
                enable_api_device=bool(iommu.enable_api_device),
            ),
            fabric_topology_config=fabric and fabric.normalize(),
        )

    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """The fabric field's problems: the gate, then the rules of :class:`FabricTopologyConfig`."""
        if self.fabric_topology_config is None:
            return []
        if not gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
            return [fabric_gate_problem(path, VFIO_FABRIC_FIELDS[0])]
        return self.fabric_topology_config.problems(child_path(path, "fabricTopologyConfig"))

    @property
    def effective_fabric_topology(self) -> FabricTopologyConfig | None:
        """The fabric requirements (the same accessor GpuConfig has, so planners treat both alike)."""
        return self.fabric_topology_config
