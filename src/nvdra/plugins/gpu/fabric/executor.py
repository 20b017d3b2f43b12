"""The fabric executor: activates and deactivates Fabric Manager partitions; wiring into the driver.

Under SharedNVSwitch the driver acts as the service VM: :class:`FabricExecutor` activates the claim's FM
partition (idempotently: skipped when FM already lists it active) and deactivates it when the last claim
using it is unprepared. In every model it tells the workload its partition through CDI env. At start,
a ``fabric-reassert`` record hands the executor (and a Fabric Manager restarted with ``--restart``,
which answers nothing until told) the partitions the checkpoint holds; if FM restarts under a running
plugin, the next call re-asserts the live list before retrying.
"""

from __future__ import annotations

__all__ = [
    "REASSERT_KIND",
    "FabricExecutor",
    "FabricReassert",
    "build_fabric_effects",
    "fabric_effects",
    "live_owners",
    "reassert_partitions",
]

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from nvdra.cdi import ContainerEdits
from nvdra.core.checkpoint import Checkpoint
from nvdra.core.devices import Inventory
from nvdra.core.effects import EffectCodec, EffectRecord
from nvdra.core.errors import ClaimError, NvdraError
from nvdra.core.faults import reach
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.fabric import (
    FabricManager,
    FabricManagerError,
    FabricMode,
    FmBadParam,
    FmInUse,
    FmNotConfigured,
    FmNotSupported,
    FmUninitialized,
    PartitionCatalog,
    Topology,
    describe_mode,
)
from nvdra.fabric.libnvfm import read_fabric_mode
from nvdra.nvml import discover_inventory
from nvdra.plugins.gpu.effects import Applied, expect
from nvdra.plugins.gpu.fabric.node import NodeFabric, connect_fabric_manager
from nvdra.plugins.gpu.fabric.planner import ACTIVATE_KIND, FabricPartition, FabricPlanner
from nvdra.plugins.gpu.simnode import node_boot_id, persisted_fabric_manager
from nvdra.plugins.state import stored_checkpoint

log = logging.getLogger(__name__)

REASSERT_KIND = "fabric-reassert"
ACTIVATE_ATTEMPTS = 4
ACTIVATE_BACKOFF_S = 0.25
"""Activation is tried 4 times, waiting 0.25, 0.5, 1 s between tries (transient errors: timeout, NVLink
training, FM initialising); a partition in use, an unknown id or a wrong mode fails at once."""
_PERMANENT = (FmInUse, FmBadParam, FmNotSupported)


@attrs.frozen(kw_only=True)
class FabricReassert(EffectRecord):
    """At start: partition id → the claims whose records activated it (applied once, never checkpointed)."""

    KIND: ClassVar[str] = REASSERT_KIND
    owners: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


# -- executing ---------------------------------------------------------------------------------------


def _env(record: FabricPartition) -> ContainerEdits:
    return ContainerEdits(
        env=(
            f"NVDRA_FABRIC_PARTITION_ID={record.partition_id}",
            f"NVDRA_FABRIC_PARTITION_SIZE={record.size}",
            f"NVDRA_FABRIC_VIRTUALIZATION_MODEL={record.model}",
            f"NVDRA_FABRIC_NVLINK_BANDWIDTH_GBPS={record.bandwidth_gbps}",
        )
    )


class FabricExecutor:
    """Activates and deactivates Fabric Manager partitions for claims (see the module docstring)."""

    records: tuple[type[EffectRecord], ...] = (FabricPartition, FabricReassert)

    def __init__(
        self,
        fm: FabricManager | None,
        *,
        attempts: int = ACTIVATE_ATTEMPTS,
        backoff_s: float = ACTIVATE_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.fm = fm
        self._owners: dict[int, set[str]] = {}  # partition id -> claims using it
        self._lock = threading.Lock()
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._sleep = sleep

    def apply(self, record: EffectRecord) -> Applied:
        """Activate (SharedNVSwitch) and return the workload's env; or re-assert the live list at start."""
        if isinstance(record, FabricReassert):
            self._reassert(record)
            return Applied()
        partition = expect(record, FabricPartition)
        if partition.activate:
            pid, claim = partition.partition_id, partition.claim
            with self._lock:
                fm = self._client()
                if not self._is_active(fm, pid):
                    self._activate(fm, pid)
                    reach("after-fm-activated")
                self._owners.setdefault(pid, set()).add(claim)
            log.info("activated fabric partition %d for claim %s", pid, claim)
        return Applied(claim_edits=_env(partition))

    def undo(self, record: EffectRecord) -> None:
        """Deactivate when the last claim using the partition goes; fine if it never was active."""
        if not isinstance(record, FabricPartition) or not record.activate:
            return
        pid, claim = record.partition_id, record.claim
        with self._lock:
            owners = self._owners.get(pid, set())
            owners.discard(claim)
            if owners:
                return
            fm = self._client()
            with contextlib.suppress(FmUninitialized):  # the SDK's "not active": nothing to undo
                self._with_list(fm, lambda: fm.deactivate(pid))
            self._owners.pop(pid, None)
        log.info("deactivated fabric partition %d (claim %s was its last user)", pid, claim)

    def _activate(self, fm: FabricManager, pid: int) -> None:
        """Activate with retries on transient failures, doubling the wait; on giving up, make sure FM
        does not keep the partition half-active (deactivate if it lists it active), then raise."""
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                self._with_list(fm, lambda: fm.activate(pid))
                return
            except _PERMANENT:
                self._leave_inactive(fm, pid)
                raise
            except FabricManagerError as exc:
                self._leave_inactive(fm, pid)
                if attempt == self._attempts:
                    raise ClaimError(
                        f"Fabric Manager did not activate partition {pid} after {attempt} attempts "
                        f"(waited {self._backoff_s:g} s, doubling): {exc}"
                    ) from exc
                log.warning(
                    "activating partition %d failed (attempt %d of %d): %s; retrying in %g s",
                    pid,
                    attempt,
                    self._attempts,
                    exc,
                    delay,
                )
                self._sleep(delay)
                delay *= 2

    def _leave_inactive(self, fm: FabricManager, pid: int) -> None:
        with contextlib.suppress(FabricManagerError):
            if self._is_active(fm, pid):
                fm.deactivate(pid)
                log.warning("partition %d was left active by a failed activation; deactivated it", pid)

    def _client(self) -> FabricManager:
        if self.fm is None:
            raise ClaimError("a Shared NVSwitch partition needs the Fabric Manager SDK, which is unavailable")
        return self.fm

    @staticmethod
    def _is_active(fm: FabricManager, pid: int) -> bool:
        try:
            listed = fm.partitions()
        except FmNotConfigured:
            return False
        return any(p.partition_id == pid and p.is_active for p in listed)

    def _with_list(self, fm: FabricManager, call: Any) -> None:
        """Run ``call``; if FM restarted and waits for the live list, hand it over and retry once."""
        try:
            call()
        except FmNotConfigured:
            live = sorted(pid for pid, owners in self._owners.items() if owners)
            log.warning("Fabric Manager awaits its activated-partition list; re-asserting %s", live)
            fm.set_activated(live)
            call()

    def _reassert(self, record: FabricReassert) -> None:
        owners = {int(pid): set(claims) for pid, claims in record.owners.items()}
        with self._lock:
            self._owners = {pid: claims for pid, claims in owners.items() if claims}
            if self.fm is None or (not self._owners and self.fm.mode() is FabricMode.BARE_METAL):
                return
            fm = self.fm
            live = sorted(self._owners)
            try:
                active = {p.partition_id for p in fm.partitions() if p.is_active}
            except FmNotConfigured:
                log.warning("Fabric Manager restarted; handing it the activated partitions %s", live)
                fm.set_activated(live)
                return
            for pid in live:
                if pid not in active:
                    log.warning("partition %d is prepared but not active in Fabric Manager; activating", pid)
                    fm.activate(pid)


def live_owners(checkpoint: Checkpoint) -> dict[str, list[str]]:
    """Partition id -> claims whose records activated it (completed or half-done: both may be live)."""
    owners: dict[str, list[str]] = {}
    for claim in checkpoint.claims.values():
        for i, entry in enumerate(claim.applied):
            if entry.get("kind") != ACTIVATE_KIND:
                continue
            record = EffectCodec.read(entry, FabricPartition, f"claims[{claim.uid}].applied[{i}]")
            if record.activate:
                owners.setdefault(str(record.partition_id), []).append(claim.uid)
    return owners


def reassert_partitions(executor: FabricExecutor, checkpoint: Checkpoint) -> None:
    """Hand the executor (and a restarted Fabric Manager) the partitions the checkpoint holds."""
    owners: dict[str, list[str]] = {}
    try:
        owners = live_owners(checkpoint)
        executor.apply(FabricReassert(owners={pid: tuple(claims) for pid, claims in owners.items()}))
    except NvdraError as exc:
        log.error("cannot re-assert fabric partitions %s: %s", sorted(owners), exc)


def fabric_effects(
    gates: FeatureGates,
    inventory: Inventory,
    *,
    fm: FabricManager | None,
    fm_problem: str = "",
    checkpoint: Checkpoint | None = None,
    configured_mode: FabricMode | None = None,
) -> tuple[list[FabricPlanner], list[FabricExecutor]]:
    """The fabric planner and executor when the gate is on (nothing otherwise).

    ``checkpoint``: the stored claims; their partitions are re-asserted to Fabric Manager at once, before
    the driver rolls back half-done prepares. ``configured_mode``: FABRIC_MODE from fabricmanager.cfg,
    the node's mode while no client is connected.
    """
    if not gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
        return [], []
    executor = FabricExecutor(fm)
    if checkpoint is not None:
        reassert_partitions(executor, checkpoint)  # first: a restarted FM answers nothing until then
    try:
        node = NodeFabric.build(inventory, fm, fm_problem=fm_problem, configured_mode=configured_mode)
    except FabricManagerError as exc:
        log.error("cannot read Fabric Manager's partitions (%s); using the board's default table", exc)
        topology = Topology.from_inventory(inventory)
        try:
            mode = fm.mode() if fm is not None else None
        except FabricManagerError:
            mode = None
        node = NodeFabric(
            topology=topology,
            catalog=PartitionCatalog.for_topology(topology),
            mode=mode,
            fm=fm,
            fm_problem=str(exc),
        )
    log.info(
        "fabric: %s, %d partitions (%s), sizes %s",
        describe_mode(node.mode),
        len(node.catalog.partitions),
        node.catalog.source,
        list(node.catalog.sizes),
    )
    return [FabricPlanner(node, passthrough=gates.enabled(Gate.PASSTHROUGH_SUPPORT))], [executor]


def build_fabric_effects(
    config: Any, gates: FeatureGates, backend: Any, env: Mapping[str, str] | None = None
) -> tuple[list[FabricPlanner], list[FabricExecutor]]:
    """What ``assembly.build_effects`` registers: discovery, the FM client, the stored checkpoint."""
    if not gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
        return [], []
    inventory = discover_inventory(backend)
    root = Path(config.container_driver_root)
    fm, problem = connect_fabric_manager(
        inventory, simulate=config.simulate, driver_root=root, env=os.environ if env is None else env
    )
    fm = persisted_fabric_manager(fm, config)  # a simulated FM keeps its state across plugin restarts
    checkpoint = stored_checkpoint(config.checkpoint_path, node_boot_id(config))
    configured = None if config.simulate or fm is not None else read_fabric_mode(root)
    return fabric_effects(
        gates, inventory, fm=fm, fm_problem=problem, checkpoint=checkpoint, configured_mode=configured
    )
