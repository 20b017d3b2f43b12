"""ComputeDomain opaque configs: ``ComputeDomainChannelConfig`` and ``ComputeDomainDaemonConfig``.

The controller renders these into the ResourceClaimTemplates it creates; users normally never write
them. Invariants owned here: ``domainID`` must be non-empty ("domainID cannot be empty") — so the
built-in defaults, which have an empty id, fail validation when they are the config chosen, as upstream;
normalizing changes nothing.
"""

from __future__ import annotations

__all__ = ["ChannelAllocationMode", "ComputeDomainChannelConfig", "ComputeDomainDaemonConfig"]

import enum
from typing import ClassVar, Self

import attrs

from nvdra.core.config._base import ConfigModel, child_path, json_name
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates


class ChannelAllocationMode(enum.StrEnum):
    """Which IMEX channels a workload gets: one, or all 2048."""

    SINGLE = "Single"
    ALL = "All"


@attrs.frozen(kw_only=True)
class _DomainConfig(ConfigModel):
    """What both ComputeDomain configs share: the domain's UID, which must not be empty."""

    domain_id: str = attrs.field(metadata=json_name("domainID"))

    def normalize(self, gates: FeatureGates) -> Self:
        """No implied defaults (upstream's Normalize is a no-op)."""
        return self

    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """An empty ``domainID``, located under ``path``; nothing else can be wrong."""
        if self.domain_id:
            return []
        return [
            ConfigError(
                child_path(path, "domainID"),
                self.domain_id,
                "the ComputeDomain's UID",
                reason="domainID cannot be empty:",
            )
        ]


@attrs.frozen(kw_only=True)
class ComputeDomainChannelConfig(_DomainConfig):
    """Opaque config of kind ``ComputeDomainChannelConfig`` (applies to ``channel`` devices)."""

    KIND: ClassVar[str] = "ComputeDomainChannelConfig"

    allocation_mode: ChannelAllocationMode | None = attrs.field(
        default=None, metadata=json_name("allocationMode")
    )


@attrs.frozen(kw_only=True)
class ComputeDomainDaemonConfig(_DomainConfig):
    """Opaque config of kind ``ComputeDomainDaemonConfig`` (applies to ``daemon`` devices)."""

    KIND: ClassVar[str] = "ComputeDomainDaemonConfig"
