"""The device attributes that tell the scheduler what ``fabricTopologyConfig`` asks of a GPU.

One name per device-choosing field, all in the driver's domain ``gpu.nvidia.com`` (qualified in CEL as
``device.attributes["gpu.nvidia.com"].<name>``), published on every full GPU (and copied onto its VFIO
view) while ``FabricTopologySupport`` is on:

=============================  ======  =========================================================
attribute                      type    meaning (the ``fabricTopologyConfig`` field it serves)
=============================  ======  =========================================================
``partition<N>``               int     id of the N-GPU partition holding the GPU (partitionSize,
                                       partitionIDs); N in 1, 2, 4, 8
``partition<N>Bandwidth``      int     NVLink GB/s per GPU inside that partition, all links
                                       (minBandwidth under BareMetal and SharedNVSwitch)
``partition<N>PassthroughBandwidth``   int  the same for a fully passed-through VM (minBandwidth
                                       under FullPassthrough); only where no host FM runs
``partition<N>LatencyNs``      int     modelled slowest GPU-to-GPU latency inside it, ns (maxLatency)
``fabricManagerMode``          string  ``none`` | ``bare-metal`` | ``shared-nvswitch`` | ``vgpu``
                                       (virtualizationModel: which models the node can serve)
``fabricPartitionSource``      string  where the partition table came from: ``fabric-manager``
                                       (FM's live listing), a board table name, or ``derived``
=============================  ======  =========================================================

Attribute values are int, bool, string or version (no floats), so latency is published in integer
nanoseconds and ``maxLatency`` (ms) is compared as ``floor(maxLatency * 1e6)``.
"""

from __future__ import annotations

__all__ = [
    "DOMAIN",
    "MODE_ATTRIBUTE",
    "MODE_VALUES",
    "SOURCE_ATTRIBUTE",
    "bandwidth_attribute",
    "is_board_attribute",
    "latency_attribute",
    "latency_ns",
    "max_latency_ns",
    "mode_value",
    "model_modes",
    "partition_attribute",
    "passthrough_bandwidth_attribute",
]

import math
import re
from collections.abc import Mapping

from nvdra.core.config.fabric import VirtualizationModel
from nvdra.fabric.models import POLICIES, FabricMode

DOMAIN = "gpu.nvidia.com"
"""The GPU driver's name, the domain of its attributes (``nvdra.plugins.gpu.config.DRIVER_NAME``)."""

MODE_ATTRIBUTE = "fabricManagerMode"
SOURCE_ATTRIBUTE = "fabricPartitionSource"

MODE_VALUES: Mapping[FabricMode | None, str] = {
    None: "none",
    FabricMode.BARE_METAL: "bare-metal",
    FabricMode.SHARED_NVSWITCH: "shared-nvswitch",
    FabricMode.VGPU: "vgpu",
}
"""``fabricManagerMode`` per node Fabric Manager mode (None: no Fabric Manager on the host)."""


def mode_value(mode: FabricMode | None) -> str:
    """The ``fabricManagerMode`` attribute value of a node in ``mode``."""
    return MODE_VALUES[mode]


def model_modes(model: VirtualizationModel) -> tuple[str, ...]:
    """The ``fabricManagerMode`` values of nodes that can serve ``model`` (from its policy), sorted."""
    return tuple(sorted(MODE_VALUES[m] for m in POLICIES[model].node_modes))


def partition_attribute(size: int) -> str:
    """``partition<size>``: upstream's name for the id of the size-GPU partition holding a GPU."""
    return f"partition{size}"


def bandwidth_attribute(size: int) -> str:
    """``partition<size>Bandwidth``."""
    return f"partition{size}Bandwidth"


def passthrough_bandwidth_attribute(size: int) -> str:
    """``partition<size>PassthroughBandwidth``."""
    return f"partition{size}PassthroughBandwidth"


def latency_attribute(size: int) -> str:
    """``partition<size>LatencyNs``."""
    return f"partition{size}LatencyNs"


def latency_ns(ms: float) -> int:
    """Milliseconds as the integer nanoseconds the latency attribute holds (rounded to nearest)."""
    return round(ms * 1_000_000)


def max_latency_ns(ms: float) -> int:
    """A ``maxLatency`` bound (ms) as the largest integer nanosecond count that meets it."""
    return math.floor(ms * 1_000_000 + 1e-6)


_BOARD = re.compile(
    r"^(?:partition\d+(?:Bandwidth|PassthroughBandwidth|LatencyNs)?|gpuModuleID|nvlinkBandwidth)$"
)


def is_board_attribute(name: str) -> bool:
    """Whether a GPU attribute describes the board and its fabric, not the driver bound to the GPU (so a
    GPU's VFIO view carries it too)."""
    return name in (MODE_ATTRIBUTE, SOURCE_ATTRIBUTE) or _BOARD.match(name) is not None
