"""The NvmlBackend conformance suite: plain ``check_*(backend)`` functions any backend must pass.

It runs in CI against every simulated profile, and against :class:`PynvmlBackend` over the fake
``libnvidia-ml.so.1`` fed by each profile (:mod:`nvdra.nvml._fakelib`: ctypes structs, return codes
and version fallbacks at the C ABI); read-only, it runs against :class:`PynvmlBackend` on real GPUs,
so the simulator cannot drift from the hardware. Each check raises :class:`ConformanceFailure`
(an ``AssertionError``) on a violation and :class:`ConformanceSkipped` when the node lacks what it
tests. Checks in :data:`MUTATING_CHECKS` change GPU state (MIG instances, compute mode) and run only
with ``allow_mutation=True``; they restore what they changed.

The backend must be initialised by the caller for the ``check_*`` functions;
:func:`run_conformance` takes and drops its own reference.
"""

from __future__ import annotations

__all__ = [
    "MUTATING_CHECKS",
    "READ_ONLY_CHECKS",
    "CheckResult",
    "ConformanceFailure",
    "ConformanceSkipped",
    "run_conformance",
]

import re
import uuid as uuid_mod
from collections.abc import Callable

import attrs

from nvdra.core.devices import ARCHITECTURES, BRANDS, parse_mig_device_name
from nvdra.core.errors import (
    NvmlError,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNotFound,
    NvmlNotSupported,
)
from nvdra.core.resourceslice import render_gpu_devices
from nvdra.nvml import _backend as b
from nvdra.nvml.discovery import discover_inventory, mig_profile_name

_DRIVER = re.compile(r"^\d+\.\d+(\.\d+)?$")
_UNKNOWN_UUID = "GPU-00000000-0000-0000-0000-000000000000"


class ConformanceFailure(AssertionError):
    """A backend answered differently from what NVML does."""


class ConformanceSkipped(Exception):
    """The node lacks what a check needs (no MIG GPU, no NVLink, …)."""


@attrs.frozen(kw_only=True)
class CheckResult:
    """The outcome of one check: ``passed``, ``failed`` or ``skipped``, with a detail line."""

    name: str
    outcome: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True unless the check failed."""
        return self.outcome != "failed"


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise ConformanceFailure(message)


def _expect_raises(exc: type[NvmlError], what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except exc:
        return
    except NvmlError as other:
        raise ConformanceFailure(
            f"{what}: expected {exc.__name__}, got {type(other).__name__} ({other})"
        ) from other
    raise ConformanceFailure(f"{what}: expected {exc.__name__}, the call succeeded")


def _mig_gpus(backend: b.NvmlBackend, *, enabled: bool) -> list[int]:
    found = []
    for i in range(backend.device_count()):
        try:
            mode = backend.mig_mode(i)
        except NvmlNotSupported:
            continue
        if mode.current or not enabled:
            found.append(i)
    return found


# -- read-only checks ----------------------------------------------------------------------------
def check_session(backend: b.NvmlBackend) -> None:
    """init/shutdown are reference counted: an extra pair leaves the session usable."""
    backend.init()
    backend.init()
    backend.shutdown()
    count = backend.device_count()
    backend.shutdown()
    _expect(backend.device_count() == count, "device count changed across an init/shutdown pair")


def check_system(backend: b.NvmlBackend) -> None:
    """Driver version is dotted digits, the CUDA version NVML's integer form."""
    version = backend.driver_version()
    _expect(bool(_DRIVER.match(version)), f"driver version {version!r} is not like 580.105.08")
    cuda = backend.cuda_driver_version()
    _expect(cuda >= 10000 and cuda % 10 == 0, f"CUDA driver version {cuda} is not like 13000")
    _expect(backend.device_count() >= 0, "negative device count")


def check_identity(backend: b.NvmlBackend) -> None:
    """UUIDs, names, minors, bus ids and enums have NVML's formats and are unique per node."""
    uuids, minors, buses = set(), set(), set()
    for i in range(backend.device_count()):
        ident, pci = backend.device_identity(i), backend.pci_info(i)
        _expect(ident.index == i, f"GPU {i} reports index {ident.index}")
        _expect(
            bool(b.GPU_UUID_FORM.match(ident.uuid)),
            f"GPU {i} UUID {ident.uuid!r} is not GPU-8-4-4-4-12 lower hex",
        )
        _expect(ident.name.startswith("NVIDIA "), f"GPU {i} name {ident.name!r} lacks the NVIDIA prefix")
        _expect(ident.brand in BRANDS, f"GPU {i} brand {ident.brand} unknown")
        _expect(ident.architecture in ARCHITECTURES, f"GPU {i} architecture {ident.architecture} unknown")
        _expect(
            ident.cuda_compute_capability[0] >= 3,
            f"GPU {i} compute capability {ident.cuda_compute_capability}",
        )
        _expect(
            bool(b.BUS_ID_FORM.match(pci.bus_id)),
            f"GPU {i} bus id {pci.bus_id!r} is not 00000000:1B:00.0 form",
        )
        _expect(
            pci.device_id & 0xFFFF == 0x10DE, f"GPU {i} pciDeviceId {pci.device_id:#x} lacks vendor 0x10DE"
        )
        memory = backend.memory_total(i)
        _expect(memory is None or memory > 0, f"GPU {i} memory {memory}")
        _expect(backend.module_id(i) >= 0, f"GPU {i} negative module id")
        mode = backend.addressing_mode(i)
        _expect(mode is None or mode in b.ADDRESSING_MODES, f"GPU {i} addressing mode {mode}")
        numa = backend.numa_node(i)
        _expect(numa is None or numa >= 0, f"GPU {i} NUMA node {numa}")
        uuids.add(ident.uuid)
        minors.add(ident.minor)
        buses.add(pci.bus_id)
    n = backend.device_count()
    _expect(len(uuids) == len(minors) == len(buses) == n, "UUIDs, minors or bus ids repeat across GPUs")


def check_lookup(backend: b.NvmlBackend) -> None:
    """UUID lookup finds every GPU; an unknown UUID is NOT_FOUND, a bad index INVALID_ARGUMENT."""
    for i in range(backend.device_count()):
        found = backend.index_by_uuid(backend.device_identity(i).uuid)
        _expect(found == i, f"index_by_uuid(GPU {i}) returned {found}")
    _expect_raises(NvmlNotFound, "index_by_uuid(unknown)", lambda: backend.index_by_uuid(_UNKNOWN_UUID))
    count = backend.device_count()
    _expect_raises(NvmlInvalidArgument, f"device_identity({count})", lambda: backend.device_identity(count))


def check_mig_profiles(backend: b.NvmlBackend) -> None:
    """MIG profiles: unique ids, one placement size each, fit in 8 slices, names follow go-nvlib, no P2P."""
    checked = 0
    for i in _mig_gpus(backend, enabled=False):
        total = backend.memory_total(i)
        profiles = backend.gpu_instance_profiles(i)
        _expect(len({p.id for p in profiles}) == len(profiles), f"GPU {i}: repeated profile ids")
        for p in profiles:
            sizes = {pl.size for pl in p.placements}
            _expect(len(sizes) == 1, f"GPU {i} profile {p.id}: placements of several sizes {sizes}")
            _expect(
                all(pl.start + pl.size <= 8 for pl in p.placements),
                f"GPU {i} profile {p.id} exceeds 8 slices",
            )
            _expect(1 <= p.slice_count <= 7 and p.instance_count >= 1, f"GPU {i} profile {p.id} counts")
            _expect(not p.is_p2p_supported, f"GPU {i} profile {p.id} claims P2P (MIG disables it)")
            if total is not None:
                _expect(p.memory_size_mb * 1024 * 1024 <= total, f"GPU {i} profile {p.id} memory exceeds GPU")
                want = mig_profile_name(
                    memory_size_mb=p.memory_size_mb,
                    total_memory_bytes=total,
                    gi_slices=p.slice_count,
                    profile_enum=p.profile_enum,
                )
                _expect(
                    p.name == f"MIG {want}",
                    f"GPU {i} profile {p.id}: NVML name {p.name!r}, rule gives {want!r}",
                )
            checked += 1
    if not checked:
        raise ConformanceSkipped("no GPU lists MIG profiles")


def check_non_mig(backend: b.NvmlBackend) -> None:
    """A GPU without MIG answers NOT_SUPPORTED to MIG mode and lists no profiles or MIG devices."""
    non_mig = [i for i in range(backend.device_count()) if i not in _mig_gpus(backend, enabled=False)]
    if not non_mig:
        raise ConformanceSkipped("every GPU supports MIG")
    for i in non_mig:
        _expect(backend.gpu_instance_profiles(i) == (), f"GPU {i} without MIG lists profiles")
        _expect(backend.mig_devices(i) == (), f"GPU {i} without MIG lists MIG devices")


def check_mig_devices(backend: b.NvmlBackend) -> None:
    """Existing MIG devices: MIG-…-5xxx UUIDs, legal non-overlapping placements, unique GI ids."""
    checked = 0
    for i in _mig_gpus(backend, enabled=True):
        profiles = {p.id: p for p in backend.gpu_instance_profiles(i)}
        used: set[int] = set()
        gi_ids = set()
        for rec in backend.mig_devices(i):
            _expect(
                bool(b.MIG_UUID_FORM.match(rec.uuid)), f"GPU {i}: MIG UUID {rec.uuid!r} is not MIG-…-5xxx-…"
            )
            _expect(backend.index_by_uuid(rec.uuid) == i, f"GPU {i}: MIG UUID {rec.uuid} resolves elsewhere")
            profile = profiles.get(rec.gi_profile_id)
            _expect(profile is not None, f"GPU {i}: MIG device of unlisted profile {rec.gi_profile_id}")
            assert profile is not None
            _expect(rec.placement in profile.placements, f"GPU {i}: placement {rec.placement} not legal")
            clash = used & set(rec.placement.slices)
            _expect(
                rec.gi_id in gi_ids or not clash, f"GPU {i}: GI {rec.gi_id} overlaps slices {sorted(clash)}"
            )
            used |= set(rec.placement.slices)
            gi_ids.add(rec.gi_id)
            checked += 1
    if not checked:
        raise ConformanceSkipped("no MIG devices exist")


def check_gpu_instances(backend: b.NvmlBackend) -> None:
    """GPU instances: none while MIG is off; otherwise sorted unique ids, legal disjoint placements,
    and every MIG device's GI among them."""
    mig_on = set(_mig_gpus(backend, enabled=True))
    for i in range(backend.device_count()):
        gis = backend.gpu_instances(i)
        if i not in mig_on:
            _expect(gis == (), f"GPU {i} with MIG off or unsupported lists GPU instances {gis}")
            continue
        ids = [g.gi_id for g in gis]
        _expect(ids == sorted(set(ids)), f"GPU {i}: GI ids {ids} not unique and ascending")
        profiles = {p.id: p for p in backend.gpu_instance_profiles(i)}
        used: set[int] = set()
        for g in gis:
            profile = profiles.get(g.profile_id)
            _expect(
                profile is not None and g.placement in profile.placements,
                f"GPU {i}: GI {g.gi_id} of profile {g.profile_id} at {g.placement} is not a legal placement",
            )
            clash = used & set(g.placement.slices)
            _expect(not clash, f"GPU {i}: GI {g.gi_id} overlaps slices {sorted(clash)}")
            used |= set(g.placement.slices)
        listed = {(g.gi_id, g.profile_id, g.placement) for g in gis}
        for rec in backend.mig_devices(i):
            _expect(
                (rec.gi_id, rec.gi_profile_id, rec.placement) in listed,
                f"GPU {i}: MIG device {rec.uuid} sits in GI {rec.gi_id}, which gpu_instances does not list",
            )


def check_remaining_capacity(backend: b.NvmlBackend) -> None:
    """Remaining capacity never exceeds the instance count, and on an empty GPU equals what fits."""
    checked = 0
    for i in _mig_gpus(backend, enabled=False):
        empty = not backend.mig_devices(i)
        for p in backend.gpu_instance_profiles(i):
            left = backend.gpu_instance_remaining_capacity(i, p.id)
            _expect(0 <= left <= p.instance_count, f"GPU {i} profile {p.id}: remaining {left}")
            if empty:
                fits = min(p.instance_count, len(p.placements), 7 // p.slice_count)
                _expect(left == fits, f"GPU {i} profile {p.id}: remaining {left} on an empty GPU, {fits} fit")
            checked += 1
    if not checked:
        raise ConformanceSkipped("no GPU lists MIG profiles")


def check_nvlinks(backend: b.NvmlBackend) -> None:
    """Links are numbered 0..n-1; active ones name a version and a remote; GPU peers link back."""
    buses = {backend.pci_info(i).bus_id: i for i in range(backend.device_count())}
    peers: dict[int, set[int]] = {}
    for i in range(backend.device_count()):
        links = backend.nvlinks(i)
        _expect([r.link for r in links] == list(range(len(links))), f"GPU {i}: link numbers not contiguous")
        for r in links:
            if not r.active:
                continue
            _expect(r.version > 0, f"GPU {i} link {r.link}: active with version 0")
            _expect(
                r.remote_type in (b.NVLINK_REMOTE_GPU, b.NVLINK_REMOTE_SWITCH, b.NVLINK_REMOTE_IBMNPU),
                f"GPU {i} link {r.link}: remote type {r.remote_type}",
            )
            _expect(
                bool(b.BUS_ID_FORM.match(r.remote_bus_id)),
                f"GPU {i} link {r.link}: remote bus {r.remote_bus_id!r}",
            )
            if r.remote_type == b.NVLINK_REMOTE_GPU:
                _expect(
                    r.remote_bus_id in buses,
                    f"GPU {i} link {r.link}: peer {r.remote_bus_id} is not on this node",
                )
                peers.setdefault(i, set()).add(buses.get(r.remote_bus_id, -1))
    for i, ps in peers.items():
        for p in ps:
            _expect(i in peers.get(p, set()), f"GPU {i} links to GPU {p}, which does not link back")


def check_fabric(backend: b.NvmlBackend) -> None:
    """Fabric info: NOT_SUPPORTED before Hopper; otherwise sane fields, and one clique per node."""
    cliques = set()
    for i in range(backend.device_count()):
        arch = backend.device_identity(i).architecture
        try:
            f = backend.fabric_info(i)
        except NvmlNotSupported:
            continue
        _expect(
            arch >= 9, f"GPU {i}: fabric info answered on architecture {arch} (pre-Hopper is NOT_SUPPORTED)"
        )
        _expect(f.state in (0, 1, 2, 3), f"GPU {i}: fabric state {f.state}")
        _expect(
            str(uuid_mod.UUID(f.cluster_uuid)) == f.cluster_uuid, f"GPU {i}: cluster UUID {f.cluster_uuid!r}"
        )
        _expect(0 <= f.health_summary <= 3, f"GPU {i}: health summary {f.health_summary}")
        if f.state == b.FABRIC_STATE_COMPLETED and f.status == 0:
            cliques.add((f.cluster_uuid, f.clique_id))
    _expect(len(cliques) <= 1, f"GPUs of one node disagree on the fabric clique: {sorted(cliques)}")


def check_compute_mode(backend: b.NvmlBackend) -> None:
    """The compute mode is one current drivers support (DEFAULT, PROHIBITED, EXCLUSIVE_PROCESS)."""
    for i in range(backend.device_count()):
        mode = backend.compute_mode(i)
        _expect(mode in (0, 2, 3), f"GPU {i}: compute mode {mode}")


def check_events(backend: b.NvmlBackend) -> None:
    """The health events register on every GPU that reports them; a quiet wait answers TIMEOUT (10),
    an event names a GPU of this node; freeing the set twice is harmless."""
    registered = 0
    for i in range(backend.device_count()):
        mask = backend.supported_event_types(i) & b.HEALTH_EVENT_MASK
        if mask:
            backend.register_events(i, mask)
            registered += 1
    try:
        if not registered:
            raise ConformanceSkipped("no GPU reports XID or ECC events")
        try:
            event = backend.wait_event(10)
        except NvmlError as exc:
            _expect(exc.code == b.NVML_TIMEOUT, f"a quiet event wait answered {exc.code}, not TIMEOUT (10)")
        else:  # a real GPU may really report something
            _expect(
                event.index is None or 0 <= event.index < backend.device_count(),
                f"event on GPU {event.index}",
            )
    finally:
        backend.free_events()
        backend.free_events()


def check_discovery(backend: b.NvmlBackend) -> None:
    """Discovery reads the backend into an inventory that renders, with MIG names that parse back."""
    inventory = discover_inventory(backend)
    _expect(len(inventory.gpus) == backend.device_count(), "discovery lost GPUs")
    for gpu in inventory.gpus:
        for mig in gpu.mig_devices:
            parsed = parse_mig_device_name(mig.name)
            _expect(
                parsed is not None and parsed[0] == gpu.minor,
                f"MIG device name {mig.name} does not parse back",
            )
    names = [d["name"] for d in render_gpu_devices(inventory)]
    _expect(len(names) == len(set(names)), f"rendered device names repeat: {names}")


# -- mutating checks -----------------------------------------------------------------------------
def check_mig_round_trip(backend: b.NvmlBackend) -> None:
    """Create GI + CI, see it listed, hit INSUFFICIENT_RESOURCES/INVALID_ARGUMENT/IN_USE, destroy it."""
    for i in _mig_gpus(backend, enabled=True):
        before = backend.mig_devices(i)
        used = {s for rec in before for s in rec.placement.slices}
        for p in sorted(backend.gpu_instance_profiles(i), key=lambda p: p.slice_count):
            free = [pl for pl in p.placements if not used & set(pl.slices)]
            if free and backend.gpu_instance_remaining_capacity(i, p.id) > 0:
                _round_trip(backend, i, p, free[0].start, before)
                return
    raise ConformanceSkipped("no MIG-enabled GPU has room for a GPU instance")


def _round_trip(
    backend: b.NvmlBackend,
    i: int,
    p: b.GpuInstanceProfileInfo,
    start: int,
    before: tuple[b.MigDeviceRecord, ...],
) -> None:
    gi = backend.create_gpu_instance(i, p.id, start)
    try:
        bare = [g for g in backend.gpu_instances(i) if g.gi_id == gi]
        _expect(
            len(bare) == 1 and bare[0].profile_id == p.id and bare[0].placement.start == start,
            f"new GPU instance {gi} (no compute instance yet) not listed as created: {bare}",
        )
        _expect(all(r.gi_id != gi for r in backend.mig_devices(i)), f"bare GI {gi} listed as a MIG device")
        _expect_raises(
            NvmlInsufficientResources,
            "create on an occupied placement",
            lambda: backend.create_gpu_instance(i, p.id, start),
        )
        bad = next(s for s in range(64) if s not in {pl.start for pl in p.placements})
        _expect_raises(
            NvmlInvalidArgument,
            f"create at illegal start {bad}",
            lambda: backend.create_gpu_instance(i, p.id, bad),
        )
        ci = backend.create_compute_instance(i, gi)
        _expect(bool(b.MIG_UUID_FORM.match(ci.uuid)), f"new MIG UUID {ci.uuid!r}")
        listed = [r for r in backend.mig_devices(i) if r.uuid == ci.uuid]
        _expect(
            listed == [ci] and ci.placement.start == start and ci.gi_profile_id == p.id,
            f"new MIG device not listed as created: {listed}",
        )
        _expect_raises(NvmlInUse, "destroy a GI that holds a CI", lambda: backend.destroy_gpu_instance(i, gi))
        backend.destroy_compute_instance(i, gi, ci.ci_id)
    finally:
        backend.destroy_gpu_instance(i, gi)
    _expect(backend.mig_devices(i) == before, "MIG devices differ after the round trip")
    _expect(all(g.gi_id != gi for g in backend.gpu_instances(i)), f"destroyed GI {gi} still listed")
    _expect_raises(NvmlNotFound, "destroy a destroyed GI", lambda: backend.destroy_gpu_instance(i, gi))


def check_compute_mode_round_trip(backend: b.NvmlBackend) -> None:
    """Setting EXCLUSIVE_PROCESS reads back, and the old mode is restored."""
    if backend.device_count() == 0:
        raise ConformanceSkipped("no GPU")
    old = backend.compute_mode(0)
    backend.set_compute_mode(0, b.COMPUTE_MODE_EXCLUSIVE_PROCESS)
    try:
        _expect(backend.compute_mode(0) == b.COMPUTE_MODE_EXCLUSIVE_PROCESS, "compute mode did not change")
    finally:
        backend.set_compute_mode(0, old)
    _expect(backend.compute_mode(0) == old, "compute mode not restored")


READ_ONLY_CHECKS: tuple[Callable[[b.NvmlBackend], None], ...] = (
    check_session,
    check_system,
    check_identity,
    check_lookup,
    check_mig_profiles,
    check_non_mig,
    check_mig_devices,
    check_gpu_instances,
    check_remaining_capacity,
    check_nvlinks,
    check_fabric,
    check_compute_mode,
    check_events,
    check_discovery,
)
MUTATING_CHECKS: tuple[Callable[[b.NvmlBackend], None], ...] = (
    check_mig_round_trip,
    check_compute_mode_round_trip,
)


def run_conformance(backend: b.NvmlBackend, *, allow_mutation: bool = False) -> list[CheckResult]:
    """Run every check (mutating ones only when allowed) and report each outcome.

    Args:
        backend: the backend under test; this function takes and drops one NVML reference.
        allow_mutation: also run checks that create/destroy MIG instances or change compute mode.

    Returns:
        One result per check, in order. NVML errors a check did not expect count as failures.
    """
    checks = READ_ONLY_CHECKS + (MUTATING_CHECKS if allow_mutation else ())
    results = []
    backend.init()
    try:
        for check in checks:
            name = check.__name__
            try:
                check(backend)
            except ConformanceSkipped as exc:
                results.append(CheckResult(name=name, outcome="skipped", detail=str(exc)))
            except (ConformanceFailure, NvmlError) as exc:
                results.append(
                    CheckResult(name=name, outcome="failed", detail=f"{type(exc).__name__}: {exc}")
                )
            else:
                results.append(CheckResult(name=name, outcome="passed"))
    finally:
        backend.shutdown()
    return results
