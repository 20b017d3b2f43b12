"""nvdra: the NVIDIA GPU DRA driver for Kubernetes, as a typed Python library.

Packages (lower layers never import higher ones; docs/architecture.md has the picture):

- :mod:`nvdra.core` — device models, opaque config API, feature gates, ResourceSlice rendering
- :mod:`nvdra.nvml` — NVML backends (real, simulated) and discovery
- :mod:`nvdra.cdi` — CDI spec model, rendering and atomic writing
- :mod:`nvdra.fabric` — NVLink topology, Fabric Manager partitions and the partition planner
- :mod:`nvdra.imex` — IMEX channels, daemon configs and ComputeDomain reconcile planning
- :mod:`nvdra.alloc` — the scheduler's allocation rules and CEL, offline
- :mod:`nvdra.kubeletplugin` — the reusable DRA kubelet-plugin toolkit
- :mod:`nvdra.plugins` — the NVIDIA drivers and console scripts built on the above
- :mod:`nvdra.tool` — the ``nvdra`` operator tool

Importing :mod:`nvdra` loads nothing heavy (no grpc, kubernetes, pynvml or click): the packages are
attributes loaded on first use (``nvdra.alloc.Allocator`` works after a bare ``import nvdra``).
"""

from __future__ import annotations

__all__ = [
    "__version__",
    "alloc",
    "cdi",
    "core",
    "fabric",
    "imex",
    "kubeletplugin",
    "nvml",
    "plugins",
    "tool",
]

import importlib
from types import ModuleType

__version__ = "0.1.0"

_PACKAGES = ("alloc", "cdi", "core", "fabric", "imex", "kubeletplugin", "nvml", "plugins", "tool")


def __getattr__(name: str) -> ModuleType:
    """Load a sub-package on first access."""
    if name in _PACKAGES:
        return importlib.import_module(f"nvdra.{name}")
    raise AttributeError(f"module 'nvdra' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
