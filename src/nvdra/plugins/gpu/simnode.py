"""A simulated node whose hardware outlives the plugin process (``--simulate-state DIR``).

On a real node a killed plugin leaves the GPUs as they were: MIG devices stay, compute modes and time
slices stay, Fabric Manager (its own daemon) keeps its partitions, and the kernel's boot id does not
change. With ``--simulate`` alone all of that lives in the plugin's memory and dies with it, which would
make every crash-recovery test vacuous. ``--simulate-state DIR`` (env ``NVDRA_SIMULATE_STATE``) keeps it
in files instead, all of them in ``DIR/<profile>/`` (``PluginConfig.simulated_host_dir``), so a node
simulated as another profile in the same directories never sees what the first one left:

- ``nvml.json``: the simulated GPUs (:class:`nvdra.nvml.SimulatedNvml` ``state_path``);
- ``fabric-manager.json``: the simulated Fabric Manager's active partitions
  (:class:`PersistentFabricManager`, restored when the plugin connects again);
- ``boot_id``: the simulated kernel's boot id (made on first use);
- ``sysfs`` and ``driver-root``: the simulated host's trees (VFIO bindings live in the sysfs tree).
  Without the flag these two live in ``<plugin dir>/simulated/<profile>``, keyed the same way.

:func:`reboot_simulated_node` does to these files what a reboot does to the hardware.
"""

from __future__ import annotations

__all__ = [
    "BOOT_ID_FILE",
    "FM_STATE_FILE",
    "NVML_STATE_FILE",
    "PersistentFabricManager",
    "node_boot_id",
    "persisted_fabric_manager",
    "reboot_simulated_node",
    "simulated_nvml_state",
]

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nvdra.nvml import SimulatedNvml
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.pluginconfig import simulated_profile_dir
from nvdra.plugins.state import read_boot_id

if TYPE_CHECKING:  # nvdra.fabric loads where a Fabric Manager is connected, not at every plugin start
    from nvdra.fabric import FabricManager, FabricMode, FmPartitionInfo, FmPciDevice, SimulatedFabricManager

log = logging.getLogger(__name__)

NVML_STATE_FILE = "nvml.json"
FM_STATE_FILE = "fabric-manager.json"
BOOT_ID_FILE = "boot_id"


def _write(path: Path, data: bytes) -> None:
    # The simulated hardware's own files: written atomically, but not through nvdra.cdi.atomic_write,
    # whose fault point belongs to the plugin's writes (the checkpoint, CDI specs), not the hardware's.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _state_dir(config: PluginConfig) -> Path | None:
    return config.simulated_host_dir if config.simulate and config.simulate_state else None


def simulated_nvml_state(config: PluginConfig) -> Path | None:
    """Where the simulated GPUs keep their state (None: in memory only)."""
    state = _state_dir(config)
    return state / NVML_STATE_FILE if state is not None else None


def node_boot_id(config: PluginConfig) -> str:
    """The boot id the plugin compares its checkpoint with: the simulated node's, else the kernel's."""
    state = _state_dir(config)
    if state is None:
        return read_boot_id()
    path = state / BOOT_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        boot_id = str(uuid.uuid4())
        _write(path, boot_id.encode() + b"\n")
        return boot_id


class PersistentFabricManager:
    """A simulated Fabric Manager whose active partitions are kept in a file (the daemon outlives us)."""

    def __init__(self, inner: SimulatedFabricManager, path: Path) -> None:
        self.inner = inner
        self.path = path
        try:
            saved = json.loads(path.read_text()).get("active", [])
        except FileNotFoundError:
            saved = []
        if saved:
            inner.set_activated(sorted(int(p) for p in saved))  # the daemon's state, as it was

    def _save(self) -> None:
        _write(self.path, json.dumps({"active": sorted(self.inner.active_ids())}).encode() + b"\n")

    def mode(self) -> FabricMode:
        """FABRIC_MODE."""
        return self.inner.mode()

    def partitions(self) -> tuple[FmPartitionInfo, ...]:
        """Every partition with its active flag."""
        return self.inner.partitions()

    def activate(self, partition_id: int) -> None:
        """Activate, then persist."""
        self.inner.activate(partition_id)
        self._save()

    def activate_with_vfs(self, partition_id: int, vfs: Sequence[FmPciDevice]) -> None:
        """Activate in vGPU mode, then persist."""
        self.inner.activate_with_vfs(partition_id, vfs)
        self._save()

    def deactivate(self, partition_id: int) -> None:
        """Deactivate, then persist."""
        self.inner.deactivate(partition_id)
        self._save()

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        """Hand over the live list, then persist."""
        self.inner.set_activated(partition_ids)
        self._save()

    def close(self) -> None:
        """End the session (the daemon keeps its state)."""
        self.inner.close()


def persisted_fabric_manager(fm: FabricManager | None, config: PluginConfig) -> FabricManager | None:
    """``fm`` with its state in ``--simulate-state`` when it is a simulated one and the flag is set."""
    state = _state_dir(config)
    from nvdra.fabric import SimulatedFabricManager

    if state is None or not isinstance(fm, SimulatedFabricManager):
        return fm
    return PersistentFabricManager(fm, state / FM_STATE_FILE)


def reboot_simulated_node(state_root: Path, profile: str) -> str:
    """Reboot a simulated node (the plugin must not be running); returns the new boot id.

    ``state_root`` is the ``--simulate-state`` directory; the node's files are in its ``<profile>/``.

    What survives a reboot survives here: MIG mode, files on disk (the checkpoint, CDI specs in a
    persistent CDI root, MPS directories), API objects. What does not is reset: MIG devices, compute
    modes and time slices, Fabric Manager partitions, vfio-pci bindings (the simulated sysfs is laid out
    again, every GPU on ``nvidia``).
    """
    state_dir = simulated_profile_dir(state_root, profile)
    backend = SimulatedNvml(profile, state_path=state_dir / NVML_STATE_FILE)
    backend.reboot()
    (state_dir / FM_STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(state_dir / "sysfs", ignore_errors=True)
    boot_id = str(uuid.uuid4())
    _write(state_dir / BOOT_ID_FILE, boot_id.encode() + b"\n")
    log.info("simulated node rebooted: boot id %s", boot_id)
    return boot_id
