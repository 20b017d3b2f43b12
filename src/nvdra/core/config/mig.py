"""``MigDeviceConfig``: the opaque config for MIG devices (static or dynamic).

Invariants owned here: the implicit default has no sharing unless TimeSlicingSettings is on (then
TimeSlicing, a no-op on MIG devices); there is no time-slice length on MIG devices.
"""

from __future__ import annotations

__all__ = ["MigDeviceConfig"]

from typing import ClassVar

import attrs

from nvdra.core.config._base import ConfigModel, child_path, json_name
from nvdra.core.config.sharing import MigDeviceSharing, SharingStrategy
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate


@attrs.frozen(kw_only=True)
class MigDeviceConfig(ConfigModel):
    """Opaque config of kind ``MigDeviceConfig`` (applies to devices of type ``mig``)."""

    KIND: ClassVar[str] = "MigDeviceConfig"

    sharing: MigDeviceSharing | None = attrs.field(default=None, metadata=json_name("sharing"))

    def normalize(self, gates: FeatureGates) -> MigDeviceConfig:
        """Fill implied defaults, mirroring GpuConfig. Idempotent."""
        sharing = self.sharing
        if sharing is None and gates.enabled(Gate.TIME_SLICING_SETTINGS):
            sharing = MigDeviceSharing(strategy=SharingStrategy.TIME_SLICING)
        return attrs.evolve(self, sharing=sharing and sharing.normalize(gates))

    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """Everything wrong with this config under ``gates``, each located under ``path``."""
        if self.sharing is None:
            return []
        return self.sharing.problems(gates, child_path(path, "sharing"))
