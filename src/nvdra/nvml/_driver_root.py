"""A fake NVIDIA driver root for a simulated node: the host files read under ``--nvidia-driver-root``.

Layout (paths relative to the root; regular files stand in for character devices)::

    dev/nvidia<minor>  dev/nvidiactl  dev/nvidia-uvm  dev/nvidia-uvm-tools  dev/nvidia-modeset
    dev/nvidia-caps/nvidia-cap1, nvidia-cap2, nvidia-cap<N> for every existing MIG GI/CI access
    dev/nvidia-nvswitchctl, dev/nvidia-nvswitch<N>  (NVSwitch profiles with PCI-visible switches)
    usr/bin/nvidia-smi  nvidia-cuda-mps-server  nvidia-persistenced  nvidia-debugdump   (``exit 0`` stubs)
    usr/bin/nvidia-cuda-mps-control                         (the fake control program, executable)
    usr/bin/nvidia-imex  nvidia-imex-ctl                    (the fake IMEX pair; profiles with a fabric)
    usr/lib64/lib<name>.so.<driver version> + lib<name>.so.<soname> symlinks (libnvidia-ml, libcuda, …)
    lib/firmware/nvidia/<driver version>/gsp_ga10x.bin, gsp_tu10x.bin
    proc/devices                                            (char majors: SIMULATED_CHAR_MAJORS)
    proc/driver/nvidia/capabilities/mig/{config,monitor}
    proc/driver/nvidia/capabilities/fabric-imex-mgmt + dev/nvidia-caps/nvidia-cap<minor>
                                                            (profiles whose GPUs report fabric info)
    proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<GI>/access and …/gi<GI>/ci<CI>/access
    proc/driver/nvidia-caps/mig-minors
    proc/driver/nvidia-nvswitch/devices/<bus id>/          (NVSwitch profiles)
    proc/sys/kernel/random/boot_id

The fake programs are Python scripts run by this interpreter (``sys.executable``) that call
``nvdra.plugins.gpu.fake_mps_control`` and ``nvdra.plugins.computedomain.fakeimex``: a driver root is a
directory of files, so this package names those modules in the scripts' text and never imports them.
They are found and started exactly as the real binaries are (a path lookup in the driver root).

Invariants owned here:
- capability minors follow the driver's closed form (nvidia-hardware §2.6): GI access minor
  ``3 + 135·gpu + 9·gi``, CI access minor ``that + 1 + ci``; ``mig-minors`` lists all of them;
- the function is idempotent; :func:`refresh_mig_capabilities` rewrites only the MIG capability
  files (and their ``/dev/nvidia-caps`` nodes) after MIG devices were created or destroyed;
- the boot id is kept if present (a new one means a reboot);
- the IMEX management capability takes the minor after the last MIG one, as hosts show it
  (``FABRIC_IMEX_MGMT_MINOR``, mode 0400); refreshing MIG capabilities never removes it.
"""

from __future__ import annotations

__all__ = [
    "FABRIC_IMEX_MGMT_MINOR",
    "SIMULATED_CHAR_MAJORS",
    "ci_access_minor",
    "gi_access_minor",
    "make_simulated_driver_root",
    "refresh_mig_capabilities",
]

import functools
import shutil
import sys
import uuid as uuid_mod
from pathlib import Path

from nvdra.core.errors import NvmlNotSupported
from nvdra.nvml import _backend as b
from nvdra.nvml._profile import NodeProfile

SIMULATED_CHAR_MAJORS: tuple[tuple[int, str], ...] = (
    (1, "mem"),
    (4, "/dev/vc/0"),
    (4, "tty"),
    (5, "/dev/tty"),
    (5, "/dev/console"),
    (5, "/dev/ptmx"),
    (10, "misc"),
    (195, "nvidia-frontend"),
    (195, "nvidia"),
    (195, "nvidiactl"),
    (507, "nvidia-caps-imex-channels"),
    (508, "nvidia-caps"),
    (509, "nvidia-nvlink"),
    (510, "nvidia-uvm"),
    (511, "nvidia-nvswitch"),
)
"""The character-device majors written to ``proc/devices`` (dynamic majors vary per host)."""

_LIBS = (  # (library, soname suffix)
    ("libnvidia-ml", "1"),
    ("libcuda", "1"),
    ("libcudadebugger", "1"),
    ("libnvidia-ptxjitcompiler", "1"),
    ("libnvidia-nvvm", "4"),
    ("libnvidia-cfg", "1"),
    ("libnvidia-opencl", "1"),
    ("libnvidia-gpucomp", ""),
)
_BINARIES = (
    "nvidia-smi",
    "nvidia-cuda-mps-server",
    "nvidia-persistenced",
    "nvidia-debugdump",
)
_MODE_READ_ALL = 292  # 0444: every MIG access capability file says this
_MODE_ROOT_ONLY = 256  # 0400: mig/config, fabric-imex-mgmt
FABRIC_IMEX_MGMT_MINOR = 4323
"""``/dev/nvidia-caps`` minor of ``fabric-imex-mgmt``: one past gpu31/gi14/ci7/access (the driver's
capability table lists the system entries after the MIG ones; a GB200 host reports 4323)."""


def gi_access_minor(gpu_minor: int, gi_id: int) -> int:
    """``/dev/nvidia-caps`` minor of ``gpu<minor>/gi<gi>/access``."""
    return 3 + 135 * gpu_minor + 9 * gi_id


def ci_access_minor(gpu_minor: int, gi_id: int, ci_id: int) -> int:
    """``/dev/nvidia-caps`` minor of ``gpu<minor>/gi<gi>/ci<ci>/access``."""
    return gi_access_minor(gpu_minor, gi_id) + 1 + ci_id


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != text.encode():  # a file may hold a real library
        if path.exists():
            path.chmod(0o644)  # our own read-only files (proc entries) must stay rewritable
        path.write_text(text)
    path.chmod(mode)


def _symlink(link: Path, target: str) -> None:
    if link.is_symlink() and str(link.readlink()) == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def _cap_file(minor: int, mode: int) -> str:
    return f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n"


@functools.cache  # the same 4,322 lines for every simulated node (1,000 in a CD benchmark)
def _mig_minors() -> str:
    lines = ["config 1", "monitor 2"]
    for g in range(32):
        for i in range(15):
            lines.append(f"gpu{g}/gi{i}/access {gi_access_minor(g, i)}")
            lines.extend(f"gpu{g}/gi{i}/ci{c}/access {ci_access_minor(g, i, c)}" for c in range(8))
    return "\n".join(lines) + "\n"


def _proc_devices() -> str:
    chars = "".join(f"{major:3d} {name}\n" for major, name in SIMULATED_CHAR_MAJORS)
    return f"Character devices:\n{chars}\nBlock devices:\n  7 loop\n  8 sd\n259 blkext\n"


def _driver_files(root: Path, version: str) -> None:
    lib = root / "usr/lib64"
    lib.mkdir(parents=True, exist_ok=True)
    for name, soname in _LIBS:
        _write(lib / f"{name}.so.{version}", f"simulated {name} {version}\n", 0o755)
        if soname:
            _symlink(lib / f"{name}.so.{soname}", f"{name}.so.{version}")
    _symlink(lib / "libcuda.so", "libcuda.so.1")
    for binary in _BINARIES:
        _write(
            root / "usr/bin" / binary, f"#!/bin/sh\n# simulated {binary} (nvdra driver root)\nexit 0\n", 0o755
        )
    _program(root / "usr/bin/nvidia-cuda-mps-control", "nvdra.plugins.gpu.fake_mps_control", "main")
    for fw in ("gsp_ga10x.bin", "gsp_tu10x.bin"):
        _write(root / "lib/firmware/nvidia" / version / fw, f"simulated {fw}\n")


def _program(path: Path, module: str, function: str) -> None:
    """An executable Python script running ``module.function()`` as its program (exit status = result)."""
    _write(
        path,
        f"#!{sys.executable}\n# fake {path.name} (nvdra simulated driver root)\n"
        f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n",
        0o755,
    )


def make_simulated_driver_root(
    profile_or_backend: NodeProfile | b.NvmlBackend, root: Path, *, boot_id: str | None = None
) -> Path:
    """Create (or bring up to date) a host-like driver root for a simulated node.

    Args:
        profile_or_backend: a node profile (its initial MIG devices are used) or an initialised
            backend (its current MIG devices are used).
        root: the directory to fill; created if missing.
        boot_id: the boot id to write; None keeps an existing one or makes a random one.

    Returns:
        ``root``.
    """
    from nvdra.nvml._simulated import SimulatedNvml  # a profile is read through a simulated backend

    backend: b.NvmlBackend
    if isinstance(profile_or_backend, NodeProfile):
        backend = SimulatedNvml(profile_or_backend)
        backend.init()
    else:
        backend = profile_or_backend
    root.mkdir(parents=True, exist_ok=True)
    dev = root / "dev"
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"):
        _write(dev / name, "", 0o666)
    for i in range(backend.device_count()):
        _write(dev / f"nvidia{backend.device_identity(i).minor}", "", 0o666)
    (dev / "nvidia-caps").mkdir(exist_ok=True)
    _write(dev / "nvidia-caps/nvidia-cap1", "", 0o400)
    _write(dev / "nvidia-caps/nvidia-cap2", "", 0o444)
    _nvswitches(backend, root)
    _driver_files(root, backend.driver_version())
    _write(root / "proc/devices", _proc_devices(), 0o444)
    caps = root / "proc/driver/nvidia/capabilities"
    _write(caps / "mig/config", _cap_file(1, _MODE_ROOT_ONLY), 0o444)
    _write(caps / "mig/monitor", _cap_file(2, _MODE_READ_ALL), 0o444)
    minors = root / "proc/driver/nvidia-caps/mig-minors"
    if not minors.exists():
        _write(minors, _mig_minors(), 0o444)
    boot = root / "proc/sys/kernel/random/boot_id"
    if boot_id is not None or not boot.exists():
        _write(boot, f"{boot_id or uuid_mod.uuid4()}\n", 0o444)
    if _has_fabric(backend):
        _write(caps / "fabric-imex-mgmt", _cap_file(FABRIC_IMEX_MGMT_MINOR, _MODE_ROOT_ONLY), 0o444)
        _write(dev / f"nvidia-caps/nvidia-cap{FABRIC_IMEX_MGMT_MINOR}", "", 0o400)
        # Multi-node NVLink hosts carry the IMEX packages; the CD daemon runs them from here.
        _program(root / "usr/bin/nvidia-imex", "nvdra.plugins.computedomain.fakeimex", "imex_main")
        _program(root / "usr/bin/nvidia-imex-ctl", "nvdra.plugins.computedomain.fakeimex", "imex_ctl_main")
    refresh_mig_capabilities(backend, root)
    return root


def _has_fabric(backend: b.NvmlBackend) -> bool:
    """Whether any GPU reports fabric info (Hopper and later on an NVLink fabric; not NOT_SUPPORTED)."""
    for i in range(backend.device_count()):
        try:
            backend.fabric_info(i)
        except NvmlNotSupported:
            continue
        return True
    return False


def _nvswitches(backend: b.NvmlBackend, root: Path) -> None:
    switches = sorted(
        {
            rec.remote_bus_id
            for i in range(backend.device_count())
            for rec in backend.nvlinks(i)
            if rec.active
            and rec.remote_type == b.NVLINK_REMOTE_SWITCH
            and not rec.remote_bus_id.startswith("00000000:00:")
        }
    )
    if not switches:
        return
    _write(root / "dev/nvidia-nvswitchctl", "", 0o666)
    for n, bus_id in enumerate(switches):
        _write(root / f"dev/nvidia-nvswitch{n}", "", 0o666)
        sysfs_id = f"{int(bus_id[:8], 16):04x}:{bus_id[9:].lower()}"
        (root / "proc/driver/nvidia-nvswitch/devices" / sysfs_id).mkdir(parents=True, exist_ok=True)


def refresh_mig_capabilities(backend: b.NvmlBackend, root: Path) -> None:
    """Rewrite the per-GPU MIG capability files and cap device nodes to match the backend's MIG devices."""
    caps = root / "proc/driver/nvidia/capabilities"
    dev_caps = root / "dev/nvidia-caps"
    dev_caps.mkdir(parents=True, exist_ok=True)
    for stale in dev_caps.glob("nvidia-cap*"):
        if stale.name not in ("nvidia-cap1", "nvidia-cap2", f"nvidia-cap{FABRIC_IMEX_MGMT_MINOR}"):
            stale.unlink()
    for i in range(backend.device_count()):
        minor = backend.device_identity(i).minor
        mig_dir = caps / f"gpu{minor}/mig"
        if mig_dir.exists():
            shutil.rmtree(mig_dir)
        mig_dir.mkdir(parents=True)
        for rec in backend.mig_devices(i):
            gi_minor = gi_access_minor(minor, rec.gi_id)
            ci_minor = ci_access_minor(minor, rec.gi_id, rec.ci_id)
            _write(mig_dir / f"gi{rec.gi_id}/access", _cap_file(gi_minor, _MODE_READ_ALL), 0o444)
            _write(
                mig_dir / f"gi{rec.gi_id}/ci{rec.ci_id}/access", _cap_file(ci_minor, _MODE_READ_ALL), 0o444
            )
            _write(dev_caps / f"nvidia-cap{gi_minor}", "", 0o444)
            _write(dev_caps / f"nvidia-cap{ci_minor}", "", 0o444)
