"""``nvdra-gpu-plugin``: the gpu.nvidia.com DRA kubelet plugin process.

Flags and their environment twins follow the upstream Go plugin, so upstream Helm values map one to
one; ``--simulate PROFILE`` (``NVDRA_SIMULATE``) runs on a simulated node instead of NVML.
"""

from __future__ import annotations

__all__ = ["main"]

from typing import Any

import click

from nvdra.plugins.flags import flag_values, kubelet_plugin_options, option
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve_until_signalled
from nvdra.plugins.runner import run_plugin_process


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@kubelet_plugin_options(namespace_help="Namespace for MPS control daemons.")
@option("--image-name", env="IMAGE_NAME", default="", help="Image used for MPS control daemons.")
@option(
    "--additional-xids-to-ignore",
    env="ADDITIONAL_XIDS_TO_IGNORE",
    default="",
    help="Comma list of more XID error codes that do not taint a GPU (with NVMLDeviceHealthCheck).",
)
@option(
    "--health-quiet-period",
    env="HEALTH_QUIET_PERIOD",
    default=300.0,
    type=click.FloatRange(min=0),
    show_default=True,
    help="Seconds without a new XID after which a GPU's xid taint clears (0: taints stay until restart).",
)
@option(
    "--simulate-state",
    env="NVDRA_SIMULATE_STATE",
    default="",
    help="With --simulate: a directory keeping the simulated hardware's state (MIG devices, compute "
    "modes, Fabric Manager partitions, boot id, sysfs, driver root) across plugin restarts, in a "
    "subdirectory per profile.",
)
@option(
    "--publish-fabric-partitions",
    env="NVDRA_PUBLISH_FABRIC_PARTITIONS",
    is_flag=True,
    default=False,
    help="With FabricTopologySupport: also publish each NVLink partition as a device of its own "
    "(type partition, consuming its GPUs' counters; needs DRAPartitionableDevices; not with DynamicMIG).",
)
@option(
    "--consumable-shares",
    env="CONSUMABLE_SHARES",
    default="disabled",
    show_default=True,
    help="Configure consumable shares support ('disabled', 'memory', 'unlimited', or a positive integer); "
    "needs the ConsumableShares feature gate. GPUs and MIG devices are then published with "
    "allowMultipleAllocations, so several claims share one device.",
)
def main(verbosity: int, **flags: Any) -> None:
    """Run the gpu.nvidia.com DRA kubelet plugin."""
    run_plugin_process(
        "nvdra-gpu-plugin", verbosity, lambda: serve_until_signalled(PluginConfig(**flag_values(flags)))
    )
