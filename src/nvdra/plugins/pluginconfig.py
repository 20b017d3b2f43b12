"""Settings both DRA kubelet plugins share, as parsed from the flags of :mod:`nvdra.plugins.flags`."""

from __future__ import annotations

from pathlib import Path

import attrs

__all__ = ["KubeletPluginConfig"]


@attrs.frozen(kw_only=True)
class KubeletPluginConfig:
    """The common flags; each plugin's config subclasses this and adds its own (and its driver name)."""

    node_name: str
    driver_name: str
    namespace: str = "default"
    cdi_root: Path = Path("/etc/cdi")
    nvidia_driver_root: Path = Path("/")
    container_driver_root: Path = Path("/driver-root")
    nvidia_cdi_hook_path: str = ""
    kubelet_registrar_directory_path: Path = Path("/var/lib/kubelet/plugins_registry")
    kubelet_plugins_directory_path: Path = Path("/var/lib/kubelet/plugins")
    healthcheck_port: int = -1
    http_endpoint: str = ""
    metrics_path: str = "/metrics"
    kubeconfig: str = ""
    kube_api_qps: float = 5.0
    kube_api_burst: int = 10
    feature_gates: str = ""
    simulate: str = ""
    pod_uid: str = ""

    @property
    def plugin_dir(self) -> Path:
        """``<kubelet plugins dir>/<driver>``: checkpoint, DRA socket, simulated driver root."""
        return self.kubelet_plugins_directory_path / self.driver_name

    def describe(self) -> dict[str, str]:
        """Every setting as a string, for the startup log."""
        return {f.name: str(getattr(self, f.name)) for f in attrs.fields(type(self))}
