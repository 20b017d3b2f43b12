"""``nvdra-cd-plugin``: the compute-domain.nvidia.com DRA kubelet plugin process.

Flags and environment twins are upstream's CD plugin set (the GPU plugin's minus ``--image-name`` and
``--additional-xids-to-ignore``), plus ``--simulate PROFILE`` (``NVDRA_SIMULATE``) and ``--pod-uid``.
"""

from __future__ import annotations

__all__ = ["main"]

from typing import Any

import click

from nvdra.plugins.computedomain.serve import CdPluginConfig, serve_until_signalled
from nvdra.plugins.flags import flag_values, kubelet_plugin_options, option
from nvdra.plugins.runner import run_plugin_process


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@kubelet_plugin_options(namespace_help="Driver namespace (ComputeDomainCliques live there).")
@option(
    "--imex-mode",
    env="IMEX_MODE",
    default="driverManaged",
    show_default=True,
    help="IMEX deployment mode: driverManaged or hostManaged (the node runs nvidia-imex itself; needs "
    "the HostManagedIMEXDaemon feature gate).",
)
@option(
    "--imex-isolation",
    env="IMEX_ISOLATION",
    default="domain",
    show_default=True,
    help="IMEX isolation strategy: domain (all workloads in the same IMEX domain share channel 0) or "
    "channel (not yet supported).",
)
@option(
    "--imex-host-socket-path",
    env="IMEX_HOST_SOCKET_PATH",
    default="/etc/nvidia-imex/imex_ctrl.sock",
    show_default=True,
    help="Path (under the driver root) of the host nvidia-imex daemon's command socket; with "
    "--imex-mode=hostManaged, nvidia-imex-ctl -q asks it before a channel is handed out.",
)
def main(verbosity: int, **flags: Any) -> None:
    """Run the compute-domain.nvidia.com DRA kubelet plugin."""
    run_plugin_process(
        "nvdra-cd-plugin", verbosity, lambda: serve_until_signalled(CdPluginConfig(**flag_values(flags)))
    )
