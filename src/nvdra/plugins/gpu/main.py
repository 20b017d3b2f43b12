"""``nvdra-gpu-plugin``: the gpu.nvidia.com DRA kubelet plugin process.

Flags and their environment twins follow the upstream Go plugin, so upstream Helm values map one to
one; ``--simulate PROFILE`` (``NVDRA_SIMULATE``) runs on a simulated node instead of NVML.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from nvdra.core.errors import NvdraError
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve_until_signalled

__all__ = ["main"]


F = TypeVar("F", bound=Callable[..., Any])


def _opt(*names: str, env: str | list[str], **kw: Any) -> Callable[[F], F]:
    """A click option whose environment twin is named like upstream's (not by a prefix rule)."""
    return click.option(*names, envvar=env, show_envvar=True, **kw)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@_opt("--node-name", env="NODE_NAME", required=True, help="Name of the node this plugin runs on.")
@_opt("--namespace", env="NAMESPACE", default="default", show_default=True, help="Namespace for MPS daemons.")
@_opt(
    "--cdi-root", env="CDI_ROOT", default="/etc/cdi", show_default=True, help="Where CDI specs are written."
)
@_opt(
    "--nvidia-driver-root",
    "--host_driver-root",
    "--host-driver-root",
    "nvidia_driver_root",
    env=["NVIDIA_DRIVER_ROOT", "HOST_DRIVER_ROOT"],
    default="/",
    show_default=True,
    help="Host path of the NVIDIA driver installation.",
)
@_opt(
    "--container-driver-root",
    env="DRIVER_ROOT_CTR_PATH",
    default="/driver-root",
    show_default=True,
    help="Where the driver root is mounted inside this container.",
)
@_opt("--nvidia-cdi-hook-path", env="NVIDIA_CDI_HOOK_PATH", default="", help="Host path of nvidia-cdi-hook.")
@_opt("--image-name", env="IMAGE_NAME", default="", help="Image used for MPS control daemons.")
@_opt(
    "--kubelet-registrar-directory-path",
    env="KUBELET_REGISTRAR_DIRECTORY_PATH",
    default="/var/lib/kubelet/plugins_registry",
    show_default=True,
)
@_opt(
    "--kubelet-plugins-directory-path",
    env="KUBELET_PLUGINS_DIRECTORY_PATH",
    default="/var/lib/kubelet/plugins",
    show_default=True,
)
@_opt(
    "--healthcheck-port",
    env="HEALTHCHECK_PORT",
    default=-1,
    type=int,
    show_default=True,
    help="gRPC liveness port: >0 fixed, 0 random, <0 off.",
)
@_opt("--additional-xids-to-ignore", env="ADDITIONAL_XIDS_TO_IGNORE", default="")
@_opt(
    "--health-quiet-period",
    env="HEALTH_QUIET_PERIOD",
    default=300.0,
    type=click.FloatRange(min=0),
    show_default=True,
    help="Seconds without a new XID after which a GPU's xid taint clears (0: taints stay until restart).",
)
@_opt("--http-endpoint", env="HTTP_ENDPOINT", default="", help="Metrics listen address (off when empty).")
@_opt("--metrics-path", env="METRICS_PATH", default="/metrics", show_default=True)
@_opt("--kubeconfig", env="KUBECONFIG", default="", help="Kubeconfig path; in-cluster config when empty.")
@_opt(
    "--kube-api-qps",
    env="KUBE_API_QPS",
    default=5.0,
    type=float,
    show_default=True,
    help="QPS for background API traffic (claim reads on the prepare path are not throttled).",
)
@_opt("--kube-api-burst", env="KUBE_API_BURST", default=10, type=int, show_default=True)
@_opt("--feature-gates", env="FEATURE_GATES", default="", help="Comma list of Gate=true|false.")
@_opt(
    "--simulate",
    env="NVDRA_SIMULATE",
    default="",
    help="Run on a simulated node: a built-in profile name (e.g. dgx-h100) or a YAML path.",
)
@_opt(
    "--simulate-state",
    env="NVDRA_SIMULATE_STATE",
    default="",
    help="With --simulate: a directory keeping the simulated hardware's state (MIG devices, compute "
    "modes, Fabric Manager partitions, boot id) across plugin restarts.",
)
@_opt(
    "--pod-uid",
    env="POD_UID",
    default="",
    help="Per-instance socket names for rolling updates (kubelet >= 1.33).",
)
@_opt(
    "--publish-fabric-partitions",
    env="NVDRA_PUBLISH_FABRIC_PARTITIONS",
    is_flag=True,
    default=False,
    help="With FabricTopologySupport: also publish each NVLink partition as a device of its own "
    "(type partition, consuming its GPUs' counters; needs DRAPartitionableDevices; not with DynamicMIG).",
)
@click.option("-v", "verbosity", count=True, help="More logging (-v info details, -vv debug).")
def main(verbosity: int, **flags: Any) -> None:
    """Run the gpu.nvidia.com DRA kubelet plugin."""
    logging.basicConfig(
        level=logging.DEBUG if verbosity >= 2 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    paths = {
        "cdi_root",
        "nvidia_driver_root",
        "container_driver_root",
        "kubelet_registrar_directory_path",
        "kubelet_plugins_directory_path",
    }
    values: dict[str, Any] = {k: Path(v) if k in paths else v for k, v in flags.items()}
    config = PluginConfig(**values)
    try:
        serve_until_signalled(config)
    except NvdraError as exc:
        click.echo(f"nvdra-gpu-plugin: {exc}", err=True)
        sys.exit(1)
