"""Driver-root discovery: what a container needs from the NVIDIA driver installation, and where it is.

Two roots are involved (the upstream ``--nvidia-driver-root`` / container-driver-root pair): the plugin
*reads* the installation under ``container_root`` (where it sees it) and *writes* CDI ``hostPath``s
under ``host_root`` (where the container runtime sees it); a container path is the path relative to the
root. In the simulated case both roots are the same generated directory.

Found here: the driver libraries ``lib<name>.so.<driver version>`` in upstream's library directories,
the utility binaries in upstream's binary directories, the GSP firmware files, the control device
nodes (``nvidiactl``, ``nvidia-uvm``, ``nvidia-uvm-tools``, ``nvidia-modeset``) and the per-GPU
``/dev/nvidia<minor>`` nodes, with major/minor numbers from ``st_rdev`` for real character devices,
or, for the regular files of a simulated tree, from ``/proc/devices`` and NVIDIA's fixed minors.
MIG capability nodes (``/dev/nvidia-caps/nvidia-cap<N>``) are resolved on demand from the driver's
capability files, since MIG devices come and go while the plugin runs.

Invariants: every path in a :class:`DriverInstallation` exists under the root it was read from; a
discovery either finds the driver (at least one library and ``nvidiactl``) or raises :class:`CdiError`
naming the root and the paths searched; :class:`DriverRoot` caches one discovery until ``refresh()``.
"""

from __future__ import annotations

__all__ = [
    "BINARY_DIRS",
    "DRIVER_BINARIES",
    "DRIVER_LIBRARIES",
    "LIBRARY_DIRS",
    "DriverRoot",
    "discover_driver",
    "find_binary",
    "read_proc_devices",
]

import os
import posixpath
import re
import stat
import threading

import attrs

from nvdra.cdi.installation import CharDevice, DriverFile, DriverInstallation, DriverLibrary, MigCapNodes
from nvdra.core.driverroot import LIBRARY_DIRS
from nvdra.core.errors import CdiError

BINARY_DIRS: tuple[str, ...] = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""Where upstream looks for the driver binaries (its default ``PATH``), relative to the driver root."""

DRIVER_LIBRARIES: tuple[tuple[str, str | None], ...] = (
    ("libnvidia-ml", "libnvidia-ml.so.1"),
    ("libcuda", "libcuda.so.1"),
    ("libcudadebugger", "libcudadebugger.so.1"),
    ("libnvidia-ptxjitcompiler", "libnvidia-ptxjitcompiler.so.1"),
    ("libnvidia-nvvm", "libnvidia-nvvm.so.4"),
    ("libnvidia-cfg", "libnvidia-cfg.so.1"),
    ("libnvidia-gpucomp", None),  # its soname is the versioned file name itself
    ("libnvidia-allocator", "libnvidia-allocator.so.1"),
    ("libnvidia-opencl", "libnvidia-opencl.so.1"),
    ("libnvidia-pkcs11-openssl3", None),
    ("libnvidia-encode", "libnvidia-encode.so.1"),
    ("libnvcuvid", "libnvcuvid.so.1"),
    ("libnvidia-opticalflow", "libnvidia-opticalflow.so.1"),
)
"""The compute/utility driver libraries (stem, soname); missing ones are skipped."""

_DEV_LINKS = frozenset({"libnvidia-ml", "libcuda"})  # also get the unversioned "lib<x>.so" link

DRIVER_BINARIES: tuple[str, ...] = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "nvidia-imex",
    "nvidia-imex-ctl",
)
"""The driver's utility binaries mounted into containers (the toolkit's list, IMEX's pair included: the
ComputeDomain daemon runs the host's ``nvidia-imex`` and ``nvidia-imex-ctl`` from where these mounts
put them)."""

# Control nodes: container path -> (/proc/devices names to try, fixed minor); nvidiactl is required.
_CONTROL_NODES: dict[str, tuple[tuple[str, ...], int]] = {
    "/dev/nvidiactl": (("nvidia-frontend", "nvidia"), 255),
    "/dev/nvidia-uvm": (("nvidia-uvm",), 0),
    "/dev/nvidia-uvm-tools": (("nvidia-uvm",), 1),
    "/dev/nvidia-modeset": (("nvidia-frontend", "nvidia"), 254),
}
_GPU_NODE = re.compile(r"nvidia(\d+)")
_GSP_FIRMWARE = re.compile(r"gsp.*\.bin")
_VERSIONED_NVML = re.compile(r"libnvidia-ml\.so\.(\d+(?:\.\d+)+)")


def read_proc_devices(path: str) -> dict[str, int]:
    """The character-device majors of a ``/proc/devices`` file, by driver name.

    Raises:
        CdiError: the file cannot be read.
    """
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise CdiError(f"cannot read {path}: {e.strerror}") from e
    majors: dict[str, int] = {}
    in_char = False
    for line in text.splitlines():
        if line.strip().endswith("devices:"):
            in_char = line.startswith("Character")
            continue
        fields = line.split()
        if in_char and len(fields) == 2 and fields[0].isdigit():
            majors.setdefault(fields[1], int(fields[0]))
    return majors


def _join(root: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(root, path.lstrip("/")))


def find_binary(root: str, name: str) -> str | None:
    """The first executable ``<root><dir>/<name>`` for ``dir`` in :data:`BINARY_DIRS`, or None.

    The lookup discovery uses for the driver's binaries; a container given them by a CDI spec finds
    them with ``root="/"``, where the spec's mounts put them.
    """
    for d in BINARY_DIRS:
        path = _join(root, posixpath.join(d, name))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class _Reader:
    """Reads one installation; holds the roots and the lazily read /proc/devices table."""

    def __init__(self, host_root: str, container_root: str, proc_root: str, proc_devices: str) -> None:
        self.host_root = host_root
        self.container_root = container_root
        self.proc_root = proc_root
        self.proc_devices = proc_devices
        self._majors: dict[str, int] | None = None
        # Device nodes live under the driver root when it carries them (simulated trees, the GPU
        # operator's driver container); otherwise in the host's /dev.
        has_dev = os.path.exists(_join(container_root, "/dev/nvidiactl"))
        self.dev_host_root = host_root if has_dev else "/"
        self.dev_container_root = container_root if has_dev else "/"

    def majors(self) -> dict[str, int]:
        if self._majors is None:
            self._majors = read_proc_devices(self.proc_devices)
        return self._majors

    def major_of(self, names: tuple[str, ...], path: str) -> int:
        majors = self.majors()
        for name in names:
            if name in majors:
                return majors[name]
        raise CdiError(f"{path}: no {' or '.join(names)} entry in {self.proc_devices}")

    def char_device(self, path: str, names: tuple[str, ...], minor: int) -> CharDevice | None:
        """The node at container path ``path``, or None when absent."""
        seen = _join(self.dev_container_root, path)
        try:
            st = os.stat(seen)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CdiError(f"cannot stat {seen}: {e.strerror}") from e
        host_path = _join(self.dev_host_root, path)
        if stat.S_ISCHR(st.st_mode):
            rdev = st.st_rdev
            return CharDevice(
                path=path,
                host_path=host_path,
                major=os.major(rdev),
                minor=os.minor(rdev),
                file_mode=stat.S_IMODE(st.st_mode),
            )
        # A simulated tree holds regular files: numbers come from /proc/devices and the fixed minors.
        return CharDevice(path=path, host_path=host_path, major=self.major_of(names, path), minor=minor)

    def control_nodes(self) -> tuple[CharDevice, ...]:
        nodes = []
        for path, (names, minor) in _CONTROL_NODES.items():
            node = self.char_device(path, names, minor)
            if node is not None:
                nodes.append(node)
            elif path == "/dev/nvidiactl":
                raise CdiError(
                    f"NVIDIA driver not found: no {path} under {self.dev_container_root} "
                    f"(driver root {self.container_root})"
                )
        return tuple(sorted(nodes, key=lambda n: n.path))

    def gpu_nodes(self) -> tuple[CharDevice, ...]:
        dev = _join(self.dev_container_root, "/dev")
        minors = sorted(int(m.group(1)) for e in _listdir(dev) if (m := _GPU_NODE.fullmatch(e)))
        found = (self.char_device(f"/dev/nvidia{m}", ("nvidia-frontend", "nvidia"), m) for m in minors)
        return tuple(n for n in found if n is not None)

    def find_version(self) -> str:
        versions: set[str] = set()
        for d in LIBRARY_DIRS:
            for entry in _listdir(_join(self.container_root, d)):
                if m := _VERSIONED_NVML.fullmatch(entry):
                    versions.add(m.group(1))
        if len(versions) == 1:
            return versions.pop()
        if not versions:
            raise CdiError(
                f"NVIDIA driver not found: no libnvidia-ml.so.<version> under {self.container_root} "
                f"(searched {', '.join(LIBRARY_DIRS)})"
            )
        raise CdiError(
            f"several driver versions under {self.container_root}: {sorted(versions)}; "
            "pass the driver version explicitly"
        )

    def libraries(self, version: str) -> tuple[DriverLibrary, ...]:
        libs = []
        for stem, soname in DRIVER_LIBRARIES:
            path = self._first_existing(LIBRARY_DIRS, f"{stem}.so.{version}")
            if path is not None:
                libs.append(
                    DriverLibrary(
                        path=path,
                        host_path=_join(self.host_root, path),
                        soname=soname,
                        dev_link=stem in _DEV_LINKS,
                    )
                )
        if not libs:
            raise CdiError(
                f"NVIDIA driver {version} not found: no driver library lib*.so.{version} under "
                f"{self.container_root} (searched {', '.join(LIBRARY_DIRS)})"
            )
        return tuple(libs)

    def binaries(self) -> tuple[DriverFile, ...]:
        found = (self._first_existing(BINARY_DIRS, name) for name in DRIVER_BINARIES)
        return tuple(DriverFile(path=p, host_path=_join(self.host_root, p)) for p in found if p is not None)

    def firmware(self, version: str) -> tuple[DriverFile, ...]:
        fw_dir = f"/lib/firmware/nvidia/{version}"
        names = sorted(e for e in _listdir(_join(self.container_root, fw_dir)) if _GSP_FIRMWARE.fullmatch(e))
        paths = (posixpath.join(fw_dir, n) for n in names)
        return tuple(DriverFile(path=p, host_path=_join(self.host_root, p)) for p in paths)

    def _first_existing(self, dirs: tuple[str, ...], name: str) -> str | None:
        for d in dirs:
            path = posixpath.join(d, name)
            if os.path.isfile(_join(self.container_root, path)):
                return path
        return None

    def cap_node(self, access_file: str) -> CharDevice:
        """The ``nvidia-cap<N>`` node described by a capability ``access`` file."""
        path = _join(self.proc_root, access_file)
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                fields = dict(line.partition(":")[::2] for line in f.read().splitlines())
        except OSError as e:
            raise CdiError(f"cannot read MIG capability file {path}: {e.strerror}") from e
        try:
            minor = int(fields["DeviceFileMinor"].strip())
            mode = int(fields.get("DeviceFileMode", str(0o444)).strip())
        except (KeyError, ValueError) as e:
            raise CdiError(f"{path}: no valid DeviceFileMinor/DeviceFileMode line") from e
        node = f"/dev/nvidia-caps/nvidia-cap{minor}"
        major = self.major_of(("nvidia-caps",), node)
        return CharDevice(
            path=node, host_path=_join(self.dev_host_root, node), major=major, minor=minor, file_mode=mode
        )


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CdiError(f"cannot list {path}: {e.strerror}") from e


def _reader(
    host_root: str, container_root: str | None, proc_root: str | None, proc_devices_path: str | None
) -> _Reader:
    seen_root = container_root if container_root is not None else host_root
    if proc_root is None:
        # A simulated tree carries its own proc/; a real driver root does not, so use the host's.
        proc_root = seen_root if os.path.exists(_join(seen_root, "/proc/devices")) else "/"
    devices = proc_devices_path or _join(proc_root, "/proc/devices")
    return _Reader(host_root, seen_root, proc_root, devices)


def discover_driver(
    host_root: str,
    container_root: str | None = None,
    *,
    driver_version: str | None = None,
    proc_root: str | None = None,
    proc_devices_path: str | None = None,
) -> DriverInstallation:
    """Discover a driver installation (uncached; :class:`DriverRoot` caches it).

    Args:
        host_root: the driver root as the container runtime sees it (written into ``hostPath``).
        container_root: where this process sees that root; defaults to ``host_root``.
        driver_version: e.g. ``"570.170.01"`` (from NVML); inferred from ``libnvidia-ml.so.<ver>`` if None.
        proc_root: the directory holding ``proc/``; defaults to ``container_root`` when it has
            ``proc/devices`` (a simulated tree), else ``/``.
        proc_devices_path: an explicit ``/proc/devices`` file (upstream's ``ALT_PROC_DEVICES_PATH``).

    Raises:
        CdiError: no driver libraries or no ``nvidiactl`` were found (names the root and paths searched),
            or a needed file could not be read.
    """
    reader = _reader(host_root, container_root, proc_root, proc_devices_path)
    version = driver_version or reader.find_version()
    libraries = reader.libraries(version)
    control = reader.control_nodes()
    majors = reader.majors() if os.path.exists(reader.proc_devices) else {}
    return DriverInstallation(
        host_root=host_root,
        version=version,
        libraries=libraries,
        binaries=reader.binaries(),
        firmware=reader.firmware(version),
        control_nodes=control,
        gpu_nodes=reader.gpu_nodes(),
        caps_major=majors.get("nvidia-caps"),
    )


@attrs.define(eq=False)
class DriverRoot:
    """A driver root with a cached discovery, for the prepare path.

    Takes the arguments of :func:`discover_driver`. ``installation()`` discovers once and then answers
    from the cache (upstream caches its common edits too); ``refresh()`` rediscovers, e.g. after a driver
    upgrade. Thread-safe. MIG capability nodes are read on every ``mig_caps()`` call because MIG devices
    are created and destroyed at run time.
    """

    host_root: str
    _container_root: str | None = attrs.field(default=None, alias="container_root")
    _driver_version: str | None = attrs.field(default=None, kw_only=True)
    _proc_root: str | None = attrs.field(default=None, kw_only=True)
    _proc_devices_path: str | None = attrs.field(default=None, kw_only=True)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _cached: DriverInstallation | None = attrs.field(default=None, init=False, repr=False)

    @property
    def container_root(self) -> str:
        """Where this process sees the driver root (``host_root`` unless given)."""
        return self.host_root if self._container_root is None else self._container_root

    def installation(self) -> DriverInstallation:
        """The cached discovery, discovering on first use.

        Raises:
            CdiError: discovery failed (see :func:`discover_driver`); nothing is cached then.
        """
        cached = self._cached
        if cached is not None:
            return cached
        with self._lock:
            if self._cached is None:
                self._cached = self._discover()
            return self._cached

    def refresh(self) -> DriverInstallation:
        """Rediscover now and replace the cache."""
        fresh = self._discover()
        with self._lock:
            self._cached = fresh
        return fresh

    def _discover(self) -> DriverInstallation:
        return discover_driver(
            self.host_root,
            self._container_root,
            driver_version=self._driver_version,
            proc_root=self._proc_root,
            proc_devices_path=self._proc_devices_path,
        )

    def _reader(self) -> _Reader:
        return _reader(self.host_root, self._container_root, self._proc_root, self._proc_devices_path)

    def mig_caps(self, parent_minor: int, gi: int, ci: int) -> MigCapNodes:
        """The GI- and CI-access capability nodes of MIG device ``gpu<parent_minor>/gi<gi>/ci<ci>``.

        Raises:
            CdiError: a capability file is missing or malformed, or ``nvidia-caps`` is not in /proc/devices.
        """
        reader = self._reader()
        base = f"/proc/driver/nvidia/capabilities/gpu{parent_minor}/mig/gi{gi}"
        return MigCapNodes(gi=reader.cap_node(f"{base}/access"), ci=reader.cap_node(f"{base}/ci{ci}/access"))

    def imex_channel(self, channel: int) -> CharDevice:
        """The IMEX channel node ``/dev/nvidia-caps-imex-channels/channel<channel>`` (minor = channel).

        The node need not exist yet: its major is the ``nvidia-caps-imex-channels`` entry of
        /proc/devices, so a spec can describe it fully.

        Raises:
            CdiError: the channel is negative or /proc/devices has no such entry.
        """
        if channel < 0:
            raise CdiError(f"IMEX channel {channel}: must be >= 0")
        reader = self._reader()
        path = f"/dev/nvidia-caps-imex-channels/channel{channel}"
        major = reader.major_of(("nvidia-caps-imex-channels",), path)
        return CharDevice(path=path, host_path=_join(reader.dev_host_root, path), major=major, minor=channel)
