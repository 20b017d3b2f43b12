"""``SimulatedNvml``: a stateful, thread-safe NVML backend built from a node profile.

It answers the :class:`~nvdra.nvml.NvmlBackend` calls the way the real library does on the
profiled hardware, including error codes, and changes state on the mutating calls:

- init/shutdown are reference counted; any other call with no reference raises UNINITIALIZED;
- a bad index raises INVALID_ARGUMENT, an unknown UUID NOT_FOUND, a lost GPU GPU_IS_LOST;
- MIG calls on a GPU without MIG raise NOT_SUPPORTED; GPU-instance profile queries come back empty
  on Ampere while MIG is off (they fail there on real drivers) but answer on Hopper and later;
- a MIG mode change takes effect at once on Hopper and later, and stays pending until
  :meth:`SimulatedNvml.reset_gpu` on Ampere (activation status RESET_REQUIRED); while processes hold
  the GPU the status is IN_USE; disabling MIG while GPU instances exist raises IN_USE;
- MIG geometry rules and GI ids live in :mod:`nvdra.nvml._simstate`;
- on Ampere, NVLinks are trained off while MIG is on (they report inactive);
- faults: :meth:`SimulatedNvml.inject_fault` makes a method raise an NVML code (on one GPU or all,
  a number of times or until cleared); :meth:`SimulatedNvml.mark_gpu_lost` makes every call on
  that GPU raise GPU_IS_LOST until :meth:`SimulatedNvml.reset_gpu`;
- persistence: given ``state_path``, the hardware state (MIG mode and geometry, compute mode, time
  slice, lost GPUs, process counts) is restored from that file and rewritten atomically after every
  change (:mod:`nvdra.nvml._simpersist`), so it outlives the process, as a GPU's state outlives a
  killed plugin; :meth:`SimulatedNvml.reboot` resets it the way a node reboot does;
- events: one event set per backend, as NVML's; :meth:`SimulatedNvml.inject_event` /
  :meth:`SimulatedNvml.inject_xid` queue an event only for a GPU registered for that type (NVML
  drops the others); a lost GPU that was registered makes the next ``wait_event`` raise GPU_IS_LOST.

One ``threading.RLock`` guards all state; every public method holds it for its whole duration.
"""

from __future__ import annotations

__all__ = ["SimulatedGpuState", "SimulatedNodeState", "SimulatedNvml"]

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import attrs

from nvdra.core.errors import (
    ConfigError,
    NvmlError,
    NvmlGpuLost,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNotFound,
    NvmlNotSupported,
    NvmlUninitialized,
    nvml_error_for_code,
)
from nvdra.nvml import _backend as b
from nvdra.nvml._profile import GpuSpec, NodeProfile, load_profile
from nvdra.nvml._simevents import SUPPORTED_EVENTS, EventQueue, link_remotes
from nvdra.nvml._simpersist import dump_state, read_state, restore_gpu, write_state
from nvdra.nvml._simstate import MigGeometry, SimulatedGpuState, SimulatedNodeState

R = TypeVar("R")
_MIB = 1024 * 1024
_HOPPER = 9
_RESET_REQUIRED = 16
_IN_USE = 19
_MUTATING = frozenset(
    {
        "set_compute_mode",
        "set_mig_mode",
        "create_gpu_instance",
        "create_compute_instance",
        "destroy_compute_instance",
        "destroy_gpu_instance",
    }
)


def _mig_device_records(geometry: MigGeometry) -> tuple[b.MigDeviceRecord, ...]:
    return tuple(
        b.MigDeviceRecord(
            uuid=ci.uuid,
            gi_id=gi.gi_id,
            ci_id=ci.ci_id,
            gi_profile_id=gi.profile_id,
            ci_profile_id=ci.ci_profile_id,
            placement=gi.placement,
        )
        for _, gi in sorted(geometry.instances.items())
        for ci in gi.compute_instances
    )


@attrs.define
class _Gpu:
    spec: GpuSpec
    geometry: MigGeometry
    mig_current: bool
    mig_pending: bool
    compute_mode: int = b.COMPUTE_MODE_DEFAULT
    timeslice: int = 0  # nvidia-smi compute-policy --set-timeslice (NVML has no call for it)
    lost: bool = False
    processes: int = 0


@attrs.define
class _Fault:
    code: int
    remaining: int | None  # None = until cleared


class SimulatedNvml:
    """A simulated NVML node. Construct from a :class:`NodeProfile` or a profile name/path."""

    def __init__(self, profile: NodeProfile | str | Path, *, state_path: Path | None = None) -> None:
        self.profile = profile if isinstance(profile, NodeProfile) else load_profile(profile)
        self.state_path = state_path
        self._lock = threading.RLock()
        self._refcount = 0
        self._faults: dict[tuple[str, int | None], _Fault] = {}
        self._calls: Counter[str] = Counter()
        self._gpus = [self._build_gpu(spec) for spec in self.profile.gpus]
        self._events = EventQueue(self._lock)
        if state_path is not None:
            self._restore(state_path)

    def _build_gpu(self, spec: GpuSpec) -> _Gpu:
        gpu = _Gpu(
            spec=spec,
            geometry=MigGeometry(spec.model, spec.uuid),
            mig_current=spec.mig_enabled,
            mig_pending=spec.mig_enabled,
        )
        for i, dev in enumerate(spec.mig_devices):
            try:
                gi = gpu.geometry.create_gpu_instance(dev.profile_id, dev.start)
            except NvmlError as exc:
                raise ConfigError(
                    f"{self.profile.source}:$.gpus[{spec.index}].mig.devices[{i}]",
                    f"profile {dev.profile_id} at {dev.start}",
                    "MIG devices that fit together",
                    reason=f"does not fit ({exc}):",
                ) from exc
            gpu.geometry.create_compute_instance(gi)
        return gpu

    # -- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def _call(self, method: str, index: int | None = None) -> Iterator[_Gpu | None]:
        with self._lock:
            self._calls[method] += 1
            self._raise_fault(method, index)
            if method not in ("init", "shutdown") and self._refcount == 0:
                raise NvmlUninitialized(f"{method}: NVML is not initialised")
            gpu = None
            if index is not None:
                if not 0 <= index < len(self._gpus):
                    raise NvmlInvalidArgument(
                        f"{method}: no GPU with index {index} (count {len(self._gpus)})"
                    )
                gpu = self._gpus[index]
                if gpu.lost:
                    raise NvmlGpuLost(f"{method}: GPU {index} has fallen off the bus")
            yield gpu
            if method in _MUTATING:
                self._persist()

    def _raise_fault(self, method: str, index: int | None) -> None:
        for key in ((method, index), (method, None)):
            fault = self._faults.get(key)
            if fault is None:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[key]
            raise nvml_error_for_code(fault.code, f"{method}: injected NVML error {fault.code}")

    def _gpu(self, method: str, index: int) -> _Gpu:
        with self._call(method, index) as gpu:
            assert gpu is not None
            return gpu

    @staticmethod
    def _require_mig(gpu: _Gpu, method: str, *, enabled: bool = False) -> None:
        if not gpu.spec.model.mig_capable:
            raise NvmlNotSupported(f"{method}: {gpu.spec.model.name} does not support MIG")
        if enabled and not gpu.mig_current:
            raise NvmlNotSupported(f"{method}: MIG mode is disabled on GPU {gpu.spec.index}")

    # -- test and tool controls ------------------------------------------------------------------
    def inject_fault(
        self, method: str, code: int, *, index: int | None = None, count: int | None = None
    ) -> None:
        """Make ``method`` raise NVML ``code`` (on GPU ``index`` or any), ``count`` times or until cleared."""
        if not hasattr(b.NvmlBackend, method):
            raise ValueError(f"{method!r} is not an NvmlBackend method")
        with self._lock:
            self._faults[(method, index)] = _Fault(code=code, remaining=count)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def mark_gpu_lost(self, index: int) -> None:
        """The GPU falls off the bus (Xid 79): every call on it raises GPU_IS_LOST until reset."""
        with self._lock:
            self._gpus[index].lost = True
            self._persist()
            self._events.gpu_lost(index)

    def reset_gpu(self, index: int) -> None:
        """A GPU reset: applies a pending MIG mode, drops all GPU/compute instances and processes."""
        with self._lock:
            gpu = self._gpus[index]
            gpu.mig_current = gpu.mig_pending
            gpu.geometry.clear()
            gpu.lost = False
            gpu.processes = 0
            gpu.compute_mode = b.COMPUTE_MODE_DEFAULT
            gpu.timeslice = 0
            self._persist()

    def reboot(self) -> None:
        """A node reboot: every GPU is reset (GI/CI gone, compute mode and time slice default, a pending
        MIG mode applied), events and faults are gone. MIG mode itself persists, as on the hardware."""
        with self._lock:
            for index in range(len(self._gpus)):
                self.reset_gpu(index)
            self._events.clear()
            self._faults.clear()

    def timeslice(self, uuid: str) -> int:
        """GPU ``uuid``'s time slice (0 Default … 3 Long), as ``nvidia-smi compute-policy -l`` shows it."""
        with self._lock:
            return self._by_uuid(uuid).timeslice

    def set_timeslice(self, uuid: str, value: int) -> None:
        """What ``nvidia-smi compute-policy -i <uuid> --set-timeslice <value>`` does to the GPU."""
        with self._lock:
            if value not in (0, 1, 2, 3):
                raise NvmlInvalidArgument(f"set_timeslice: time slice {value} is not 0..3")
            self._by_uuid(uuid).timeslice = value
            self._persist()

    def _by_uuid(self, uuid: str) -> _Gpu:
        gpu = next((g for g in self._gpus if g.spec.uuid == uuid), None)
        if gpu is None:
            raise NvmlNotFound(f"no GPU with UUID {uuid!r}")
        return gpu

    def _restore(self, path: Path) -> None:
        entries = read_state(path)
        if entries is None:
            self._persist()  # the file now describes the fresh node
            return
        unknown = sorted(set(entries) - {g.spec.uuid for g in self._gpus})
        if unknown:
            raise ConfigError(f"{path}:$.gpus", ", ".join(unknown), f"GPUs of profile {self.profile.source}")
        for gpu in self._gpus:
            entry = entries.get(gpu.spec.uuid)
            if entry is not None:
                restore_gpu(gpu, entry, f"{path}:$.gpus[{gpu.spec.uuid}]")

    def _persist(self) -> None:
        if self.state_path is not None:
            write_state(self.state_path, dump_state([(g.spec.uuid, g) for g in self._gpus]))

    def set_processes(self, index: int, count: int, *, gi_id: int | None = None, ci_id: int = 0) -> None:
        """Pretend ``count`` processes run on the GPU (or on one compute instance): drives IN_USE paths."""
        with self._lock:
            gpu = self._gpus[index]
            if gi_id is None:
                gpu.processes = count
            else:
                gpu.geometry.set_processes(gi_id, ci_id, count)
            self._persist()

    def snapshot(self) -> SimulatedNodeState:
        """The current state of every GPU, as frozen records."""
        with self._lock:
            gpus = tuple(
                SimulatedGpuState(
                    index=g.spec.index,
                    uuid=g.spec.uuid,
                    mig_current=g.mig_current,
                    mig_pending=g.mig_pending,
                    compute_mode=g.compute_mode,
                    lost=g.lost,
                    processes=g.processes,
                    gpu_instances=tuple(g.geometry.instances[k] for k in sorted(g.geometry.instances)),
                )
                for g in self._gpus
            )
            return SimulatedNodeState(
                init_refcount=self._refcount, gpus=gpus, calls=tuple(sorted(self._calls.items()))
            )

    # -- NvmlBackend: session and system ---------------------------------------------------------
    def init(self) -> None:
        """Take one NVML reference (``NVML_INIT_FLAG_NO_GPUS`` semantics: no GPU is required)."""
        with self._call("init"):
            self._refcount += 1

    def shutdown(self) -> None:
        """Drop one reference; UNINITIALIZED when there is none."""
        with self._call("shutdown"):
            if self._refcount == 0:
                raise NvmlUninitialized("shutdown: NVML is not initialised")
            self._refcount -= 1

    def driver_version(self) -> str:
        """The profile's driver version."""
        with self._call("driver_version"):
            return self.profile.driver_version

    def cuda_driver_version(self) -> int:
        """The profile's CUDA driver version integer."""
        with self._call("cuda_driver_version"):
            return self.profile.cuda_driver_version

    def device_count(self) -> int:
        """Number of GPUs (lost ones included, as on real drivers)."""
        with self._call("device_count"):
            return len(self._gpus)

    def index_by_uuid(self, uuid: str) -> int:
        """Index of the GPU with this UUID, or of the parent of the MIG device with this UUID."""
        with self._call("index_by_uuid"):
            for g in self._gpus:
                if g.spec.uuid == uuid or any(
                    ci.uuid == uuid for gi in g.geometry.instances.values() for ci in gi.compute_instances
                ):
                    if g.lost:
                        raise NvmlGpuLost(f"index_by_uuid: GPU {g.spec.index} has fallen off the bus")
                    return g.spec.index
            raise NvmlNotFound(f"index_by_uuid: no GPU or MIG device with UUID {uuid!r}")

    # -- NvmlBackend: identity -------------------------------------------------------------------
    def device_identity(self, index: int) -> b.DeviceIdentity:
        """Identity from the profile."""
        s = self._gpu("device_identity", index).spec
        return b.DeviceIdentity(
            index=s.index,
            uuid=s.uuid,
            name=s.model.name,
            minor=s.minor,
            brand=s.model.brand,
            architecture=s.model.architecture,
            cuda_compute_capability=s.model.cuda_compute_capability,
        )

    def pci_info(self, index: int) -> b.PciInfo:
        """Bus id and ``device << 16 | 0x10DE``."""
        s = self._gpu("pci_info", index).spec
        return b.PciInfo(bus_id=s.bus_id, device_id=(s.model.pci_device_id << 16) | 0x10DE)

    def memory_total(self, index: int) -> int | None:
        """Framebuffer bytes (None when an injected NOT_SUPPORTED says the platform hides it)."""
        try:
            return self._gpu("memory_total", index).spec.model.memory_mib * _MIB
        except NvmlNotSupported:
            return None

    def module_id(self, index: int) -> int:
        """Module id from the profile."""
        return self._gpu("module_id", index).spec.module_id

    def addressing_mode(self, index: int) -> int | None:
        """Addressing mode from the profile (None = NOT_SUPPORTED)."""
        try:
            return self._gpu("addressing_mode", index).spec.addressing_mode
        except NvmlNotSupported:
            return None

    def numa_node(self, index: int) -> int | None:
        """NUMA node from the profile (None = NOT_SUPPORTED)."""
        try:
            return self._gpu("numa_node", index).spec.numa_node
        except NvmlNotSupported:
            return None

    def compute_mode(self, index: int) -> int:
        """Current compute mode."""
        return self._gpu("compute_mode", index).compute_mode

    def set_compute_mode(self, index: int, mode: int) -> None:
        """Set the compute mode; EXCLUSIVE_THREAD is NOT_SUPPORTED, unknown values INVALID_ARGUMENT."""
        with self._call("set_compute_mode", index) as gpu:
            assert gpu is not None
            if mode == b.COMPUTE_MODE_EXCLUSIVE_THREAD:
                raise NvmlNotSupported("set_compute_mode: EXCLUSIVE_THREAD is no longer supported")
            if mode not in (
                b.COMPUTE_MODE_DEFAULT,
                b.COMPUTE_MODE_PROHIBITED,
                b.COMPUTE_MODE_EXCLUSIVE_PROCESS,
            ):
                raise NvmlInvalidArgument(f"set_compute_mode: unknown compute mode {mode}")
            gpu.compute_mode = mode

    # -- NvmlBackend: MIG ------------------------------------------------------------------------
    def mig_mode(self, index: int) -> b.MigModeState:
        """Current and pending MIG mode; NOT_SUPPORTED without MIG."""
        with self._call("mig_mode", index) as gpu:
            assert gpu is not None
            self._require_mig(gpu, "mig_mode")
            return b.MigModeState(current=gpu.mig_current, pending=gpu.mig_pending)

    def gpu_instance_profiles(self, index: int) -> tuple[b.GpuInstanceProfileInfo, ...]:
        """The model's MIG table (empty without MIG, and on Ampere while MIG is off)."""
        with self._call("gpu_instance_profiles", index) as gpu:
            assert gpu is not None
            mig_on = gpu.mig_current
        model = gpu.spec.model
        if not model.mig_capable or (model.architecture < _HOPPER and not mig_on):
            return ()
        return tuple(
            b.GpuInstanceProfileInfo(
                profile_enum=p.profile_enum,
                id=p.id,
                name=f"MIG {p.name}",
                slice_count=p.compute_slices,
                instance_count=p.instance_count,
                multiprocessor_count=p.multiprocessors,
                copy_engine_count=p.copy_engines,
                decoder_count=p.decoders,
                encoder_count=p.encoders,
                jpeg_count=p.jpeg_engines,
                ofa_count=p.ofa_engines,
                memory_size_mb=p.memory_mb,
                is_p2p_supported=False,
                placements=p.placements,
            )
            for p in sorted(model.mig_profiles, key=lambda p: p.profile_enum)
        )

    def gpu_instance_remaining_capacity(self, index: int, profile_id: int) -> int:
        """Free capacity for a profile (NOT_SUPPORTED on Ampere with MIG off, INVALID_ARGUMENT bad id)."""
        with self._call("gpu_instance_remaining_capacity", index) as gpu:
            assert gpu is not None
            self._require_mig(
                gpu, "gpu_instance_remaining_capacity", enabled=gpu.spec.model.architecture < _HOPPER
            )
            profile = gpu.geometry.profile(profile_id)
            if profile is None:
                raise NvmlInvalidArgument(f"gpu_instance_remaining_capacity: unknown profile id {profile_id}")
            return gpu.geometry.remaining_capacity(profile)

    def gpu_instances(self, index: int) -> tuple[b.GpuInstanceRecord, ...]:
        """Every GPU instance, bare ones included, ordered by GI id (empty while MIG is off)."""
        return self._mig_listing("gpu_instances", index, MigGeometry.gpu_instance_records)

    def mig_devices(self, index: int) -> tuple[b.MigDeviceRecord, ...]:
        """Every compute instance of every GPU instance, ordered by GI id (empty while MIG is off)."""
        return self._mig_listing("mig_devices", index, _mig_device_records)

    def _mig_listing(
        self, call: str, index: int, records: Callable[[MigGeometry], tuple[R, ...]]
    ) -> tuple[R, ...]:
        with self._call(call, index) as gpu:
            assert gpu is not None
            if not gpu.spec.model.mig_capable or not gpu.mig_current:
                return ()
            return records(gpu.geometry)

    def set_mig_mode(self, index: int, enabled: bool) -> int:
        """Request a MIG mode; returns the activation status (see module docstring)."""
        with self._call("set_mig_mode", index) as gpu:
            assert gpu is not None
            self._require_mig(gpu, "set_mig_mode")
            if not enabled and gpu.geometry.instances:
                raise NvmlInUse(f"set_mig_mode: GPU {index} still has GPU instances")
            gpu.mig_pending = enabled
            if gpu.processes:
                return _IN_USE
            if gpu.spec.model.architecture < _HOPPER and gpu.mig_current != enabled:
                return _RESET_REQUIRED
            gpu.mig_current = enabled
            return 0

    def create_gpu_instance(self, index: int, profile_id: int, placement_start: int) -> int:
        """Create a GPU instance (NOT_SUPPORTED while MIG is off)."""
        with self._call("create_gpu_instance", index) as gpu:
            assert gpu is not None
            self._require_mig(gpu, "create_gpu_instance", enabled=True)
            return gpu.geometry.create_gpu_instance(profile_id, placement_start)

    def create_compute_instance(self, index: int, gi_id: int) -> b.MigDeviceRecord:
        """Create the full-size compute instance of a GPU instance."""
        with self._call("create_compute_instance", index) as gpu:
            assert gpu is not None
            self._require_mig(gpu, "create_compute_instance", enabled=True)
            ci = gpu.geometry.create_compute_instance(gi_id)
            return next(r for r in _mig_device_records(gpu.geometry) if r.uuid == ci.uuid)

    def destroy_compute_instance(self, index: int, gi_id: int, ci_id: int) -> None:
        """Destroy a compute instance."""
        with self._call("destroy_compute_instance", index) as gpu:
            assert gpu is not None
            self._require_mig(gpu, "destroy_compute_instance", enabled=True)
            gpu.geometry.destroy_compute_instance(gi_id, ci_id)

    def destroy_gpu_instance(self, index: int, gi_id: int) -> None:
        """Destroy a GPU instance (IN_USE while it holds compute instances)."""
        with self._call("destroy_gpu_instance", index) as gpu:
            assert gpu is not None
            self._require_mig(gpu, "destroy_gpu_instance", enabled=True)
            gpu.geometry.destroy_gpu_instance(gi_id)

    # -- NvmlBackend: NVLink and fabric ----------------------------------------------------------
    def nvlinks(self, index: int) -> tuple[b.NvLinkRecord, ...]:
        """Every link of the GPU, wired per the profile's topology."""
        with self._call("nvlinks", index) as gpu:
            assert gpu is not None
            model = gpu.spec.model
            trained_off = model.architecture < _HOPPER and gpu.mig_current
            remotes = link_remotes(self.profile, gpu.spec)
            records = []
            for link in range(model.nvlink_links):
                remote = None if trained_off else remotes.get(link)
                if remote is None:
                    records.append(b.NvLinkRecord.inactive(link))
                else:
                    records.append(
                        b.NvLinkRecord(
                            link=link,
                            active=True,
                            version=model.nvlink_version,
                            remote_type=remote[0],
                            remote_bus_id=remote[1],
                        )
                    )
            return tuple(records)

    def fabric_info(self, index: int) -> b.FabricInfoRecord:
        """Fabric registration from the profile; NOT_SUPPORTED where the profile says so (pre-Hopper)."""
        with self._call("fabric_info", index):
            if self.profile.fabric is None:
                raise NvmlNotSupported("fabric_info: GPU fabric info is not supported on this GPU")
            return self.profile.fabric

    # -- NvmlBackend: events ---------------------------------------------------------------------
    def supported_event_types(self, index: int) -> int:
        """XID, both ECC kinds, P-state and clock events (what datacenter GPUs report)."""
        with self._call("supported_event_types", index):
            return SUPPORTED_EVENTS

    def register_events(self, index: int, mask: int) -> None:
        """Register GPU ``index``; NOT_SUPPORTED for an event bit the GPU cannot report."""
        with self._call("register_events", index):
            self._events.register(index, mask)

    def wait_event(self, timeout_ms: int) -> b.EventRecord:
        """Block up to ``timeout_ms`` for the next event (code 10 = TIMEOUT when none came)."""
        with self._call("wait_event"):
            return self._events.wait(timeout_ms)

    def free_events(self) -> None:
        """Forget every registration and queued event."""
        with self._call("free_events"):
            self._events.clear()

    def inject_event(
        self,
        index: int,
        event_type: int,
        data: int = 0,
        *,
        gi_id: int | None = None,
        ci_id: int | None = None,
    ) -> bool:
        """The GPU reports an event; True if it was queued (the GPU is registered for that type)."""
        with self._lock:
            record = b.EventRecord(
                index=index,
                uuid=self._gpus[index].spec.uuid,
                event_type=event_type,
                data=data,
                gi_id=b.NO_INSTANCE if gi_id is None else gi_id,
                ci_id=b.NO_INSTANCE if ci_id is None else ci_id,
            )
            return self._events.inject(record)

    def inject_xid(self, index: int, xid: int, *, gi_id: int | None = None, ci_id: int | None = None) -> bool:
        """An XID critical error on GPU ``index`` (or one of its MIG devices)."""
        return self.inject_event(index, b.EVENT_XID_CRITICAL, xid, gi_id=gi_id, ci_id=ci_id)
