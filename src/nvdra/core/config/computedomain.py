"""ComputeDomain opaque configs: ``ComputeDomainChannelConfig`` and ``ComputeDomainDaemonConfig``.

The controller renders these into the ResourceClaimTemplates it creates; users normally never write
them. Invariants owned here: ``domainID`` must be non-empty ("domainID cannot be empty") — so the
built-in defaults, which have an empty id, fail validation when they are the config chosen, as upstream;
normalizing changes nothing.
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from nvdra.core.config._base import child_path, json_name, raise_problems
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates

__all__ = ["ChannelAllocationMode", "ComputeDomainChannelConfig", "ComputeDomainDaemonConfig"]


class ChannelAllocationMode(enum.StrEnum):
    """Which IMEX channels a workload gets: one, or all 2048."""

    SINGLE = "Single"
    ALL = "All"


def _domain_problems(domain_id: str, path: str) -> list[ConfigError]:
    if domain_id:
        return []
    return [
        ConfigError(
            child_path(path, "domainID"),
            domain_id,
            "the ComputeDomain's UID",
            reason="domainID cannot be empty:",
        )
    ]


@attrs.frozen(kw_only=True)
class ComputeDomainChannelConfig:
    """Opaque config of kind ``ComputeDomainChannelConfig`` (applies to ``channel`` devices)."""

    KIND: ClassVar[str] = "ComputeDomainChannelConfig"

    domain_id: str = attrs.field(metadata=json_name("domainID"))
    allocation_mode: ChannelAllocationMode | None = attrs.field(
        default=None, metadata=json_name("allocationMode")
    )

    def normalize(self, gates: FeatureGates) -> ComputeDomainChannelConfig:
        """No implied defaults (upstream's Normalize is a no-op)."""
        return self

    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """Everything wrong with this config, each located under ``path``."""
        return _domain_problems(self.domain_id, path)

    def validate(self, gates: FeatureGates, path: str = "$") -> None:
        """Raise a :class:`ConfigError` if ``domainID`` is empty."""
        raise_problems(self.problems(gates, path))


@attrs.frozen(kw_only=True)
class ComputeDomainDaemonConfig:
    """Opaque config of kind ``ComputeDomainDaemonConfig`` (applies to ``daemon`` devices)."""

    KIND: ClassVar[str] = "ComputeDomainDaemonConfig"

    domain_id: str = attrs.field(metadata=json_name("domainID"))

    def normalize(self, gates: FeatureGates) -> ComputeDomainDaemonConfig:
        """No implied defaults (upstream's Normalize is a no-op)."""
        return self

    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """Everything wrong with this config, each located under ``path``."""
        return _domain_problems(self.domain_id, path)

    def validate(self, gates: FeatureGates, path: str = "$") -> None:
        """Raise a :class:`ConfigError` if ``domainID`` is empty."""
        raise_problems(self.problems(gates, path))
