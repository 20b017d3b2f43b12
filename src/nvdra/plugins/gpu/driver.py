"""The ``gpu.nvidia.com`` DRA driver: prepare and unprepare claims on one node.

Flow of a prepare call (all claims of one kubelet call are handled together):

1. *Plan* each claim, purely: pick this driver's allocation results, check every device is one this
   node publishes and that no other prepared claim holds it, resolve and validate the opaque configs.
   A claim that fails here is answered with its error and touches nothing.
2. Checkpoint every planned claim *with effects* as ``PrepareStarted`` (one durable write for the call;
   none when no claim has effects). The specs of the claims without effects are written meanwhile.
3. Apply each plan with effects (time slices, MPS, MIG devices, fabric partitions, VFIO bindings; then
   its CDI spec). A claim that fails here is rolled back.
4. Checkpoint the survivors as ``PrepareCompleted`` and drop the failures (one durable write); answer
   once every answered claim's spec and entry are durable (``GpuDriver._apply`` says why a claim
   without effects needs no ``PrepareStarted`` record).

Unprepare removes what the checkpoint says was made, in reverse, then the entry. Unknown claims
succeed. Repeating a completed prepare returns the stored answer without touching anything (but a
missing spec of a claim without effects, which a crash between its two writes leaves, is rewritten).

At start the checkpoint is loaded with repair (see :mod:`nvdra.plugins.state`), ``PrepareStarted``
entries — prepares that died half-way and were never reported to the kubelet — are rolled back, and
CDI specs that no checkpoint entry owns are removed.
"""

from __future__ import annotations

__all__ = ["ClaimSpecs", "DeviceView", "GpuDriver", "node_resources"]

import functools
import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import attrs

from nvdra.core.checkpoint import Checkpoint, ClaimState, DeviceRecord, PreparedClaim
from nvdra.core.config import AllocatedDevice, ConfigGroup, DeviceType, resolve_configs
from nvdra.core.devices import Inventory
from nvdra.core.effects import EffectRecord
from nvdra.core.errors import CdiError, ClaimError, NvdraError, UserError
from nvdra.core.faults import reach
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.resourceslice import GPU_DRIVER_NAME, render_gpu_devices
from nvdra.core.shares import SHARED_DEVICE_TYPES
from nvdra.kubeletplugin.types import (
    ClaimRef,
    DriverResources,
    Pool,
    PrepareResult,
    Slice,
)
from nvdra.plugins.claims import CheckpointedDriver, claim_entry, claim_ref
from nvdra.plugins.gpu.devices import AllocatableDevice, allocatable_devices
from nvdra.plugins.gpu.effects import Applied, ClaimContext, Effects
from nvdra.plugins.gpu.shares import keep_shared, time_slice_conflict
from nvdra.plugins.state import CheckpointStore, LoadReport

if TYPE_CHECKING:
    from nvdra.plugins.gpu.fabric import NodeFabric

# The fabric, DynamicMIG and device-metadata modules (~70 ms of imports) load only where their gate or
# flag is on, so a plugin with the default gates registers without them (tests/test_imports.py).

log = logging.getLogger(__name__)


class DeviceView(Protocol):
    """A feature that changes what is published beyond the inventory's devices (passthrough views,
    health taints). ``held`` is every device name a checkpointed claim holds."""

    def allocatable(self) -> Mapping[str, AllocatableDevice]:
        """Extra devices a claim may get (e.g. ``gpu-vfio-<i>``)."""
        ...

    def decorate(self, resources: DriverResources, held: Collection[str]) -> DriverResources:
        """The published resources with this feature's changes."""
        ...

    def refuse(self, name: str, held: Collection[str]) -> str | None:
        """Why device ``name`` cannot be prepared now, or None."""
        ...


class ClaimSpecs(Protocol):
    """Per-claim CDI specs (see :class:`nvdra.plugins.gpu.cdi.GpuClaimSpecs`)."""

    in_memory: bool
    """The specs live on a memory filesystem (tmpfs: ``/var/run/cdi`` on most nodes), where a write or
    removal blocks on no disk: the driver makes them on the calling thread, since an I/O thread would
    overlap nothing with the checkpoint write and cost a hand-off."""

    def device_id(self, claim_uid: str, device_name: str) -> str:
        """The qualified CDI device name returned to the kubelet."""
        ...

    def write(
        self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied] = ()
    ) -> None:
        """Write (atomically, durably) the claim's spec, with the edits the applied effects contribute."""
        ...

    def remove(self, claim_uid: str) -> None:
        """Remove the claim's spec; a missing spec is fine."""
        ...

    def write_many(
        self, claims: Mapping[str, Sequence[AllocatableDevice]]
    ) -> dict[str, BaseException | None]:
        """Write the specs of claims without effects (UID → devices), made durable together; each
        claim's failure or None."""
        ...

    def remove_many(self, claim_uids: Sequence[str]) -> dict[str, BaseException | None]:
        """Remove claims' specs, durable together (missing ones are fine); each claim's failure or None."""
        ...

    def exists(self, claim_uid: str) -> bool:
        """Whether the claim's spec is on disk."""
        ...

    def claim_uids(self) -> set[str]:
        """UIDs of the claims that have a spec on disk."""
        ...


@attrs.frozen(kw_only=True)
class _Plan:
    ref: ClaimRef
    devices: tuple[DeviceRecord, ...]
    allocated: tuple[AllocatableDevice, ...]
    groups: tuple[ConfigGroup, ...]
    effects: tuple[EffectRecord, ...] = ()

    def held(self) -> list[str]:
        """The devices this claim holds alone (not admin access, not a share of the device)."""
        return [d.device_name for d in self.devices if not d.admin_access and d.share_id is None]


class GpuDriver(CheckpointedDriver):
    """Implements :class:`nvdra.kubeletplugin.types.DraDriver` for NVIDIA GPUs."""

    def __init__(
        self,
        *,
        node_name: str,
        inventory: Inventory,
        gates: FeatureGates,
        store: CheckpointStore,
        specs: ClaimSpecs,
        effects: Effects | None = None,
        driver_name: str = GPU_DRIVER_NAME,
        views: Sequence[DeviceView] = (),
        fabric_partitions: bool = False,
        shares: bool = False,
    ) -> None:
        """``fabric_partitions``: publish NVLink partitions as devices (``--publish-fabric-partitions``).
        ``shares``: consumable shares are on, so results with a ``shareID`` may share a GPU or MIG device."""
        self.node_name = node_name
        self.driver_name = driver_name
        self.inventory = inventory
        self.gates = gates
        self._store = store
        self._specs = specs
        self._effects = effects or Effects()
        self._devices = allocatable_devices(inventory, gates)
        self.shares = shares
        self.fabric_partitions = _partitions_enabled(fabric_partitions, gates)
        fabric = _node_fabric(self._effects.planners, gates)
        self.fabric_catalog = fabric.catalog if fabric else None  # FM's live table where it answers
        if self.fabric_partitions:
            from nvdra.plugins.gpu.fabric.partitions import partition_devices

            self._devices.update(partition_devices(inventory, self.fabric_catalog))
        self.views = list(views)
        for view in self.views:
            self._devices.update(view.allocatable())
        # Set by serve: receives the resources again whenever a view's output changes.
        self.on_resources_changed: Callable[[DriverResources], None] | None = None
        self._published: DriverResources | None = None
        self._publish_lock = threading.Lock()
        self._lock = threading.Lock()
        self._checkpoint = Checkpoint(node_boot_id=store.boot_id)
        # Spec writes/removals overlap with checkpoint writes (see _apply and unprepare for why); on a
        # memory filesystem they block on nothing, so they run on the calling thread, without a hand-off.
        self._io: Executor = (
            _OnCallingThread()
            if specs.in_memory
            else ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="nvdra-io")
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LoadReport:
        """Load the checkpoint, roll back half-done prepares, remove orphaned CDI specs."""
        with self._lock:
            cp, report = self._store.load()
            for gone in report.discarded:  # rebooted: undo what outlives a reboot (an MPS Deployment)
                self._undo_entry(gone)
            stale = [c for c in cp.claims.values() if c.state is ClaimState.PREPARE_STARTED]
            rolled_back = []
            for claim in stale:
                log.warning("rolling back prepare of %s that did not complete before a restart", claim)
                if self._undo_entry(claim):
                    self._specs.remove(claim.uid)
                    rolled_back.append(claim.uid)
            cp = cp.without(*rolled_back)
            self._store.save(cp)
            self._checkpoint = cp
            self._sweep_specs(self._specs, cp)
            for claim in cp.claims.values():  # a crash between a spec-only claim's two writes
                failure = self._restore_spec(claim)
                if failure:
                    log.error("cannot restore the CDI spec of claim %s: %s", claim, failure)
        return report

    def close(self) -> None:
        """Release the I/O threads."""
        self._io.shutdown(wait=True)

    def resources(self) -> DriverResources:
        """What this node publishes (:func:`node_resources`, which the operator tool shows too): the
        inventory's devices, decorated by every view."""
        return node_resources(
            self.inventory,
            node_name=self.node_name,
            gates=self.gates,
            fabric_partitions=self.fabric_partitions,
            views=self.views,
            held=self._held(),
            fabric=_node_fabric(self._effects.planners, self.gates),
        )

    def device_status(self, claim_uid: str) -> list[dict[str, Any]]:
        """The ``status.devices[]`` entries of a prepared claim (none when it is not prepared here)."""
        from nvdra.plugins.gpu.devicestatus import gpu_device_status

        entry = self._checkpoint.claims.get(claim_uid)
        if entry is None or entry.state != "PrepareCompleted":
            return []
        devices = self._devices
        return [gpu_device_status(self.driver_name, d, devices.get(d.device_name)) for d in entry.devices]

    def prepared_device_counts(self) -> dict[str, int]:
        """Devices held by checkpointed claims, per type (gpu, mig, vfio, unknown): the metrics gauge."""
        counts: dict[str, int] = {}
        for name in self._held():
            device = self._devices.get(name)
            kind = device.type if device is not None else "unknown"
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def _held(self) -> frozenset[str]:
        return frozenset(
            d.device_name for c in self._checkpoint.claims.values() for d in c.devices if not d.admin_access
        )

    def republish(self) -> None:
        """Hand the resources to ``on_resources_changed`` when the views changed them."""
        callback = self.on_resources_changed
        if callback is None or not self.views:
            return
        with self._publish_lock:
            resources = self.resources()
            if resources == self._published:
                return
            self._published = resources
            callback(resources)

    @staticmethod
    def resources_for(
        inventory: Inventory,
        *,
        node_name: str,
        gates: FeatureGates,
        fabric_partitions: bool = False,
        fabric: NodeFabric | None = None,
    ) -> DriverResources:
        """The published resources of any inventory (the publisher splits slices over the limit).

        ``fabric_partitions``: also publish NVLink partitions as devices, with their counter set in a
        slice of its own (see :mod:`nvdra.plugins.gpu.fabric.partitions`). ``fabric``: the running
        plugin's fabric (Fabric Manager's live partition table and mode) for the fabric attributes.
        """
        if gates.enabled(Gate.DYNAMIC_MIG):
            from nvdra.plugins.gpu.mig import dynamic_mig_resources

            dynamic = dynamic_mig_resources(inventory, node_name=node_name, gates=gates)
            if dynamic is not None:
                return dynamic
        devices = tuple(render_gpu_devices(inventory))
        if gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
            from nvdra.plugins.gpu.fabric import with_fabric_attributes

            devices = with_fabric_attributes(devices, inventory, fabric)
        if _partitions_enabled(fabric_partitions, gates):
            from nvdra.plugins.gpu.fabric.partitions import render_partition_layout

            catalog = fabric.catalog if fabric else None  # FM's live listing where it answers
            counters, devices = render_partition_layout(inventory, devices, catalog)
            slices = (Slice(shared_counters=counters), Slice(devices=devices))
            return DriverResources(pools={node_name: Pool(slices=slices)})
        return DriverResources(pools={node_name: Pool(slices=(Slice(devices=devices),))})

    # -- prepare ---------------------------------------------------------------------------------

    def prepare_resource_claims(self, claims: Sequence[Mapping[str, Any]]) -> dict[str, PrepareResult]:
        """Prepare every claim; see the module docstring for the steps and guarantees."""
        results: dict[str, PrepareResult] = {}
        with self._lock:
            self._refresh()
            plans: list[_Plan] = []
            in_batch: dict[str, ClaimRef] = {}  # devices the plans so far hold exclusively → their claim
            dropped: list[str] = []  # half-done entries rolled back whose retry was refused
            for claim in claims:
                ref = claim_ref(claim)
                done = self._checkpoint.claims.get(ref.uid)
                if done is not None and done.state is ClaimState.PREPARE_COMPLETED:
                    results[ref.uid] = self._completed_answer(done)
                    continue
                if done is not None and not self._undo_entry(done):
                    # An earlier attempt died half-way and its effects cannot be rolled back yet.
                    results[ref.uid] = self._failed(
                        ref, "an earlier attempt could not be rolled back; will retry"
                    )
                    continue
                try:
                    plan = self._plan(ref, claim, in_batch)
                except UserError as exc:
                    results[ref.uid] = self._failed(ref, str(exc))
                    if done is not None:
                        dropped.append(ref.uid)
                    continue
                plans.append(plan)
                in_batch.update(dict.fromkeys(plan.held(), ref))
            if dropped:
                for uid in dropped:
                    self._specs.remove(uid)
                self._checkpoint = self._checkpoint.without(*dropped)
                if not plans:
                    self._store.save(self._checkpoint)
            if plans:
                results.update(self._apply(plans))
        self.republish()  # a view (passthrough) may hide or show devices now
        return results

    def _refresh(self) -> None:
        # During a rolling update the other instance may have written the checkpoint since our last
        # call (both hold the serialization flock around calls): never plan against a stale copy.
        reloaded = self._store.reload_if_changed()
        if reloaded is not None:
            log.info("checkpoint changed on disk (another plugin instance); reloaded")
            self._checkpoint = reloaded

    def _plan(self, ref: ClaimRef, claim: Mapping[str, Any], in_batch: Mapping[str, ClaimRef]) -> _Plan:
        """What preparing ``claim`` takes; ``in_batch``: the devices that claims planned before it in
        this call hold exclusively, and by which claim."""
        allocation = (claim.get("status") or {}).get("allocation") or {}
        all_results = (allocation.get("devices") or {}).get("results") or []
        mine = [r for r in all_results if r.get("driver") == self.driver_name]
        if not mine:
            raise ClaimError(f"the allocation has no device of driver {self.driver_name}")
        allocated: list[AllocatableDevice] = []
        for r in mine:
            allocated.append(self._check_result(ref, r, in_batch, allocated))
        groups = resolve_configs(
            (allocation.get("devices") or {}).get("config") or [],
            [
                AllocatedDevice(
                    request=str(r.get("request", "")),
                    device=dev.name,
                    device_type=DeviceType(dev.config_type),
                )
                for r, dev in zip(mine, allocated, strict=True)
            ],
            driver=self.driver_name,
            gates=self.gates,
        )
        try:
            cdi_ids = {dev.name: self._specs.device_id(ref.uid, dev.name) for dev in allocated}
        except CdiError as exc:  # a UID that cannot name a CDI device or file: this claim's error alone
            raise ClaimError(f"claim UID cannot be used in CDI names: {exc}") from exc
        devices = tuple(
            DeviceRecord(
                requests=(_strip_subrequest(str(r.get("request", ""))),),
                pool_name=str(r["pool"]),
                device_name=dev.name,
                cdi_device_ids=(cdi_ids[dev.name],),
                share_id=r.get("shareID"),
                admin_access=r.get("adminAccess") is True,
            )
            for r, dev in zip(mine, allocated, strict=True)
        )
        if self.gates.enabled(Gate.DEVICE_METADATA):
            from nvdra.plugins.gpu.metadata import with_metadata_ids

            devices = with_metadata_ids(devices, ref.uid)  # KEP-5304: the request's metadata spec
        # Admin access observes a device another claim may hold: it is never reconfigured (no time
        # slicing, MPS, MIG or fabric change), so the effect planners do not see it (upstream's rule).
        admin = {dev.name for r, dev in zip(mine, allocated, strict=True) if r.get("adminAccess") is True}
        ctx = ClaimContext(
            ref=ref,
            devices=tuple(d for d in allocated if d.name not in admin),
            groups=groups,
            results=tuple(r for r in mine if r.get("adminAccess") is not True),
        )
        effects = self._effects.plan(ctx)
        if self.shares:
            conflict = time_slice_conflict(effects, self._share_holders(ref.uid))
            if conflict is not None:
                raise ClaimError(conflict)
        return _Plan(ref=ref, devices=devices, allocated=tuple(allocated), groups=groups, effects=effects)

    def _share_holders(self, uid: str) -> dict[str, list[EffectRecord]]:
        """Other prepared claims holding shares: their applied effects (readable ones), by claim."""
        out: dict[str, list[EffectRecord]] = {}
        for c in self._checkpoint.claims.values():
            if c.uid == uid or not any(d.share_id for d in c.devices):
                continue
            try:
                out[str(c)] = [self._effects.from_json(r, f"claims[{c.uid}].applied") for r in c.applied]
            except NvdraError:
                continue
        return out

    def _shared_gpus(self, claim: PreparedClaim) -> frozenset[str]:
        """GPUs of this claim's shares that another prepared claim still shares (kept at unprepare)."""
        if not self.shares:
            return frozenset()
        mine = {d.device_name for d in claim.devices if d.share_id}
        others = {
            d.device_name
            for c in self._checkpoint.claims.values()
            if c.uid != claim.uid
            for d in c.devices
            if d.share_id
        }
        return frozenset(
            str(g.uuid) for n in mine & others if n in self._devices for g in self._devices[n].gpus
        )

    def _check_result(
        self,
        ref: ClaimRef,
        result: Mapping[str, Any],
        in_batch: Mapping[str, ClaimRef],
        earlier: Sequence[AllocatableDevice] = (),
    ) -> AllocatableDevice:
        name, pool = str(result.get("device", "")), str(result.get("pool", ""))
        if pool != self.node_name:
            raise ClaimError(
                f"device {name!r} is from pool {pool!r}, but this node's pool is {self.node_name!r}"
            )
        device = self._devices.get(name)
        if device is None:
            known = ", ".join(sorted(self._devices)) or "none"
            raise ClaimError(f"device {name!r} is not published by this node (known: {known})")
        if result.get("adminAccess"):
            return device  # admin access: observes the device, holds nothing, changes nothing
        share = self.shares and result.get("shareID") is not None and device.type in SHARED_DEVICE_TYPES
        for holder in self._checkpoint.claims.values():
            if holder.uid == ref.uid:
                continue
            for d in holder.devices:
                if d.device_name == name and not d.admin_access and not (share and d.share_id is not None):
                    raise ClaimError(f"device {name!r} is already prepared for claim {holder}")
        other = in_batch.get(name)
        if other is not None and not share:
            raise ClaimError(f"device {name!r} is also allocated to claim {other} in the same request")
        for view in self.views:
            reason = view.refuse(name, self._held() | set(in_batch))
            if reason is not None:
                raise ClaimError(reason)
        if self.fabric_partitions:
            from nvdra.plugins.gpu.fabric.partitions import sharing_refusal

            reason = sharing_refusal(device, self._occupants(ref, in_batch, earlier))
            if reason is not None:
                raise ClaimError(reason)
        return device

    def _occupants(
        self, ref: ClaimRef, in_batch: Mapping[str, ClaimRef], earlier: Sequence[AllocatableDevice]
    ) -> list[tuple[AllocatableDevice, str]]:
        """Devices occupying GPUs: other claims' (checkpoint, this call) and this claim's earlier ones."""
        out = [
            (self._devices[d.device_name], f"prepared for claim {c}")
            for c in self._checkpoint.claims.values()
            if c.uid != ref.uid
            for d in c.devices
            if not d.admin_access and d.device_name in self._devices
        ]
        out += [
            (self._devices[n], f"allocated to claim {r} in the same request") for n, r in in_batch.items()
        ]
        out += [(d, "also allocated to this claim") for d in earlier]
        return out

    def _apply(self, plans: Sequence[_Plan]) -> dict[str, PrepareResult]:
        """Durable stages: claims with effects ``PrepareStarted`` → effects → spec → ``PrepareCompleted``;
        claims whose only change is their CDI spec (no effect: a full GPU, a static MIG device, admin
        access) get no ``PrepareStarted`` record: their spec write runs beside the checkpoint writes and
        their ``PrepareCompleted`` entry goes into the same write as the others'. Every answer is sent
        only once its spec and its entry are both durable.

        Crash-safe for a spec-only claim whichever write lands first, because the kubelet learns its CDI
        ids only from the answer: a spec without an entry is an orphan that the next start removes
        (:func:`~nvdra.plugins.claims.sweep_orphan_specs`); an entry without its spec was never answered,
        so the kubelet sends the prepare again, and a repeated prepare of a completed claim without
        effects rewrites a missing spec from the recorded devices before it answers
        (``_completed_answer``); an unprepare instead removes the entry and finds no spec to remove. Such
        a claim's spec is a function of its devices alone, so the rewritten spec is the one the crash
        lost. (tests/plugins/test_spec_only_prepare.py, the fault matrix's gpu cases.)
        """
        quick = [p for p in plans if not p.effects]
        slow = [p for p in plans if p.effects]
        # A spec is inert until the kubelet gets its id: the spec-only claims' writes start now.
        early = self._write_specs(quick)
        results: dict[str, PrepareResult] = {}
        completed = self._checkpoint
        if slow:
            # Effects may only start once their intent is durable; their spec needs what they produced.
            started = self._checkpoint
            for plan in slow:
                started = started.with_claim(_entry(plan, ClaimState.PREPARE_STARTED))
            unsaved = self._save_or_fail(started, plans, quick, early)
            if unsaved is not None:
                return unsaved
            reach("after-prepare-started")
            completed = self._apply_all_effects(slow, started, results)
        for plan in quick:  # recorded before their specs are known durable: see the docstring
            completed = completed.with_claim(_entry(plan, ClaimState.PREPARE_COMPLETED))
        # If this write fails, nothing new is recorded as complete; the PrepareStarted entries stay, so a
        # retry or the next start rolls them back.
        unsaved = self._save_or_fail(completed, plans, quick, early)
        if unsaved is not None:
            return unsaved
        reach("after-prepare-completed")
        results.update(self._answer_spec_only(quick, early))
        return results

    def _apply_all_effects(
        self, plans: Sequence[_Plan], started: Checkpoint, results: dict[str, PrepareResult]
    ) -> Checkpoint:
        """Apply each plan's effects and spec (their intent is durable); ``started`` with the survivors
        completed and the rolled-back failures dropped; each plan's answer goes into ``results``."""
        completed = started
        for plan in plans:
            failure = self._apply_effects(plan)
            if failure is not None:
                self._specs.remove(plan.ref.uid)
                if self._undo(plan.effects, str(plan.ref)):
                    completed = completed.without(plan.ref.uid)
                results[plan.ref.uid] = self._failed(plan.ref, str(failure))
                continue
            completed = completed.with_claim(_entry(plan, ClaimState.PREPARE_COMPLETED))
            results[plan.ref.uid] = PrepareResult(devices=self._prepared(plan.devices))
        return completed

    def _answer_spec_only(self, plans: Sequence[_Plan], writes: _Outcomes) -> dict[str, PrepareResult]:
        """The answers of the spec-only claims once their entries are durable: each waits for its spec."""
        results: dict[str, PrepareResult] = {}
        failed = []
        failures = writes()
        for plan in plans:
            failure = failures[plan.ref.uid]
            if failure is None:
                results[plan.ref.uid] = PrepareResult(devices=self._prepared(plan.devices))
            else:
                self._specs.remove(plan.ref.uid)
                results[plan.ref.uid] = self._failed(plan.ref, str(failure))
                failed.append(plan.ref.uid)
        if failed:  # failure path only: drop their entries again (if this write fails, a retry rewrites)
            try:
                self._store.save(self._checkpoint.without(*failed))
                self._checkpoint = self._checkpoint.without(*failed)
            except (NvdraError, OSError) as exc:
                log.error("cannot drop the entries of claims whose CDI spec failed: %s", exc)
        return results

    def _save_or_fail(
        self, checkpoint: Checkpoint, plans: Sequence[_Plan], quick: Sequence[_Plan], early: _Outcomes
    ) -> dict[str, PrepareResult] | None:
        """Save ``checkpoint`` and make it the current one (None); when it cannot be written, the
        spec-only claims' specs (``quick``, being written by ``early``) go, since they get no entry, and
        every claim of the call is answered with the failure."""
        try:
            self._store.save(checkpoint)
        except (NvdraError, OSError) as exc:
            self._drop_specs(quick, early)
            return {p.ref.uid: self._failed(p.ref, f"cannot write checkpoint: {exc}") for p in plans}
        self._checkpoint = checkpoint
        return None

    def _drop_specs(self, plans: Sequence[_Plan], writes: _Outcomes) -> None:
        """Remove the specs of claims that will get no entry, once their writes have ended."""
        writes()
        for plan in plans:
            self._specs.remove(plan.ref.uid)

    def _write_specs(self, plans: Sequence[_Plan]) -> _Outcomes:
        """Start writing the specs of claims without effects on the I/O threads; returns what waits for
        them. Several claims' specs go as one batch made durable together (``ClaimSpecs.write_many``:
        one sync and one directory fsync for the call instead of one each)."""
        if len(plans) < _BATCH_MIN:
            return self._spread(
                {p.ref.uid: functools.partial(self._specs.write, p.ref.uid, p.allocated) for p in plans}
            )
        return self._batch(
            [p.ref.uid for p in plans],
            functools.partial(self._specs.write_many, {p.ref.uid: p.allocated for p in plans}),
        )

    def _remove_specs(self, uids: Sequence[str]) -> _Outcomes:
        """Start removing claims' specs on the I/O threads; several go as one batch with one directory
        fsync after all the unlinks (``ClaimSpecs.remove_many``)."""
        if len(uids) < _BATCH_MIN:
            return self._spread({uid: functools.partial(self._specs.remove, uid) for uid in uids})
        return self._batch(uids, functools.partial(self._specs.remove_many, uids))

    def _batch(
        self, keys: Sequence[str], call: Callable[[], Mapping[str, BaseException | None]]
    ) -> _Outcomes:
        """Run a batch call on one I/O thread; what waits for it answers every key, with the batch's own
        exception where the whole call failed."""
        run = self._io.submit(call)

        def outcomes() -> Mapping[str, BaseException | None]:
            try:
                return run.result()
            except BaseException as exc:  # handed to each claim, as _spread hands a call's exception
                return dict.fromkeys(keys, exc)

        return outcomes

    def _spread(self, calls: Mapping[str, Callable[[], None]]) -> _Outcomes:
        """Start ``calls`` on the I/O threads, an equal share each (one hand-off per thread rather than
        one per call: a 64-claim call's spec writes woke the waiting thread 64 times); returns what
        waits for them: each call's exception, or None, by key."""
        keys = list(calls)
        shares = min(_IO_THREADS, len(keys))
        runs = [self._io.submit(_run_each, [calls[k] for k in keys[i::shares]]) for i in range(shares)]

        def outcomes() -> dict[str, BaseException | None]:
            out: dict[str, BaseException | None] = {}
            for i, run in enumerate(runs):
                out.update(zip(keys[i::shares], run.result(), strict=True))
            return out

        return outcomes

    def _completed_answer(self, done: PreparedClaim) -> PrepareResult:
        """The stored answer of a completed claim, its spec first restored if a crash lost it."""
        failure = self._restore_spec(done)
        if failure:
            ref = ClaimRef(namespace=done.namespace, name=done.name, uid=done.uid)
            return self._failed(ref, f"cannot restore its CDI spec: {failure}")
        return PrepareResult(devices=self._prepared(done.devices))

    def _restore_spec(self, done: PreparedClaim) -> str:
        """Rewrite the missing spec of a completed claim without effects (a crash after its entry, before
        its spec: see ``_apply``; its spec is a function of its devices); why it failed, or ""."""
        if done.applied or self._specs.exists(done.uid):
            return ""
        missing = [d.device_name for d in done.devices if d.device_name not in self._devices]
        if missing:
            return f"device {missing[0]!r} is not published by this node"
        log.warning("claim %s is prepared but its CDI spec is missing; writing it again", done)
        try:
            self._specs.write(done.uid, [self._devices[d.device_name] for d in done.devices])
        except (NvdraError, OSError) as exc:
            return str(exc)
        return ""

    def _apply_effects(self, plan: _Plan) -> BaseException | None:
        """Apply a plan's effects in order, then write its spec; the first failure is returned."""
        applied: list[Applied] = []
        try:
            for record in plan.effects:
                applied.append(self._effects.apply(record))
            self._specs.write(plan.ref.uid, plan.allocated, applied)
        except (NvdraError, OSError) as exc:
            return exc
        return None

    def _undo(self, records: Sequence[EffectRecord], owner: str) -> bool:
        """Undo effect records in reverse; False (logged) if one could not be undone."""
        for record in reversed(records):
            try:
                self._effects.undo(record)
                reach("after-undo")
            except (NvdraError, OSError) as exc:
                log.error("cannot undo %s of claim %s: %s", record.kind, owner, exc)
                return False
        return True

    def _undo_entry(self, claim: PreparedClaim, keep: Collection[str] = ()) -> bool:
        """Undo a checkpoint entry's effects, read back from their JSON; False (logged) if one cannot be
        read (a kind with no executor in this run) or undone. ``keep``: GPUs other claims still share,
        whose time slice stays."""
        try:
            where = f"claims[{claim.uid}].applied"
            records = [self._effects.from_json(r, f"{where}[{i}]") for i, r in enumerate(claim.applied)]
        except NvdraError as exc:
            log.error("cannot undo the prepare of claim %s: %s", claim, exc)
            return False
        return self._undo(keep_shared(records, keep) if keep else records, str(claim))

    # -- unprepare -------------------------------------------------------------------------------

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> dict[str, str]:
        """Undo prepares recorded in the checkpoint, effects in reverse; unknown claims succeed."""
        errors = {ref.uid: "" for ref in claims}
        with self._lock:
            self._refresh()
            known = [self._checkpoint.claims[r.uid] for r in claims if r.uid in self._checkpoint.claims]
            done = []
            for claim in known:
                if self._undo_entry(claim, keep=self._shared_gpus(claim)):
                    done.append(claim)
                else:
                    errors[claim.uid] = (
                        f"cannot undo the prepare of claim {claim}; will retry (see the plugin log)"
                    )
            if not done:
                return errors
            remaining = self._checkpoint.without(*(c.uid for c in done))
            # Crash-safe in either order: a spec without an entry is swept at start; an entry without a
            # spec is unprepared again by the kubelet's retry.
            removals = self._remove_specs([c.uid for c in done])
            try:
                self._store.save(remaining)
                reach("after-unprepare-checkpoint")
            except (NvdraError, OSError) as exc:
                for c in done:
                    errors[c.uid] = f"cannot write checkpoint while unpreparing claim {c}: {exc}"
                remaining = self._checkpoint
            removed = removals()
            for claim in done:
                failure = removed[claim.uid]
                if failure is not None and not errors[claim.uid]:
                    errors[claim.uid] = f"cannot remove CDI spec of claim {claim}: {failure}"
            self._checkpoint = remaining
        self.republish()
        return errors


_IO_THREADS = 4
_BATCH_MIN = 2  # a call with this many spec writes (or removals) hands them over as one batch
_Outcomes = Callable[[], Mapping[str, BaseException | None]]
"""Waits for calls spread over the I/O threads; each call's exception or None, by key."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def node_resources(
    inventory: Inventory,
    *,
    node_name: str,
    gates: FeatureGates,
    fabric_partitions: bool,
    views: Sequence[DeviceView],
    held: Collection[str] = (),
    fabric: NodeFabric | None = None,
) -> DriverResources:
    """Everything the node publishes: the inventory's devices, then each view's decoration in order.

    ``held``: devices that prepared claims hold (a VFIO view hides the other face of a held GPU).
    ``fabric``: the plugin's node fabric (Fabric Manager's mode and live partition table); without it the
    fabric attributes come from NVML alone (board table, no Fabric Manager).
    """
    resources = GpuDriver.resources_for(
        inventory, node_name=node_name, gates=gates, fabric_partitions=fabric_partitions, fabric=fabric
    )
    for view in views:
        resources = view.decorate(resources, held)
    return resources


class _OnCallingThread(Executor):
    """Runs each submitted call at once, on the submitting thread (the specs' I/O where the specs are
    in memory): the Future it returns is already done, with the result or the exception."""

    def submit(self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_R]:
        """Run ``fn`` now; its outcome as a done Future."""
        done: Future[_R] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # recorded, as a thread pool's worker records it
            done.set_exception(exc)
        return done


def _run_each(calls: Sequence[Callable[[], None]]) -> list[BaseException | None]:
    """Run the calls in order; each one's exception (any: as a Future records it) or None."""
    out: list[BaseException | None] = []
    for call in calls:
        try:
            call()
        except BaseException as exc:  # handed to the caller, as a Future would
            out.append(exc)
        else:
            out.append(None)
    return out


def _entry(plan: _Plan, state: ClaimState) -> PreparedClaim:
    return claim_entry(plan.ref, state, plan.devices, [Effects.to_json(r) for r in plan.effects])


def _strip_subrequest(request: str) -> str:
    return request.split("/", 1)[0]


def _partitions_enabled(publish: bool, gates: FeatureGates) -> bool:
    """:func:`~nvdra.plugins.gpu.fabric.partitions.partitions_enabled`, loading the fabric modules only
    when ``--publish-fabric-partitions`` is given."""
    if not publish:
        return False
    from nvdra.plugins.gpu.fabric.partitions import partitions_enabled

    return partitions_enabled(publish, gates)


def _node_fabric(planners: Sequence[object], gates: FeatureGates) -> NodeFabric | None:
    """The fabric planner's node fabric; None without FabricTopologySupport (no fabric planner then:
    :func:`~nvdra.plugins.gpu.fabric.build_fabric_effects` builds none, and the fabric modules stay
    unloaded)."""
    if not gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
        return None
    from nvdra.plugins.gpu.fabric import planned_node_fabric

    return planned_node_fabric(planners)
