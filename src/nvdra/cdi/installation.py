"""The discovered NVIDIA driver installation: pure records the CDI renderers consume.

A :class:`DriverInstallation` is one snapshot of a driver root, produced by
:func:`nvdra.cdi.driverroot.discover_driver`. Every record holds two paths: ``path`` is where the
container sees the file (the path relative to the driver root) and ``host_path`` is what the container
runtime opens (under the host driver root).

Invariants: records are immutable; device node lists are ordered (control nodes by path, GPU nodes by
minor), so rendering the same installation twice gives byte-identical specs.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_FILE_MODE",
    "CharDevice",
    "DriverFile",
    "DriverInstallation",
    "DriverLibrary",
    "MigCapNodes",
]

import posixpath

import attrs

from nvdra.core.errors import CdiError

DEFAULT_FILE_MODE = 0o666
"""What upstream's specs carry for NVIDIA device nodes (``fileMode: 438``)."""


@attrs.frozen(kw_only=True)
class CharDevice:
    """A character device node as a container should see it."""

    path: str  # in the container, e.g. "/dev/nvidia0"
    host_path: str  # for the runtime, under the host driver root
    major: int
    minor: int
    file_mode: int = DEFAULT_FILE_MODE


@attrs.frozen(kw_only=True)
class DriverFile:
    """A driver file to bind-mount: its container path and its host path."""

    path: str
    host_path: str


@attrs.frozen(kw_only=True)
class DriverLibrary(DriverFile):
    """A versioned driver library, e.g. ``/usr/lib64/libcuda.so.570.170.01`` (soname ``libcuda.so.1``)."""

    soname: str | None
    dev_link: bool  # also create the unversioned "lib<x>.so" link (libcuda, libnvidia-ml)

    @property
    def directory(self) -> str:
        """The library's directory in the container."""
        return posixpath.dirname(self.path)

    @property
    def file_name(self) -> str:
        """The versioned file name."""
        return posixpath.basename(self.path)


@attrs.frozen(kw_only=True)
class MigCapNodes:
    """The two capability nodes a MIG device needs: GI access and CI access."""

    gi: CharDevice
    ci: CharDevice


@attrs.frozen(kw_only=True)
class DriverInstallation:
    """One discovery of a driver root. Pure data: the renderers in :mod:`nvdra.cdi.nvidia` use it."""

    host_root: str
    version: str
    libraries: tuple[DriverLibrary, ...]
    binaries: tuple[DriverFile, ...]
    firmware: tuple[DriverFile, ...] = ()  # GSP firmware, /lib/firmware/nvidia/<version>/gsp*.bin
    control_nodes: tuple[CharDevice, ...]  # sorted by path, as upstream's specs list them
    gpu_nodes: tuple[CharDevice, ...]  # sorted by minor
    caps_major: int | None  # the "nvidia-caps" char major; None when the driver has no MIG support

    @property
    def library_dirs(self) -> tuple[str, ...]:
        """The distinct directories holding driver libraries, in discovery order."""
        return tuple(dict.fromkeys(lib.directory for lib in self.libraries))

    @property
    def mounted_files(self) -> tuple[DriverFile, ...]:
        """Every file to bind-mount (binaries, firmware, libraries), sorted by container path."""
        return tuple(sorted((*self.binaries, *self.firmware, *self.libraries), key=lambda f: f.path))

    @property
    def libcuda_dir(self) -> str:
        """Where libcuda lives (``NVIDIA_CTK_LIBCUDA_DIR``); the first library dir if it is missing."""
        for lib in self.libraries:
            if lib.file_name.startswith("libcuda.so."):
                return lib.directory
        return self.library_dirs[0]

    def gpu_node(self, minor: int) -> CharDevice:
        """The ``/dev/nvidia<minor>`` node.

        Raises:
            CdiError: no such node was found.
        """
        path = f"/dev/nvidia{minor}"
        for node in self.gpu_nodes:
            if node.path == path:
                return node
        found = ", ".join(n.path for n in self.gpu_nodes) or "none"
        raise CdiError(
            f"GPU device node /dev/nvidia{minor} not found under {self.host_root} (found: {found})"
        )
