"""``nvdra-cd-plugin``: the compute-domain.nvidia.com DRA kubelet plugin process.

Flags and environment twins are upstream's CD plugin set (the GPU plugin's minus ``--image-name`` and
``--additional-xids-to-ignore``), plus ``--simulate PROFILE`` (``NVDRA_SIMULATE``) and ``--pod-uid``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from nvdra.core.errors import NvdraError
from nvdra.plugins.computedomain.serve import CdPluginConfig, serve_until_signalled
from nvdra.plugins.gpu.main import _opt

__all__ = ["main"]

_PATHS = {
    "cdi_root",
    "nvidia_driver_root",
    "container_driver_root",
    "kubelet_registrar_directory_path",
    "kubelet_plugins_directory_path",
}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@_opt("--node-name", env="NODE_NAME", required=True, help="Name of the node this plugin runs on.")
@_opt(
    "--namespace", env="NAMESPACE", default="default", show_default=True, help="Driver namespace (cliques)."
)
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
)
@_opt("--container-driver-root", env="DRIVER_ROOT_CTR_PATH", default="/driver-root", show_default=True)
@_opt("--nvidia-cdi-hook-path", env="NVIDIA_CDI_HOOK_PATH", default="")
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
@_opt("--healthcheck-port", env="HEALTHCHECK_PORT", default=-1, type=int, show_default=True)
@_opt("--http-endpoint", env="HTTP_ENDPOINT", default="")
@_opt("--metrics-path", env="METRICS_PATH", default="/metrics", show_default=True)
@_opt("--kubeconfig", env="KUBECONFIG", default="")
@_opt("--kube-api-qps", env="KUBE_API_QPS", default=5.0, type=float, show_default=True)
@_opt("--kube-api-burst", env="KUBE_API_BURST", default=10, type=int, show_default=True)
@_opt("--feature-gates", env="FEATURE_GATES", default="")
@_opt("--simulate", env="NVDRA_SIMULATE", default="", help="Simulated node profile (e.g. gb200-nvl72-tray).")
@_opt("--pod-uid", env="POD_UID", default="")
@click.option("-v", "verbosity", count=True, help="More logging.")
def main(verbosity: int, **flags: Any) -> None:
    """Run the compute-domain.nvidia.com DRA kubelet plugin."""
    logging.basicConfig(
        level=logging.DEBUG if verbosity >= 2 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    values: dict[str, Any] = {k: Path(v) if k in _PATHS else v for k, v in flags.items()}
    config = CdPluginConfig(**values)
    try:
        serve_until_signalled(config)
    except NvdraError as exc:
        click.echo(f"nvdra-cd-plugin: {exc}", err=True)
        sys.exit(1)
