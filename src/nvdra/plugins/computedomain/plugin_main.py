"""``nvdra-cd-plugin``: the compute-domain.nvidia.com DRA kubelet plugin process.

Flags and environment twins are upstream's CD plugin set (the GPU plugin's minus ``--image-name`` and
``--additional-xids-to-ignore``), plus ``--simulate PROFILE`` (``NVDRA_SIMULATE``) and ``--pod-uid``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from nvdra.core.errors import NvdraError
from nvdra.plugins.computedomain.serve import CdPluginConfig, serve_until_signalled
from nvdra.plugins.faults import arm_from_environment
from nvdra.plugins.flags import configure_logging, flag_values, kubelet_plugin_options

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@kubelet_plugin_options(namespace_help="Driver namespace (ComputeDomainCliques live there).")
def main(verbosity: int, **flags: Any) -> None:
    """Run the compute-domain.nvidia.com DRA kubelet plugin."""
    configure_logging(verbosity)
    arm_from_environment()
    config = CdPluginConfig(**flag_values(flags))
    try:
        serve_until_signalled(config)
    except NvdraError as exc:
        click.echo(f"nvdra-cd-plugin: {exc}", err=True)
        sys.exit(1)
