"""The ComputeDomain plugin's flags and its handles once started: what
:func:`nvdra.plugins.computedomain.serve.serve` takes and yields.

A module of its own so that both :mod:`nvdra.plugins.computedomain.serve`, which must stay light until
the plugin has registered, and :mod:`nvdra.plugins.computedomain.assembly`, which builds the driver and
this record, can name them without importing each other.
"""

from __future__ import annotations

__all__ = ["CdPluginConfig", "RunningCdPlugin"]

from typing import TYPE_CHECKING

import attrs

from nvdra.imex import CD_DRIVER_NAME
from nvdra.imex.hostmode import DEFAULT_HOST_SOCKET_PATH
from nvdra.plugins.pluginconfig import KubeletPluginConfig

if TYPE_CHECKING:
    from nvdra.core.featuregates import FeatureGates
    from nvdra.kubeletplugin import Helper
    from nvdra.plugins.computedomain.driver import ComputeDomainDriver


@attrs.frozen(kw_only=True)
class CdPluginConfig(KubeletPluginConfig):
    """``nvdra-cd-plugin`` flags (upstream's CD plugin set plus ``--simulate`` and ``--pod-uid``)."""

    driver_name: str = CD_DRIVER_NAME
    imex_mode: str = "driverManaged"  # upstream's --imex-mode: driverManaged | hostManaged
    imex_isolation: str = "domain"  # upstream's --imex-isolation (channel: not supported yet)
    imex_host_socket_path: str = DEFAULT_HOST_SOCKET_PATH  # under the driver root; hostManaged only


@attrs.frozen(kw_only=True)
class RunningCdPlugin:
    """Handles to a plugin started by :func:`~nvdra.plugins.computedomain.serve.serve`."""

    config: CdPluginConfig
    gates: FeatureGates
    clique_id: str
    driver: ComputeDomainDriver
    helper: Helper | None
    liveness_port: int | None
    metrics_port: int | None = None
