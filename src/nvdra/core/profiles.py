"""The names of the simulated node profiles built into nvdra (file stems in ``nvdra/nvml/profiles``).

Kept here rather than in :mod:`nvdra.nvml` (which re-exports them with the profile loader) so that a
plugin checks its ``--simulate`` flag without loading NVML's modules before it serves its sockets
(docs/performance.md, start-up).
"""

from __future__ import annotations

__all__ = ["PROFILE_NAMES"]

PROFILE_NAMES: tuple[str, ...] = (
    "a100-mig",
    "dgx-a100",
    "dgx-h100",
    "gb200-nvl72-tray",
    "hgx-h200",
    "pcie-a100-nvlink",
    "pcie-l4",
)
"""Built-in node profiles (file stems in ``nvdra/nvml/profiles``)."""
