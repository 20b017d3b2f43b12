"""``fabricTopologyConfig``: what a GPU claim asks of the NVLink fabric (ARCHITECTURE §4).

The rules nvdra adopts (decided here; the user's README example must decode and validate as written):

- ``strategy`` Auto (default) | Manual | Disabled.
  - Auto: the driver checks the allocated GPUs form a good partition. ``partitionIDs``, when given,
    *narrow* the candidates (the allocated GPUs must form one of them); they are not rejected.
  - Manual: ``partitionIDs`` is required (at least one); the allocated GPUs must form one of them.
  - Disabled: no fabric logic; the constraint fields (``partitionSize``, ``partitionIDs``,
    ``minBandwidth``, ``maxLatency``) are rejected, because silently ignoring a constraint the user
    wrote would hand out GPUs that may talk over PCIe.
- ``virtualizationModel`` BareMetal (default) | FullPassthrough | SharedNVSwitch | VGPU. VGPU switches
  fabric logic off, so the constraint fields are rejected with it as under Disabled.
- ``partitionSize`` 2 | 4 | 8, optional: absent means "the size of the allocated group" (the prepare-time
  check then requires that group to be 2, 4 or 8 GPUs). Allowed under Manual too, as a cross-check.
- ``minBandwidth`` (GB/s) and ``maxLatency`` (ms): finite numbers ≥ 0, integers accepted (the API server
  stores ``600.0`` as ``600``); absent means no constraint (no invented default).
- ``partitionIDs``: each ``"<N>"`` or ``"partition-<N>"`` (N the Fabric Manager partition id, 0 ≤ N <
  2**32), no duplicates; stored as ints, encoded back as ``"partition-<N>"``. An empty list is the same as
  absent.
- ``preferNVLink`` (default true while fabric logic is active): a preference, never a constraint.
"""

from __future__ import annotations

__all__ = [
    "PARTITION_SIZES",
    "FabricStrategy",
    "FabricTopologyConfig",
    "VirtualizationModel",
    "parse_partition_id",
]

import enum
import math
import re
from typing import Any

import attrs

from nvdra.core.config._base import FieldProblem, allowed_names, child_path, json_name
from nvdra.core.errors import ConfigError

PARTITION_SIZES = (2, 4, 8)
"""GPU counts a fabric partition may have."""

_PARTITION_ID = re.compile(r"^(?:partition-)?(\d+)$")
_PARTITION_ALLOWED = '"<N>" or "partition-<N>" with 0 <= N < 2**32'
_MAX_PARTITION = 2**32


class FabricStrategy(enum.StrEnum):
    """How the driver treats the fabric for a claim."""

    AUTO = "Auto"
    MANUAL = "Manual"
    DISABLED = "Disabled"


class VirtualizationModel(enum.StrEnum):
    """Who manages NVLink partitions (see ARCHITECTURE §4 for what each model activates)."""

    BARE_METAL = "BareMetal"
    FULL_PASSTHROUGH = "FullPassthrough"
    SHARED_NVSWITCH = "SharedNVSwitch"
    VGPU = "VGPU"


def parse_partition_id(text: str) -> int:
    """Parse ``"<N>"`` or ``"partition-<N>"`` into N.

    Raises:
        ValueError: any other spelling, or N outside 0..2**32-1.
    """
    match = _PARTITION_ID.match(text)
    if match is None or int(match.group(1)) >= _MAX_PARTITION:
        raise ValueError(f"invalid partition id {text!r}; allowed: {_PARTITION_ALLOWED}")
    return int(match.group(1))


def decode_partition_ids(raw: Any) -> tuple[int, ...]:
    """Decode the JSON list of partition ids, reporting every bad element by index."""
    if not isinstance(raw, list | tuple):
        raise FieldProblem(raw, f"a list of {_PARTITION_ALLOWED}", reason="expected a list, got")
    ids: list[int] = []
    problems: list[FieldProblem] = []
    for index, item in enumerate(raw):
        try:
            if not isinstance(item, str):
                raise ValueError(item)
            ids.append(parse_partition_id(item))
        except ValueError:
            problems.append(
                FieldProblem(item, _PARTITION_ALLOWED, reason="invalid partition id", suffix=f"[{index}]")
            )
    if problems:
        first = problems[0]
        raise FieldProblem(
            first.value, first.allowed, reason=first.reason, suffix=first.suffix, others=problems[1:]
        )
    return tuple(ids)


def encode_partition_ids(ids: tuple[int, ...] | None) -> list[str] | None:
    """Encode partition ids as ``"partition-<N>"`` (None stays None so the field is omitted)."""
    return None if ids is None else [f"partition-{n}" for n in ids]


@attrs.frozen(kw_only=True)
class FabricTopologyConfig:
    """``GpuConfig.fabricTopologyConfig``: fabric requirements of the GPUs of one config group."""

    strategy: FabricStrategy | None = attrs.field(default=None, metadata=json_name("strategy"))
    partition_size: int | None = attrs.field(default=None, metadata=json_name("partitionSize"))
    virtualization_model: VirtualizationModel | None = attrs.field(
        default=None, metadata=json_name("virtualizationModel")
    )
    min_bandwidth: float | None = attrs.field(default=None, metadata=json_name("minBandwidth"))
    max_latency: float | None = attrs.field(default=None, metadata=json_name("maxLatency"))
    partition_ids: tuple[int, ...] | None = attrs.field(
        default=None,
        metadata=json_name("partitionIDs", decode=decode_partition_ids, encode=encode_partition_ids),
    )
    prefer_nvlink: bool | None = attrs.field(default=None, metadata=json_name("preferNVLink"))

    @property
    def effective_strategy(self) -> FabricStrategy:
        """The strategy, Auto when unset."""
        return self.strategy or FabricStrategy.AUTO

    @property
    def effective_model(self) -> VirtualizationModel:
        """The virtualization model, BareMetal when unset."""
        return self.virtualization_model or VirtualizationModel.BARE_METAL

    @property
    def active(self) -> bool:
        """Whether fabric logic applies: not Disabled and not under vGPU."""
        return (
            self.effective_strategy is not FabricStrategy.DISABLED
            and self.effective_model is not VirtualizationModel.VGPU
        )

    def normalize(self) -> FabricTopologyConfig:
        """Fill strategy Auto, model BareMetal, and preferNVLink true while fabric logic is active."""
        filled = attrs.evolve(
            self, strategy=self.effective_strategy, virtualization_model=self.effective_model
        )
        if filled.prefer_nvlink is None and filled.active:
            filled = attrs.evolve(filled, prefer_nvlink=True)
        return filled

    def problems(self, path: str) -> list[ConfigError]:
        """Everything wrong with this config, each located under ``path``."""
        out: list[ConfigError] = []
        if self.partition_size is not None and self.partition_size not in PARTITION_SIZES:
            out.append(ConfigError(child_path(path, "partitionSize"), self.partition_size, "2, 4 or 8"))
        for name, value in (("minBandwidth", self.min_bandwidth), ("maxLatency", self.max_latency)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                out.append(ConfigError(child_path(path, name), value, "a finite number >= 0"))
        ids = self.partition_ids or ()
        if len(set(ids)) != len(ids):
            dupes = sorted({n for n in ids if ids.count(n) > 1})
            out.append(
                ConfigError(
                    child_path(path, "partitionIDs"),
                    [f"partition-{n}" for n in dupes],
                    "distinct partition ids",
                    reason="duplicate partition ids",
                )
            )
        strategy = self.effective_strategy
        if strategy is FabricStrategy.MANUAL and not ids:
            out.append(
                ConfigError(
                    child_path(path, "partitionIDs"),
                    self.partition_ids,
                    f"at least one partition id ({_PARTITION_ALLOWED})",
                    reason='strategy "Manual" requires partitionIDs; got',
                )
            )
        if not self.active:
            why = (
                'strategy "Disabled"'
                if strategy is FabricStrategy.DISABLED
                else 'virtualizationModel "VGPU" (fabric logic is off under vGPU)'
            )
            out += self._forbidden_constraints(path, why)
        return out

    def _forbidden_constraints(self, path: str, why: str) -> list[ConfigError]:
        present = {
            "partitionSize": self.partition_size,
            "partitionIDs": list(self.partition_ids) if self.partition_ids else None,
            "minBandwidth": self.min_bandwidth,
            "maxLatency": self.max_latency,
        }
        return [
            ConfigError(
                child_path(path, name),
                value,
                f"no {name} with {why}; remove it, or use strategy {allowed_names(['Auto', 'Manual'])}",
                reason=f"{name} is not used with {why}:",
            )
            for name, value in present.items()
            if value is not None
        ]
