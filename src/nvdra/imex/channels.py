"""IMEX channels: which channel ids a workload claim gets (pure).

The driver creates ``NVreg_ImexChannelCount`` channels (default 2048; 0 disables fabric-handle IMEX).
A ComputeDomain's workloads share channel 0 (``Single``, "domain" isolation: the IMEX domain is the
ComputeDomain's own daemons) or get every channel (``All``). Only ``channel-0`` is published.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CHANNEL_COUNT", "PUBLISHED_CHANNEL", "channel_ids"]

from typing import TYPE_CHECKING

from nvdra.core.errors import ConfigError

if TYPE_CHECKING:  # the opaque-config package (cattrs and all) loads with the first call instead:
    # importing nvdra.imex, as the CD plugin does before it serves its sockets, stays light
    from nvdra.core.config import ChannelAllocationMode

DEFAULT_CHANNEL_COUNT = 2048
PUBLISHED_CHANNEL = 0


def channel_ids(
    mode: ChannelAllocationMode | None,
    *,
    count: int = DEFAULT_CHANNEL_COUNT,
    channel: int = PUBLISHED_CHANNEL,
) -> tuple[int, ...]:
    """The channel ids to inject: ``(channel,)`` for Single (the default), ``0 … count-1`` for All.

    Raises:
        ConfigError: ``channel`` is outside ``0 … count-1`` or ``count`` is not positive.
    """
    if count < 1:
        raise ConfigError("imexChannelCount", count, "an integer >= 1 (0 disables IMEX channels)")
    if not 0 <= channel < count:
        raise ConfigError("channel", channel, f"0 … {count - 1}")
    from nvdra.core.config import ChannelAllocationMode

    if mode is ChannelAllocationMode.ALL:
        return tuple(range(count))
    return (channel,)
