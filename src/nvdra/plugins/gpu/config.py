"""The GPU kubelet plugin's settings, as parsed from flags and their environment twins."""

from __future__ import annotations

from pathlib import Path

import attrs

__all__ = ["DRIVER_NAME", "PluginConfig"]

DRIVER_NAME = "gpu.nvidia.com"


@attrs.frozen(kw_only=True)
class PluginConfig:
    """Everything ``serve`` needs. Flag names follow the upstream Go plugin (see ``main.py``)."""

    node_name: str
    namespace: str = "default"
    cdi_root: Path = Path("/etc/cdi")
    nvidia_driver_root: Path = Path("/")
    container_driver_root: Path = Path("/driver-root")
    nvidia_cdi_hook_path: str = ""
    image_name: str = ""
    kubelet_registrar_directory_path: Path = Path("/var/lib/kubelet/plugins_registry")
    kubelet_plugins_directory_path: Path = Path("/var/lib/kubelet/plugins")
    healthcheck_port: int = -1
    additional_xids_to_ignore: str = ""
    health_quiet_period: float = 300.0  # seconds without a new XID before its taint clears; 0 = never
    http_endpoint: str = ""
    metrics_path: str = "/metrics"
    kubeconfig: str = ""
    kube_api_qps: float = 5.0
    kube_api_burst: int = 10
    feature_gates: str = ""
    simulate: str = ""
    simulate_state: str = ""  # with simulate: a directory where the simulated hardware's state lives
    pod_uid: str = ""
    publish_fabric_partitions: bool = False  # NVLink partitions as devices (needs FabricTopologySupport)
    driver_name: str = DRIVER_NAME

    @property
    def plugin_dir(self) -> Path:
        """``<kubelet plugins dir>/<driver>``: checkpoint, DRA socket, simulated driver root."""
        return self.kubelet_plugins_directory_path / self.driver_name

    def describe(self) -> dict[str, str]:
        """Every setting as a string, for the startup log."""
        return {f.name: str(getattr(self, f.name)) for f in attrs.fields(PluginConfig)}
