"""``VfioDeviceConfig``: the opaque config for GPUs handed to VMs through vfio-pci (PassthroughSupport).

Invariants owned here: a missing ``iommu`` normalizes to ``{backendPolicy: LegacyOnly,
enableAPIDevice: false}``, and each missing member to its default; the policy is one of two names
(checked at decoding).
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from nvdra.core.config._base import json_name, raise_problems
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates

__all__ = ["IommuBackendPolicy", "IommuConfig", "VfioDeviceConfig"]


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
class VfioDeviceConfig:
    """Opaque config of kind ``VfioDeviceConfig`` (applies to devices of type ``vfio``)."""

    KIND: ClassVar[str] = "VfioDeviceConfig"

    iommu: IommuConfig | None = attrs.field(default=None, metadata=json_name("iommu"))

    def normalize(self, gates: FeatureGates) -> VfioDeviceConfig:
        """Fill the IOMMU defaults. Idempotent."""
        iommu = self.iommu or IommuConfig()
        return VfioDeviceConfig(
            iommu=IommuConfig(
                backend_policy=iommu.backend_policy or IommuBackendPolicy.LEGACY_ONLY,
                enable_api_device=bool(iommu.enable_api_device),
            )
        )

    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """Nothing beyond what decoding checks (the policy's two names); kept for a uniform interface."""
        return []

    def validate(self, gates: FeatureGates, path: str = "$") -> None:
        """Raise one :class:`ConfigError` listing every problem (none today beyond decoding)."""
        raise_problems(self.problems(gates, path))
