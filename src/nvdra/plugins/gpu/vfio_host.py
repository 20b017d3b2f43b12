"""The host side of VFIO passthrough: sysfs, modprobe, fuser and nvidia-smi behind one Protocol.

:class:`SysfsHost` is the real implementation: it reads ``/sys/bus/pci/devices``,
``/sys/kernel/iommu_groups`` and ``/dev``, binds drivers the way upstream's ``bind_to_driver.sh``
does (``driver_override``, ``unbind``, ``drivers_probe``), and runs ``modprobe``/``fuser`` chrooted
into the host root and ``nvidia-smi -pm`` chrooted into the driver root.

:class:`SimulatedSysfs` is the same class over a directory tree laid out like sysfs and ``/dev``
(:func:`make_simulated_sysfs`); only the two things the kernel and the host binaries would do are
replaced: a write to a bind/unbind/probe file moves the ``driver`` link (and creates or removes the
VFIO group and cdev nodes), and commands are answered from state kept *in the tree*, so a restarted
plugin object sees what the previous one left. All reading code is the real code.
"""

from __future__ import annotations

__all__ = ["PassthroughHost", "SimulatedSysfs", "SysfsHost", "make_simulated_sysfs"]

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import attrs

from nvdra.core.devices import Inventory
from nvdra.core.errors import HostError
from nvdra.core.faults import reach
from nvdra.core.passthrough import NVIDIA_DRIVER, VFIO_DRIVER, PciFunction
from nvdra.fabric.topology import nvswitch_functions

_IORESOURCE_MEM = 0x200


class PassthroughHost(Protocol):
    """What VFIO passthrough needs from the host."""

    def pci_functions(self) -> tuple[PciFunction, ...]:
        """Every PCI function in ``/sys/bus/pci/devices``."""
        ...

    def iommu_enabled(self) -> bool:
        """IOMMU groups exist (the kernel runs with an IOMMU)."""
        ...

    def iommufd_available(self) -> bool:
        """``/dev/iommu`` exists."""
        ...

    def driver_of(self, address: str) -> str | None:
        """The driver bound to a function, None when unbound."""
        ...

    def sriov_vfs(self, address: str) -> int:
        """SR-IOV virtual functions currently created on a function."""
        ...

    def iommu_group(self, address: str) -> int | None:
        """The function's IOMMU group."""
        ...

    def vfio_cdev(self, address: str) -> str | None:
        """``vfioN`` of the function's VFIO character device (IOMMUFD), once bound to vfio-pci."""
        ...

    def load_module(self, name: str) -> None:
        """``modprobe <name>``."""
        ...

    def users_of(self, path: str) -> tuple[int, ...]:
        """PIDs holding a file open (``fuser``)."""
        ...

    def persistenced_running(self) -> bool:
        """``nvidia-persistenced`` is running (its socket exists)."""
        ...

    def set_persistence(self, address: str, enabled: bool) -> None:
        """``nvidia-smi -i <address> -pm 0|1``."""
        ...

    def bind(self, address: str, driver: str) -> None:
        """Unbind the function from its driver (if any) and bind it to ``driver``."""
        ...

    @property
    def dev_root(self) -> Path:
        """Where the host's ``/dev`` is visible to this process."""
        ...


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _int(text: str, base: int = 10) -> int | None:
    try:
        return int(text, base)
    except ValueError:
        return None


@attrs.define(kw_only=True, eq=False)
class SysfsHost:
    """The real host (see the module docstring). Paths are where the host's trees are visible."""

    sys_root: Path = Path("/sys")
    _dev_root: Path = Path("/dev")
    host_root: Path = Path("/host-root")
    driver_root: Path = Path("/driver-root")
    persistenced_socket: Path = Path("/run/nvidia-persistenced/socket")

    @property
    def dev_root(self) -> Path:
        """Where the host's ``/dev`` is visible."""
        return self._dev_root

    # -- the two edges a simulation replaces ------------------------------------------------------
    def _write(self, path: Path, text: str) -> None:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise HostError(f"cannot write {text!r} to {path}: {exc}") from exc

    def _run(self, argv: Sequence[str]) -> tuple[int, str]:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostError(f"cannot run {' '.join(argv)}: {exc}") from exc
        return done.returncode, done.stdout + done.stderr

    # -- reading ----------------------------------------------------------------------------------
    def _dev(self, address: str) -> Path:
        return self.sys_root / "bus" / "pci" / "devices" / address

    def pci_functions(self) -> tuple[PciFunction, ...]:
        """Read every function's vendor, device, class, driver, group, NUMA node, VFs and BARs."""
        base = self.sys_root / "bus" / "pci" / "devices"
        if not base.is_dir():
            return ()
        out = []
        for entry in sorted(base.iterdir()):
            numa = _int(_read(entry / "numa_node", "-1"))
            out.append(
                PciFunction(
                    address=entry.name,
                    vendor_id=_int(_read(entry / "vendor", "0x0"), 16) or 0,
                    device_id=_int(_read(entry / "device", "0x0"), 16) or 0,
                    class_code=_int(_read(entry / "class", "0x0"), 16) or 0,
                    driver=self.driver_of(entry.name),
                    iommu_group=self.iommu_group(entry.name),
                    numa_node=numa if numa is not None and numa >= 0 else None,
                    sriov_vfs=self.sriov_vfs(entry.name),
                    bar_bytes=self._largest_bar(entry / "resource"),
                    pcie_root=self._pcie_root(entry),
                )
            )
        return tuple(out)

    def _pcie_root(self, entry: Path) -> str | None:
        """``pciDDDD:BB`` of ``/sys/devices/pciDDDD:BB/.../<address>`` (the link's target)."""
        try:
            rel = entry.resolve().relative_to((self.sys_root / "devices").resolve())
        except ValueError:
            return None
        return rel.parts[0] if rel.parts and rel.parts[0].startswith("pci") else None

    @staticmethod
    def _largest_bar(path: Path) -> int:
        largest = 0
        for line in _read(path).splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            start, end, flags = (int(p, 16) for p in parts)
            if flags & _IORESOURCE_MEM and end > start:
                largest = max(largest, end - start + 1)
        return largest

    def iommu_enabled(self) -> bool:
        """``/sys/kernel/iommu_groups`` has entries."""
        groups = self.sys_root / "kernel" / "iommu_groups"
        return groups.is_dir() and any(groups.iterdir())

    def iommufd_available(self) -> bool:
        """``/dev/iommu`` exists."""
        return (self.dev_root / "iommu").exists()

    def driver_of(self, address: str) -> str | None:
        """Name of the ``driver`` link's target."""
        link = self._dev(address) / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def sriov_vfs(self, address: str) -> int:
        """``sriov_numvfs`` (0 when the file is absent)."""
        return _int(_read(self._dev(address) / "sriov_numvfs", "0")) or 0

    def iommu_group(self, address: str) -> int | None:
        """Name of the ``iommu_group`` link's target."""
        link = self._dev(address) / "iommu_group"
        return _int(os.path.basename(os.readlink(link))) if link.is_symlink() else None

    def vfio_cdev(self, address: str) -> str | None:
        """The single entry of ``vfio-dev/``."""
        d = self._dev(address) / "vfio-dev"
        names = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        return names[0] if names else None

    def persistenced_running(self) -> bool:
        """The persistence daemon's socket exists."""
        return self.persistenced_socket.exists()

    # -- changing ---------------------------------------------------------------------------------
    def load_module(self, name: str) -> None:
        """``chroot <host root> modprobe <name>``."""
        rc, out = self._run(["chroot", str(self.host_root), "modprobe", name])
        if rc != 0:
            raise HostError(f"modprobe {name} failed (exit {rc}): {out.strip()}")

    def users_of(self, path: str) -> tuple[int, ...]:
        """``chroot <host root> fuser <path>``: exit 1 with no output means nobody."""
        rc, out = self._run(["chroot", str(self.host_root), "fuser", path])
        if rc not in (0, 1):
            raise HostError(f"fuser {path} failed (exit {rc}): {out.strip()}")
        return tuple(int(p) for p in out.replace(f"{path}:", " ").split() if p.rstrip("cefFrm").isdigit())

    def set_persistence(self, address: str, enabled: bool) -> None:
        """``chroot <driver root> nvidia-smi -i <address> -pm 0|1``."""
        argv = ["chroot", str(self.driver_root), "nvidia-smi", "-i", address, "-pm", "1" if enabled else "0"]
        rc, out = self._run(argv)
        if rc != 0:
            raise HostError(f"nvidia-smi -pm for {address} failed (exit {rc}): {out.strip()}")

    def bind(self, address: str, driver: str) -> None:
        """Upstream's bind sequence: set ``driver_override``, unbind, ``drivers_probe``; then verify."""
        dev = self._dev(address)
        if not dev.exists():
            raise HostError(f"PCI device {address} does not exist under {dev.parent}")
        self._write(dev / "driver_override", driver)
        current = self.driver_of(address)
        if current is not None:
            self._write(self.sys_root / "bus" / "pci" / "drivers" / current / "unbind", address)
            reach("after-vfio-unbound")
        self._write(self.sys_root / "bus" / "pci" / "drivers_probe", address)
        if self.driver_of(address) != driver:
            raise HostError(f"{address} is bound to {self.driver_of(address)!r} after probing for {driver!r}")


class SimulatedSysfs(SysfsHost):
    """:class:`SysfsHost` over a tree from :func:`make_simulated_sysfs`, with a simulated kernel."""

    def __init__(self, root: Path) -> None:
        super().__init__(
            sys_root=root / "sys",
            dev_root=root / "dev",
            host_root=root,
            driver_root=root,
            persistenced_socket=root / "run" / "nvidia-persistenced" / "socket",
        )
        self.root = root
        self.commands: list[tuple[str, ...]] = []

    @property
    def _state_file(self) -> Path:
        return self.root / "host-state.json"

    def state(self) -> dict[str, dict[str, object]]:
        """The simulated host's non-sysfs state: ``persistence`` per address, ``users`` per path."""
        raw: dict[str, dict[str, object]] = json.loads(_read(self._state_file, "{}") or "{}")
        raw.setdefault("persistence", {})
        raw.setdefault("users", {})
        return raw

    def set_users(self, path: str, pids: Sequence[int], *, release_after: int | None = None) -> None:
        """Pretend processes hold ``path`` open; ``release_after`` fuser calls later they close it."""
        state = self.state()
        state["users"][path] = {"pids": list(pids), "release_after": release_after}
        self._state_file.write_text(json.dumps(state))

    def _run(self, argv: Sequence[str]) -> tuple[int, str]:
        self.commands.append(tuple(argv[2:]))
        cmd = argv[2:]
        state = self.state()
        if cmd[0] == "modprobe":
            if cmd[1] != "vfio_pci":
                return 1, f"modprobe: FATAL: Module {cmd[1]} not found"
            (self.sys_root / "bus" / "pci" / "drivers" / VFIO_DRIVER).mkdir(parents=True, exist_ok=True)
            return 0, ""
        if cmd[0] == "fuser":
            entry = state["users"].get(cmd[1])
            if not isinstance(entry, dict) or not entry.get("pids"):
                return 1, ""
            after = entry.get("release_after")
            if isinstance(after, int):
                entry["release_after"] = after - 1
                if after <= 0:
                    entry["pids"] = []
                self._state_file.write_text(json.dumps(state))
            pids = entry["pids"]
            return (0, f"{cmd[1]}: " + " ".join(str(p) for p in pids)) if pids else (1, "")
        if cmd[0] == "nvidia-smi":
            address, enabled = cmd[2], cmd[4] == "1"
            if self.driver_of(address) != NVIDIA_DRIVER:
                return 6, f"No devices were found matching {address}"
            state["persistence"][address] = enabled
            self._state_file.write_text(json.dumps(state))
            return 0, f"Persistence mode {'enabled' if enabled else 'disabled'} for GPU {address}."
        return 127, f"{cmd[0]}: command not found"

    def _write(self, path: Path, text: str) -> None:
        """What the kernel does on a write to a PCI driver file."""
        drivers = self.sys_root / "bus" / "pci" / "drivers"
        address = text.strip()
        if path.name == "driver_override":
            path.write_text(text.strip() + "\n")
        elif path.name == "unbind":
            if self.driver_of(address) != path.parent.name:
                raise HostError(f"cannot write {address!r} to {path}: No such device")
            (self._dev(address) / "driver").unlink()
            self._vfio_nodes(address, present=False)
        elif path.name == "drivers_probe":
            override = _read(self._dev(address) / "driver_override")
            driver = override or (NVIDIA_DRIVER if _read(self._dev(address) / "vendor") == "0x10de" else "")
            if not driver or not (drivers / driver).is_dir():
                return  # no driver claims it: stays unbound, as on a real kernel
            (self._dev(address) / "driver").symlink_to(drivers / driver)
            self._vfio_nodes(address, present=driver == VFIO_DRIVER)
        else:
            super()._write(path, text)

    def _vfio_nodes(self, address: str, *, present: bool) -> None:
        group = self.iommu_group(address)
        group_node = self.dev_root / "vfio" / str(group)
        cdev_dir = self._dev(address) / "vfio-dev"
        index = sorted(p.name for p in (self.sys_root / "bus" / "pci" / "devices").iterdir()).index(address)
        cdev = self.dev_root / "vfio" / "devices" / f"vfio{index}"
        if present:
            (cdev_dir / f"vfio{index}").mkdir(parents=True, exist_ok=True)
            cdev.parent.mkdir(parents=True, exist_ok=True)
            cdev.touch()
            group_node.touch()
        else:
            for p in (cdev, group_node):
                p.unlink(missing_ok=True)
            if cdev_dir.is_dir():
                for child in cdev_dir.iterdir():
                    child.rmdir()
                cdev_dir.rmdir()

    @property
    def persistence(self) -> dict[str, object]:
        """Persistence mode per PCI address as the simulated nvidia-smi last set it."""
        return dict(self.state()["persistence"])


NVSWITCH_CLASS = "0x068000"  # PCI bridge, other: how an NVSwitch enumerates


def make_simulated_sysfs(
    root: Path,
    inventory: Inventory,
    *,
    iommufd: bool = True,
    persistenced: bool = True,
    sriov_vfs: dict[str, int] | None = None,
) -> SimulatedSysfs:
    """Lay out sysfs and /dev for an inventory's GPUs (bound to ``nvidia``) plus one non-GPU function.

    Idempotent on an existing tree (a restarted plugin keeps the bindings it finds).
    """
    sys_root = root / "sys"
    if not (sys_root / "bus" / "pci" / "devices").is_dir():
        drivers = sys_root / "bus" / "pci" / "drivers"
        (drivers / NVIDIA_DRIVER).mkdir(parents=True)
        (sys_root / "bus" / "pci" / "devices").mkdir(parents=True)
        (root / "dev" / "vfio").mkdir(parents=True)
        (root / "dev" / "vfio" / "vfio").touch()
        if iommufd:
            (root / "dev" / "iommu").touch()
        if persistenced:
            (root / "run" / "nvidia-persistenced").mkdir(parents=True)
            (root / "run" / "nvidia-persistenced" / "socket").touch()
        functions: list[tuple[str, str, str, str, int | None, int | None]] = [
            (
                g.pci_bus_id,
                g.pcie_root or "pci0000:00",
                f"0x{g.pci_device_id >> 16:04x}",
                "0x030200",
                g.numa_node,
                g.memory_bytes,
            )
            for g in inventory.gpus
        ]
        # The NVSwitches the GPUs' NVLinks reach (a bridge-class NVIDIA function on nvidia, passed through
        # with the GPUs under FullPassthrough), with the device id of their generation.
        switch_id = "0x1af1" if {g.architecture for g in inventory.gpus} == {"Ampere"} else "0x22a3"
        functions += [
            (address, "pci0000:00", switch_id, NVSWITCH_CLASS, None, None)
            for address in nvswitch_functions(inventory.gpus)
        ]
        functions.append(("0000:00:1f.0", "pci0000:00", "0x1234", "0x020000", None, None))  # a NIC
        for group, (address, pcie_root, device, cls, numa, memory) in enumerate(functions, start=20):
            real = sys_root / "devices" / pcie_root / address
            real.mkdir(parents=True)
            (sys_root / "bus" / "pci" / "devices" / address).symlink_to(real)
            is_gpu = cls != "0x020000"
            (real / "vendor").write_text("0x10de\n" if is_gpu else "0x8086\n")
            (real / "device").write_text(device + "\n")
            (real / "class").write_text(cls + "\n")
            (real / "numa_node").write_text(f"{-1 if numa is None else numa}\n")
            (real / "sriov_numvfs").write_text(f"{(sriov_vfs or {}).get(address, 0)}\n")
            (real / "driver_override").write_text("\n")
            bar1 = 1 << max(int(memory or 0).bit_length(), 24)  # BAR1 covers the framebuffer, a power of two
            (real / "resource").write_text(
                f"0x00000000f0000000 0x00000000f0ffffff 0x{_IORESOURCE_MEM:x}\n"
                f"0x0000200000000000 0x{0x200000000000 + bar1 - 1:016x} 0x{_IORESOURCE_MEM | 0x4000:x}\n"
            )
            iommu = sys_root / "kernel" / "iommu_groups" / str(group)
            (iommu / "devices").mkdir(parents=True)
            (iommu / "devices" / address).symlink_to(real)
            (real / "iommu_group").symlink_to(iommu)
            if is_gpu:
                (real / "driver").symlink_to(drivers / NVIDIA_DRIVER)
    return SimulatedSysfs(root)
