"""Time-slicing plans (gate ``TimeSlicingSettings``): which full GPUs get which time slice.

Invariants owned here (upstream-driver §5.1):
- only full GPUs are touched; MIG devices cannot set a time slice, so TimeSlicing on them is a no-op;
- a group's plan sets compute mode DEFAULT, then the interval (Default/Short/Medium/Long → 0..3) on
  each of its GPUs; undoing it puts every GPU back to DEFAULT and time slice 0;
- nothing is planned while the gate is off (the GPU's own default time-slicing applies).
"""

from __future__ import annotations

__all__ = ["TIMESLICE_KIND", "TimeSlice", "plan_time_slicing"]

from collections.abc import Sequence
from typing import ClassVar

import attrs

from nvdra.core.config import GpuConfig, SharingStrategy
from nvdra.core.config.api import Config
from nvdra.core.effects import EffectRecord
from nvdra.core.featuregates import FeatureGates, Gate

TIMESLICE_KIND = "timeslice"


@attrs.frozen(kw_only=True)
class TimeSlice(EffectRecord):
    """Set compute mode DEFAULT and this nvidia-smi time slice (0..3) on these full GPUs."""

    KIND: ClassVar[str] = TIMESLICE_KIND
    gpus: tuple[str, ...]
    interval: int


def plan_time_slicing(config: Config, gpu_uuids: Sequence[str], gates: FeatureGates) -> list[TimeSlice]:
    """The time-slice record of one config group (empty when nothing is to be set).

    Args:
        config: the group's normalized, validated config.
        gpu_uuids: UUIDs of the group's *full* GPUs (MIG devices excluded by the caller).
        gates: the feature gates.

    Returns:
        one :class:`TimeSlice` (JSON ``{"kind": "timeslice", "gpus": [...], "interval": 0..3}``) or none.
    """
    if not gates.enabled(Gate.TIME_SLICING_SETTINGS) or not gpu_uuids or not isinstance(config, GpuConfig):
        return []
    sharing = config.sharing
    if sharing is None or sharing.strategy is not SharingStrategy.TIME_SLICING:
        return []
    interval = sharing.get_time_slicing_config().effective_interval
    return [TimeSlice(gpus=tuple(sorted(gpu_uuids)), interval=interval.nvidia_smi_value)]
