"""Handles to a running GPU plugin: what :func:`nvdra.plugins.gpu.serve.serve` yields.

A module of its own so that both :mod:`nvdra.plugins.gpu.serve`, which must stay light until the
plugin has registered, and :mod:`nvdra.plugins.gpu.assembly`, which builds the driver and this record,
can name it without importing each other.
"""

from __future__ import annotations

__all__ = ["RunningPlugin"]

from typing import TYPE_CHECKING

import attrs

from nvdra.core.featuregates import FeatureGates
from nvdra.plugins.gpu.config import PluginConfig

if TYPE_CHECKING:
    from nvdra.core.devices import Inventory
    from nvdra.kubeletplugin import Helper
    from nvdra.nvml import NvmlBackend
    from nvdra.plugins.devicestatus import ClaimStatusReporter
    from nvdra.plugins.gpu.driver import GpuDriver
    from nvdra.plugins.gpu.effects import Effects


@attrs.frozen(kw_only=True)
class RunningPlugin:
    """Handles to a plugin started by :func:`~nvdra.plugins.gpu.serve.serve`."""

    config: PluginConfig
    gates: FeatureGates
    backend: NvmlBackend
    inventory: Inventory
    driver: GpuDriver
    helper: Helper
    liveness_port: int | None
    metrics_port: int | None = None
    effects: Effects | None = None
    status: ClaimStatusReporter | None = None
    """Writes prepared devices to the claims' status.devices in the background (``flush()`` waits)."""
