"""nvdra: the NVIDIA GPU DRA driver for Kubernetes, as a typed Python library.

Packages (lower layers never import higher ones):

- :mod:`nvdra.core` — device models, opaque config API, feature gates, ResourceSlice rendering
- :mod:`nvdra.nvml` — NVML backends (real, simulated) and discovery
- :mod:`nvdra.cdi` — CDI spec model, rendering and atomic writing
- :mod:`nvdra.kubeletplugin` — the reusable DRA kubelet-plugin toolkit
- :mod:`nvdra.plugins` — the NVIDIA drivers and console scripts built on the above

Importing :mod:`nvdra` loads nothing heavy (no grpc, kubernetes, pynvml or click).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
