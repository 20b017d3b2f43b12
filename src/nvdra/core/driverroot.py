"""Where a driver root keeps the NVIDIA libraries: the one list every reader of a driver root uses.

Both the CDI driver-root discovery (:mod:`nvdra.cdi.driverroot`) and the NVML loader
(:mod:`nvdra.nvml._pynvml`) search these directories, so a library the CDI spec mounts into a
container is the library the plugin itself loads. Pure data: no I/O.
"""

from __future__ import annotations

__all__ = ["LIBRARY_DIRS", "NVML_LIBRARY_DIRS"]

LIBRARY_DIRS: tuple[str, ...] = (
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
)
"""Where upstream looks for the driver libraries, relative to the driver root, in search order."""

NVML_LIBRARY_DIRS: tuple[str, ...] = ("/", *LIBRARY_DIRS)
"""Where upstream looks for ``libnvidia-ml.so.1``: the root itself first, then :data:`LIBRARY_DIRS`
(upstream-driver §1.1)."""
