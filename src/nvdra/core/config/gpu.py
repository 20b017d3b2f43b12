"""``GpuConfig``: the opaque config for full GPUs (sharing, NVLink fabric requirements).

Invariants owned here:
- the implicit default GpuConfig has no sharing unless TimeSlicingSettings is on, in which case it is
  TimeSlicing with interval Default (upstream's DefaultGpuConfig);
- fabric fields (``fabricTopologyConfig`` and the legacy ``fabricPartitionID``) need the
  FabricTopologySupport gate: with the gate off they are rejected, since a node that cannot honour a
  topology constraint must not pretend to;
- the legacy ``fabricPartitionID: "<N>"`` means ``fabricTopologyConfig: {strategy: Manual,
  partitionIDs: ["<N>"]}`` (see :attr:`GpuConfig.effective_fabric_topology`); giving both is rejected.
"""

from __future__ import annotations

__all__ = ["FABRIC_FIELDS", "GpuConfig", "fabric_gate_problem"]

from typing import Any, ClassVar

import attrs

from nvdra.core.config._base import ConfigModel, FieldProblem, child_path, json_name
from nvdra.core.config.fabric import (
    FabricStrategy,
    FabricTopologyConfig,
    VirtualizationModel,
    parse_partition_id,
)
from nvdra.core.config.sharing import GpuSharing, SharingStrategy, TimeSliceInterval, TimeSlicingConfig
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate

FABRIC_FIELDS = ("fabricTopologyConfig", "fabricPartitionID")
"""JSON fields of GpuConfig that belong to the FabricTopologySupport feature."""


def fabric_gate_problem(path: str, name: str) -> ConfigError:
    """The error for a fabric field used while FabricTopologySupport is off."""
    return ConfigError(
        child_path(path, name),
        name,
        f"no {name} unless the {Gate.FABRIC_TOPOLOGY_SUPPORT} feature gate is enabled "
        f"(--feature-gates {Gate.FABRIC_TOPOLOGY_SUPPORT}=true or FABRIC_TOPOLOGY_SUPPORT=true)",
        reason=f'"{name}" is set, but the "{Gate.FABRIC_TOPOLOGY_SUPPORT}" feature gate is not enabled:',
    )


def decode_legacy_partition_id(raw: Any) -> str:
    """Decode ``fabricPartitionID``: a string, or an integer as older clients wrote it."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise FieldProblem(raw, '"<N>" or "partition-<N>"', reason="expected a string, got")
    return str(raw)


@attrs.frozen(kw_only=True)
class GpuConfig(ConfigModel):
    """Opaque config of kind ``GpuConfig`` (applies to devices of type ``gpu``)."""

    KIND: ClassVar[str] = "GpuConfig"

    sharing: GpuSharing | None = attrs.field(default=None, metadata=json_name("sharing"))
    fabric_topology_config: FabricTopologyConfig | None = attrs.field(
        default=None, metadata=json_name("fabricTopologyConfig")
    )
    fabric_partition_id: str | None = attrs.field(
        default=None, metadata=json_name("fabricPartitionID", decode=decode_legacy_partition_id)
    )

    def normalize(self, gates: FeatureGates) -> GpuConfig:
        """Fill implied defaults (upstream Normalize, plus fabric defaults). Idempotent."""
        sharing = self.sharing
        if sharing is None and gates.enabled(Gate.TIME_SLICING_SETTINGS):
            sharing = GpuSharing(
                strategy=SharingStrategy.TIME_SLICING,
                time_slicing_config=TimeSlicingConfig(interval=TimeSliceInterval.DEFAULT),
            )
        if sharing is not None:
            sharing = sharing.normalize(gates)
        fabric = self.fabric_topology_config
        return attrs.evolve(self, sharing=sharing, fabric_topology_config=fabric and fabric.normalize())

    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """Everything wrong with this config under ``gates``, each located under ``path``."""
        out: list[ConfigError] = []
        if self.sharing is not None:
            out += self.sharing.problems(gates, child_path(path, "sharing"))
        present = [
            name
            for name, value in zip(
                FABRIC_FIELDS, (self.fabric_topology_config, self.fabric_partition_id), strict=True
            )
            if value is not None
        ]
        if present and not gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
            return out + [fabric_gate_problem(path, name) for name in present]
        if self.fabric_topology_config is not None:
            out += self.fabric_topology_config.problems(child_path(path, "fabricTopologyConfig"))
        if self.fabric_partition_id is not None:
            out += self._legacy_problems(path)
        return out

    def _legacy_problems(self, path: str) -> list[ConfigError]:
        legacy_path = child_path(path, "fabricPartitionID")
        if self.fabric_topology_config is not None:
            return [
                ConfigError(
                    legacy_path,
                    self.fabric_partition_id,
                    "either fabricPartitionID (legacy) or fabricTopologyConfig, not both",
                    reason="fabricPartitionID conflicts with fabricTopologyConfig:",
                )
            ]
        try:
            parse_partition_id(self.fabric_partition_id or "")
        except ValueError:
            return [
                ConfigError(
                    legacy_path,
                    self.fabric_partition_id,
                    '"<N>" or "partition-<N>"',
                    reason="invalid partition id",
                )
            ]
        return []

    @property
    def effective_fabric_topology(self) -> FabricTopologyConfig | None:
        """The fabric requirements, with the legacy ``fabricPartitionID`` translated to Manual."""
        if self.fabric_topology_config is not None or self.fabric_partition_id is None:
            return self.fabric_topology_config
        return FabricTopologyConfig(
            strategy=FabricStrategy.MANUAL,
            virtualization_model=VirtualizationModel.BARE_METAL,
            partition_ids=(parse_partition_id(self.fabric_partition_id),),
            prefer_nvlink=True,
        )
