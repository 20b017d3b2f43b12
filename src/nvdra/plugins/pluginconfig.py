"""Settings both DRA kubelet plugins share, as parsed from the flags of :mod:`nvdra.plugins.flags`."""

from __future__ import annotations

__all__ = ["KubeletPluginConfig", "SimulatedTree", "simulated_profile_dir"]

import hashlib
from pathlib import Path
from typing import Literal

import attrs

SimulatedTree = Literal["driver-root", "sysfs"]
"""The trees of a simulated host: ``driver-root`` (device nodes, libraries, binaries) and ``sysfs``
(its ``sys`` and ``dev`` trees, for VFIO passthrough)."""


def simulated_profile_dir(base: Path, simulate: str) -> Path:
    """``base/<profile key>``: the directory of one simulated node profile's host state.

    A built-in profile's key is its name; a profile file's key is its stem and a hash of its absolute
    path (two files named alike stay apart). Every simulated host tree (sysfs, driver root) lives
    under this directory, so state one profile left behind is never seen by another.
    """
    if "/" not in simulate and not simulate.endswith((".yaml", ".yml")):
        return base / simulate
    path = Path(simulate).absolute()
    return base / f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


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
        """``<kubelet plugins dir>/<driver>``: checkpoint, DRA socket, simulated node trees."""
        return self.kubelet_plugins_directory_path / self.driver_name

    @property
    def checkpoint_path(self) -> Path:
        """``<plugin dir>/checkpoint.json``: the prepared claims (the upstream Go plugin's file there too)."""
        return self.plugin_dir / "checkpoint.json"

    @property
    def simulated_host_dir(self) -> Path:
        """With ``--simulate``: ``<plugin dir>/simulated/<profile>``, the simulated host's trees
        (:data:`SimulatedTree`, see :meth:`simulated_tree`). Keyed by profile: a node simulated as
        another profile in the same plugin directory starts clean.
        """
        return simulated_profile_dir(self.plugin_dir / "simulated", self.simulate)

    def simulated_tree(self, name: SimulatedTree, *, create: bool = False) -> Path:
        """With ``--simulate``: the simulated host's tree ``name``, in :attr:`simulated_host_dir`.

        ``create`` first creates :attr:`simulated_host_dir` and every missing directory above it, each
        mode 0750 (``mkdir(parents=True)`` would give the parents the umask's mode); the tree itself is
        laid out by whoever fills it.
        """
        host_dir = self.simulated_host_dir
        if create:
            missing = []
            path = host_dir
            while not path.exists():
                missing.append(path)
                path = path.parent
            for directory in reversed(missing):
                directory.mkdir(mode=0o750, exist_ok=True)
        return host_dir / name

    def describe(self) -> dict[str, str]:
        """Every setting as a string, for the startup log."""
        return {f.name: str(getattr(self, f.name)) for f in attrs.fields(type(self))}
