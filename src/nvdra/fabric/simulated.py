"""A simulated Fabric Manager with the real SDK's activation rules, and the simulated nodes' FM modes.

Rules it keeps (Fabric Manager user guide, nv_fm_agent.h):

- bare-metal mode (0): every partition call answers NOT_SUPPORTED;
- ``activate`` works only in Shared NVSwitch mode (1), ``activate_with_vfs`` only in vGPU mode (2),
  with exactly one VF per GPU of the partition; an unknown id is BADPARAM; a partition that is active,
  or shares a GPU with an active partition, is IN_USE;
- ``deactivate`` of a partition that is not active answers UNINITIALIZED (the SDK's quirk);
- :meth:`SimulatedFabricManager.restart` with ``resilient=True`` (``--restart``) keeps the switch
  routing, but every partition call answers NOT_CONFIGURED until ``set_activated`` names the live
  partitions (an empty list included); a plain restart deactivates everything (GPUs are reset);
- ``close`` ends this client's session; state lives in the "daemon", i.e. the object, so a new client
  (a restarted plugin) sees it.

Which mode a simulated node runs is data: its profile's ``fabric_manager: {mode: N}`` (absent: no Fabric
Manager), overridable with :data:`FABRIC_MODE_ENV`.

The state is guarded by a lock: the plugin's gRPC threads may call concurrently.
"""

from __future__ import annotations

__all__ = ["FABRIC_MODE_ENV", "SimulatedFabricManager", "board_partitions", "simulated_fabric_mode"]

import threading
from collections.abc import Mapping, Sequence

from nvdra.fabric.catalog import BOARD_TABLES, detect_board
from nvdra.fabric.manager import FmGpuInfo, FmPartitionInfo, FmPciDevice, fm_error_for_code
from nvdra.fabric.models import FabricMode
from nvdra.fabric.topology import Topology

FABRIC_MODE_ENV = "NVDRA_SIMULATE_FABRIC_MODE"
"""Overrides a simulated node's FABRIC_MODE: 0, 1 or 2, or ``none`` (no Fabric Manager on the host, as
under FullPassthrough), to try other models on the same board."""

_NO_FM = "none"
_BAD_PARAM, _NOT_SUPPORTED, _UNINITIALIZED, _IN_USE, _NOT_CONFIGURED = -1, -3, -4, -7, -8


def simulated_fabric_mode(declared: int | None, env: Mapping[str, str]) -> FabricMode | None:
    """The FABRIC_MODE a simulated node runs (None: no Fabric Manager).

    Args:
        declared: what the node profile declares (its ``fabric_manager.mode``; None when absent).
        env: :data:`FABRIC_MODE_ENV`, when set, overrides the profile.

    Raises:
        ValueError: the override or the declared mode is not 0, 1, 2 (or ``none`` for the override).
    """
    raw = env.get(FABRIC_MODE_ENV, "").strip()
    if raw.lower() == _NO_FM:
        return None
    try:
        if raw:
            return FabricMode(int(raw))
        return None if declared is None else FabricMode(declared)
    except ValueError as exc:
        source = f"{FABRIC_MODE_ENV}={raw!r}" if raw else f"profile fabric_manager.mode={declared!r}"
        raise ValueError(f"{source}: allowed 0, 1, 2 or {_NO_FM}") from exc


def board_partitions(topology: Topology) -> tuple[FmPartitionInfo, ...]:
    """What FM lists on the board ``topology`` is: its default table's partitions, none active.

    Raises:
        ValueError: the topology is not a baseboard with a Fabric Manager table.
    """
    board = detect_board(topology)
    if board is None:
        raise ValueError("no Fabric Manager runs here: the node is not an NVSwitch baseboard it knows")
    modules = topology.by_module()
    parts = []
    for pid, mods, links in BOARD_TABLES[board].rows:
        if not all(m in modules for m in mods):
            continue
        gpus = []
        for m in mods:
            rate = modules[m].rate
            gpus.append(
                FmGpuInfo(
                    physical_id=m,
                    num_nvlinks_available=links,
                    max_num_nvlinks=modules[m].links,
                    nvlink_line_rate_mbps=rate.line_rate_mbps if rate else 0,
                )
            )
        parts.append(FmPartitionInfo(partition_id=pid, is_active=False, gpus=tuple(gpus)))
    return tuple(parts)


class SimulatedFabricManager:
    """Fabric Manager on a simulated HGX/DGX baseboard (see the module docstring for its rules)."""

    def __init__(self, partitions: Sequence[FmPartitionInfo], *, mode: FabricMode) -> None:
        self._mode = mode
        self._table = {p.partition_id: p for p in partitions}
        self._active: set[int] = {p.partition_id for p in partitions if p.is_active}
        self._awaiting_list = False
        self._lock = threading.Lock()
        self.calls: list[tuple[str, int | None]] = []  # every partition call, for tests and the demo

    @classmethod
    def for_topology(cls, topology: Topology, *, mode: FabricMode) -> SimulatedFabricManager:
        """FM on the board ``topology`` is: its default partition table, nothing active.

        Raises:
            ValueError: the topology is not a baseboard with a Fabric Manager table.
        """
        return cls(board_partitions(topology), mode=mode)

    # -- the SDK surface ---------------------------------------------------------------------------

    def mode(self) -> FabricMode:
        """FABRIC_MODE."""
        return self._mode

    def partitions(self) -> tuple[FmPartitionInfo, ...]:
        """Every partition with its active flag."""
        with self._lock:
            self._check("listing partitions", None)
            return tuple(
                FmPartitionInfo(partition_id=pid, is_active=pid in self._active, gpus=p.gpus)
                for pid, p in sorted(self._table.items())
            )

    def activate(self, partition_id: int) -> None:
        """Activate in Shared NVSwitch mode."""
        self._activate(partition_id, FabricMode.SHARED_NVSWITCH, None)

    def activate_with_vfs(self, partition_id: int, vfs: Sequence[FmPciDevice]) -> None:
        """Activate in vGPU mode with one VF per GPU."""
        self._activate(partition_id, FabricMode.VGPU, vfs)

    def deactivate(self, partition_id: int) -> None:
        """Deactivate; UNINITIALIZED when not active."""
        doing = f"deactivating partition {partition_id}"
        with self._lock:
            self._check(doing, partition_id)
            if partition_id not in self._table:
                raise fm_error_for_code(_BAD_PARAM, doing)
            if partition_id not in self._active:
                raise fm_error_for_code(_UNINITIALIZED, doing)
            self._active.discard(partition_id)

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        """Tell a restarted FM which partitions are live."""
        doing = "setting the activated partition list"
        with self._lock:
            self.calls.append(("set_activated", len(partition_ids)))
            if self._mode is FabricMode.BARE_METAL:
                raise fm_error_for_code(_NOT_SUPPORTED, doing)
            if any(pid not in self._table for pid in partition_ids) or len(set(partition_ids)) != len(
                partition_ids
            ):
                raise fm_error_for_code(_BAD_PARAM, doing)
            self._active = set(partition_ids)
            self._awaiting_list = False

    def close(self) -> None:
        """Nothing to release: the daemon keeps its state."""

    # -- the daemon's life -------------------------------------------------------------------------

    def restart(self, *, resilient: bool) -> None:
        """Restart the daemon: resiliently (partitions kept, list awaited) or plainly (all deactivated)."""
        with self._lock:
            if resilient and self._mode is not FabricMode.BARE_METAL:
                self._awaiting_list = True
            else:
                self._active.clear()
                self._awaiting_list = False

    def active_ids(self) -> frozenset[int]:
        """The active partitions (what ``fmpm -l`` would flag), for tests."""
        with self._lock:
            return frozenset(self._active)

    # -- rules -------------------------------------------------------------------------------------

    def _check(self, doing: str, partition_id: int | None) -> None:
        self.calls.append((doing.split(" ", 1)[0], partition_id))
        if self._mode is FabricMode.BARE_METAL:
            raise fm_error_for_code(_NOT_SUPPORTED, doing)
        if self._awaiting_list:
            raise fm_error_for_code(_NOT_CONFIGURED, doing)

    def _activate(self, partition_id: int, needs: FabricMode, vfs: Sequence[FmPciDevice] | None) -> None:
        doing = f"activating partition {partition_id}"
        with self._lock:
            self._check(doing, partition_id)
            if self._mode is not needs:
                raise fm_error_for_code(_NOT_SUPPORTED, doing)
            partition = self._table.get(partition_id)
            if partition is None:
                raise fm_error_for_code(_BAD_PARAM, doing)
            if vfs is not None and len(vfs) != len(partition.gpus):
                raise fm_error_for_code(_BAD_PARAM, doing)
            members = set(partition.physical_ids)
            if any(members & set(self._table[a].physical_ids) for a in self._active):
                raise fm_error_for_code(_IN_USE, doing)
            self._active.add(partition_id)
