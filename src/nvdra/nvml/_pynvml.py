"""``PynvmlBackend``: the :class:`~nvdra.nvml.NvmlBackend` over the real NVML (nvidia-ml-py's ``pynvml``).

This is the only module of nvdra that imports ``pynvml``, and it does so lazily inside
:meth:`PynvmlBackend.init`, so importing it works on a machine without a driver.

Invariants owned here:
- the library is loaded on ``init`` (never on import or construction); with a driver root it is
  searched in the upstream directories under that root (symlinks resolved) and a miss raises
  :class:`~nvdra.core.errors.NvmlLibraryNotFound` naming every path searched; without one the
  system loader finds ``libnvidia-ml.so.1``; pynvml holds one library per process, so a backend for
  another root's library is refused (never served by the first one);
- an ``init`` failure names the library and NVML's own answer; calls younger than the oldest
  supported driver (module id, addressing mode, NUMA node, fabric info v3/v2, the GI profile by id)
  fall back on FUNCTION_NOT_FOUND;
- NVML is initialised with ``NVML_INIT_FLAG_NO_GPUS`` and reference counted (NVML counts too);
- every ``NVMLError`` becomes the nvdra error of the same code, chained as ``__cause__``;
- bytes from struct fields become ``str``; versioned structs (fabric info v3, falling back to v2
  and the deprecated v1 call on older drivers) are instantiated so their version word is set.
"""

from __future__ import annotations

__all__ = ["LIBRARY_SEARCH_DIRS", "PynvmlBackend", "find_nvml_library"]

import ctypes
import threading
import uuid as uuid_mod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nvdra.core.devices import MigPlacement
from nvdra.core.driverroot import NVML_LIBRARY_DIRS
from nvdra.core.errors import NvmlError, NvmlLibraryNotFound, NvmlNotSupported, nvml_error_for_code
from nvdra.nvml import _backend as b

LIBRARY_SEARCH_DIRS: tuple[str, ...] = NVML_LIBRARY_DIRS
"""Where ``libnvidia-ml.so.1`` is looked for under the driver root (the one list in nvdra.core)."""

_LIBRARY = "libnvidia-ml.so.1"
_NOT_SUPPORTED = 3
_NOT_FOUND = 6
_INVALID_ARGUMENT = 2
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_ARGUMENT_VERSION_MISMATCH = 25
_UNKNOWN = 999
_FULL_CI_PROFILE = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}  # GI compute slices → CI profile enum


def _resolve_in_root(root: Path, path: Path) -> Path:
    """Follow symlinks of ``path`` as if ``root`` were ``/`` (absolute targets stay inside the root)."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = path.readlink()
        path = root / str(target).lstrip("/") if target.is_absolute() else path.parent / target
    return path


def find_nvml_library(driver_root: Path) -> Path:
    """Find ``libnvidia-ml.so.1`` under a driver root.

    Raises:
        NvmlLibraryNotFound: naming every path searched.
    """
    searched = []
    for d in LIBRARY_SEARCH_DIRS:
        candidate = driver_root / d.lstrip("/") / _LIBRARY
        searched.append(str(candidate))
        resolved = _resolve_in_root(driver_root, candidate)
        if resolved.is_file():
            return resolved
    raise NvmlLibraryNotFound(
        f"{_LIBRARY} not found under driver root {driver_root}; searched: {', '.join(searched)}"
    )


def _members(cls: type[Any], struct: Any) -> dict[str, int]:
    """The fields of ``cls`` that name an NVML struct member (:func:`~nvdra.nvml._backend.nvml_member`),
    read from ``struct`` (unsigned int members)."""
    return {field: int(getattr(struct, member)) for field, member in b.nvml_members(cls).items()}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PynvmlBackend:
    """The real NVML. ``driver_root`` None = let the system loader find the library."""

    def __init__(self, driver_root: str | Path | None = None) -> None:
        self.driver_root = None if driver_root is None else Path(driver_root)
        self._lock = threading.Lock()
        self._refs = 0
        self._handles: dict[int, Any] = {}
        self._n: Any = None  # the pynvml module, once init() ran
        self._event_set: Any = None  # created on the first register_events

    # -- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def _nvml(self, what: str) -> Iterator[Any]:
        if self._n is None:
            raise nvml_error_for_code(1, f"{what}: NVML is not initialised")
        try:
            yield self._n
        except self._n.NVMLError as exc:
            raise nvml_error_for_code(int(exc.value), f"{what}: {exc}") from exc

    def _h(self, index: int, what: str) -> Any:
        handle = self._handles.get(index)
        if handle is None:
            with self._nvml(f"{what}(GPU {index})") as n:
                handle = n.nvmlDeviceGetHandleByIndex(index)
            self._handles[index] = handle
        return handle

    def _call(self, index: int, fn: str, *args: Any) -> Any:
        """``fn(<handle of GPU index>, *args)``; an NVML error names the call, the GPU and the arguments."""
        what = f"{fn}({', '.join([f'GPU {index}', *map(str, args)])})"
        with self._nvml(what) as n:
            return getattr(n, fn)(self._h(index, fn), *args)

    def _optional(self, what: str, index: int, fn: str, *args: Any) -> Any:
        try:
            with self._nvml(what) as n:
                return getattr(n, fn)(self._h(index, fn), *args)
        except NvmlNotSupported:
            return None
        except NvmlError as exc:
            if exc.code == _FUNCTION_NOT_FOUND:  # an older driver without the symbol
                return None
            raise

    def _load_library(self, n: Any) -> str:
        """Load ``libnvidia-ml.so.1`` into pynvml (once per process); returns where it came from.

        pynvml holds one library per process: a second driver root naming another file is an error,
        never a silent use of the first one.
        """
        loaded = None if n.nvmlLib is None else str(getattr(n.nvmlLib, "_name", _LIBRARY))
        if self.driver_root is None:
            return loaded or f"{_LIBRARY} (system loader)"
        path = find_nvml_library(self.driver_root)
        if loaded is not None:
            if Path(loaded).resolve() != path.resolve():
                raise nvml_error_for_code(
                    _UNKNOWN,
                    f"cannot load {path} (driver root {self.driver_root}): this process already loaded "
                    f"NVML from {loaded}, and pynvml holds one library per process",
                )
            return loaded
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NvmlLibraryNotFound(f"cannot load {path} (driver root {self.driver_root}): {exc}") from exc
        with n.libLoadLock:
            if n.nvmlLib is None:
                n.nvmlLib = lib
        return str(path)

    # -- session and system ----------------------------------------------------------------------
    def init(self) -> None:
        """Load the library if needed and take one NVML reference with ``NVML_INIT_FLAG_NO_GPUS``.

        Raises:
            NvmlLibraryNotFound: no loadable library (every path searched is named).
            NvmlError: the library's own answer (e.g. "Driver Not Loaded"), naming the library.
        """
        import pynvml

        with self._lock:
            source = self._load_library(pynvml)
            try:
                pynvml.nvmlInitWithFlags(pynvml.NVML_INIT_FLAG_NO_GPUS)
            except pynvml.NVMLError as exc:
                code = int(exc.value)
                if code == _LIBRARY_NOT_FOUND:
                    raise NvmlLibraryNotFound(
                        f"{_LIBRARY} not found by the system loader (no --nvidia-driver-root given; "
                        "LD_LIBRARY_PATH and the ld.so cache were searched)"
                    ) from exc
                raise nvml_error_for_code(code, f"nvmlInitWithFlags ({source}): {exc}") from exc
            self._n = pynvml
            self._refs += 1

    def shutdown(self) -> None:
        """Drop one NVML reference; UNINITIALIZED when this backend holds none."""
        with self._lock:
            if self._refs == 0:
                raise nvml_error_for_code(1, "nvmlShutdown: NVML is not initialised")
            with self._nvml("nvmlShutdown") as n:
                n.nvmlShutdown()
            self._refs -= 1
            if self._refs == 0:
                self._handles.clear()

    def driver_version(self) -> str:
        """``nvmlSystemGetDriverVersion``."""
        with self._nvml("nvmlSystemGetDriverVersion") as n:
            return _s(n.nvmlSystemGetDriverVersion())

    def cuda_driver_version(self) -> int:
        """``nvmlSystemGetCudaDriverVersion``."""
        with self._nvml("nvmlSystemGetCudaDriverVersion") as n:
            return int(n.nvmlSystemGetCudaDriverVersion())

    def device_count(self) -> int:
        """``nvmlDeviceGetCount``."""
        with self._nvml("nvmlDeviceGetCount") as n:
            return int(n.nvmlDeviceGetCount())

    def index_by_uuid(self, uuid: str) -> int:
        """``nvmlDeviceGetHandleByUUID`` (a MIG UUID resolves to its parent GPU)."""
        with self._nvml(f"nvmlDeviceGetHandleByUUID({uuid})") as n:
            handle = n.nvmlDeviceGetHandleByUUID(uuid)
            if n.nvmlDeviceIsMigDeviceHandle(handle).value:
                handle = n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            return int(n.nvmlDeviceGetIndex(handle))

    # -- identity --------------------------------------------------------------------------------
    def device_identity(self, index: int) -> b.DeviceIdentity:
        """UUID, name, minor, brand, architecture and compute capability."""
        h = self._h(index, "device_identity")
        with self._nvml(f"device_identity(GPU {index})") as n:
            major, minor = n.nvmlDeviceGetCudaComputeCapability(h)
            return b.DeviceIdentity(
                index=index,
                uuid=_s(n.nvmlDeviceGetUUID(h)),
                name=_s(n.nvmlDeviceGetName(h)),
                minor=int(n.nvmlDeviceGetMinorNumber(h)),
                brand=int(n.nvmlDeviceGetBrand(h)),
                architecture=int(n.nvmlDeviceGetArchitecture(h)),
                cuda_compute_capability=(int(major), int(minor)),
            )

    def pci_info(self, index: int) -> b.PciInfo:
        """``nvmlDeviceGetPciInfo_v3``: bus id and device id."""
        info = self._call(index, "nvmlDeviceGetPciInfo")
        return b.PciInfo(bus_id=_s(info.busId), device_id=int(info.pciDeviceId))

    def memory_total(self, index: int) -> int | None:
        """``nvmlDeviceGetMemoryInfo().total``, None when NOT_SUPPORTED."""
        info = self._optional("nvmlDeviceGetMemoryInfo", index, "nvmlDeviceGetMemoryInfo")
        return None if info is None else int(info.total)

    def module_id(self, index: int) -> int:
        """``nvmlDeviceGetModuleId`` (passing our own c_uint: pynvml's default argument is shared);
        0, the PCIe products' answer, where NVML answers NOT_SUPPORTED or the driver lacks the call."""
        module = self._optional("nvmlDeviceGetModuleId", index, "nvmlDeviceGetModuleId", ctypes.c_uint())
        return 0 if module is None else int(module)

    def addressing_mode(self, index: int) -> int | None:
        """``nvmlDeviceGetAddressingMode``, None when NOT_SUPPORTED or missing."""
        mode = self._optional("nvmlDeviceGetAddressingMode", index, "nvmlDeviceGetAddressingMode")
        return None if mode is None else int(mode)

    def numa_node(self, index: int) -> int | None:
        """``nvmlDeviceGetNumaNodeId``, None when NOT_SUPPORTED or missing."""
        node = self._optional("nvmlDeviceGetNumaNodeId", index, "nvmlDeviceGetNumaNodeId")
        return None if node is None else int(node)

    def compute_mode(self, index: int) -> int:
        """``nvmlDeviceGetComputeMode``."""
        return int(self._call(index, "nvmlDeviceGetComputeMode"))

    def set_compute_mode(self, index: int, mode: int) -> None:
        """``nvmlDeviceSetComputeMode`` (needs root)."""
        self._call(index, "nvmlDeviceSetComputeMode", mode)

    # -- MIG: queries ----------------------------------------------------------------------------
    def mig_mode(self, index: int) -> b.MigModeState:
        """``nvmlDeviceGetMigMode``."""
        current, pending = self._call(index, "nvmlDeviceGetMigMode")
        return b.MigModeState(current=bool(current), pending=bool(pending))

    def _placements(self, h: Any, profile_id: int) -> tuple[MigPlacement, ...]:
        with self._nvml(f"nvmlDeviceGetGpuInstancePossiblePlacements(profile {profile_id})") as n:
            count = ctypes.c_uint(0)
            n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(count))
            array = (n.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
            n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, array, ctypes.byref(count))
            return tuple(MigPlacement(start=array[i].start, size=array[i].size) for i in range(count.value))

    def gpu_instance_profiles(self, index: int) -> tuple[b.GpuInstanceProfileInfo, ...]:
        """Probe every profile enum like upstream, skipping NOT_SUPPORTED and INVALID_ARGUMENT."""
        h = self._h(index, "gpu_instance_profiles")
        found = []
        for enum in range(b.PROFILE_ENUM_COUNT):
            try:
                with self._nvml(f"nvmlDeviceGetGpuInstanceProfileInfoV(GPU {index}, enum {enum})") as n:
                    info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, enum, 2)
            except NvmlError as exc:
                if exc.code in (_NOT_SUPPORTED, _INVALID_ARGUMENT):
                    continue
                raise
            found.append(
                b.GpuInstanceProfileInfo(
                    profile_enum=enum,
                    name=_s(info.name),
                    placements=self._placements(h, int(info.id)),
                    **_members(b.GpuInstanceProfileInfo, info),
                )
            )
        return tuple(found)

    def gpu_instance_remaining_capacity(self, index: int, profile_id: int) -> int:
        """``nvmlDeviceGetGpuInstanceRemainingCapacity``."""
        return int(self._call(index, "nvmlDeviceGetGpuInstanceRemainingCapacity", profile_id))

    def gpu_instances(self, index: int) -> tuple[b.GpuInstanceRecord, ...]:
        """``nvmlDeviceGetGpuInstances`` for every GI profile the GPU offers, then ``nvmlGpuInstanceGetInfo``.

        NVML answers NOT_SUPPORTED while MIG mode is off (Hopper lists profiles even then): no GIs.
        """
        h = self._h(index, "gpu_instances")
        records: dict[int, b.GpuInstanceRecord] = {}
        for profile in self.gpu_instance_profiles(index):
            what = f"nvmlDeviceGetGpuInstances(GPU {index}, profile {profile.id})"
            try:
                with self._nvml(what) as n:
                    count = ctypes.c_uint(0)
                    # NVML fills at most the profile's instance count; the buffer must hold that many.
                    array = (n.c_nvmlGpuInstance_t * max(profile.instance_count, 1))()
                    n.nvmlDeviceGetGpuInstances(h, profile.id, array, ctypes.byref(count))
                    infos = [n.nvmlGpuInstanceGetInfo(array[i]) for i in range(count.value)]
            except NvmlNotSupported:
                return ()
            for info in infos:
                placement = MigPlacement(start=int(info.placement.start), size=int(info.placement.size))
                records[int(info.id)] = b.GpuInstanceRecord(
                    gi_id=int(info.id), profile_id=int(info.profileId), placement=placement
                )
        return tuple(records[k] for k in sorted(records))

    def mig_devices(self, index: int) -> tuple[b.MigDeviceRecord, ...]:
        """Walk the MIG device handles (empty slots answer NOT_FOUND or INVALID_ARGUMENT)."""
        h = self._h(index, "mig_devices")
        try:
            with self._nvml(f"nvmlDeviceGetMaxMigDeviceCount(GPU {index})") as n:
                slots = int(n.nvmlDeviceGetMaxMigDeviceCount(h))
        except NvmlNotSupported:
            return ()
        records = []
        for slot in range(slots):
            try:
                with self._nvml(f"nvmlDeviceGetMigDeviceHandleByIndex(GPU {index}, {slot})") as n:
                    mh = n.nvmlDeviceGetMigDeviceHandleByIndex(h, slot)
            except NvmlError as exc:
                if exc.code in (_NOT_FOUND, _INVALID_ARGUMENT):
                    continue
                raise
            with self._nvml(f"MIG device {slot} of GPU {index}") as n:
                gi_id, ci_id = (
                    int(n.nvmlDeviceGetGpuInstanceId(mh)),
                    int(n.nvmlDeviceGetComputeInstanceId(mh)),
                )
                gi = n.nvmlDeviceGetGpuInstanceById(h, gi_id)
                gi_info = n.nvmlGpuInstanceGetInfo(gi)
                ci_info = n.nvmlComputeInstanceGetInfo(n.nvmlGpuInstanceGetComputeInstanceById(gi, ci_id))
                records.append(
                    b.MigDeviceRecord(
                        uuid=_s(n.nvmlDeviceGetUUID(mh)),
                        gi_id=gi_id,
                        ci_id=ci_id,
                        gi_profile_id=int(gi_info.profileId),
                        ci_profile_id=int(ci_info.profileId),
                        placement=MigPlacement(
                            start=int(gi_info.placement.start), size=int(gi_info.placement.size)
                        ),
                    )
                )
        return tuple(sorted(records, key=lambda r: (r.gi_id, r.ci_id)))

    # -- MIG: changes ----------------------------------------------------------------------------
    def set_mig_mode(self, index: int, enabled: bool) -> int:
        """``nvmlDeviceSetMigMode``; returns the activation status."""
        status = int(self._call(index, "nvmlDeviceSetMigMode", 1 if enabled else 0))
        self._handles.clear()  # the driver may reset the GPU; handles and minors must be re-read
        return status

    def create_gpu_instance(self, index: int, profile_id: int, placement_start: int) -> int:
        """``nvmlDeviceCreateGpuInstanceWithPlacement``; returns the new GI id."""
        h = self._h(index, "create_gpu_instance")
        sizes = {p.size for p in self._placements(h, profile_id)}
        with self._nvml(
            f"nvmlDeviceCreateGpuInstanceWithPlacement(GPU {index}, {profile_id}@{placement_start})"
        ) as n:
            placement = n.c_nvmlGpuInstancePlacement_t()
            placement.start, placement.size = placement_start, min(sizes, default=1)
            gi = n.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile_id, ctypes.byref(placement))
            return int(n.nvmlGpuInstanceGetInfo(gi).id)

    def _gi_slices(self, index: int, h: Any, profile_id: int) -> int:
        """Compute slices of GI profile ``profile_id``: by id, or, on drivers without
        ``nvmlDeviceGetGpuInstanceProfileInfoByIdV`` (FUNCTION_NOT_FOUND), from the enum walk."""
        try:
            with self._nvml(f"nvmlDeviceGetGpuInstanceProfileInfoByIdV(GPU {index}, {profile_id})") as n:
                return int(n.nvmlDeviceGetGpuInstanceProfileInfoById(h, profile_id).sliceCount)
        except NvmlError as exc:
            if exc.code != _FUNCTION_NOT_FOUND:
                raise
        for profile in self.gpu_instance_profiles(index):
            if profile.id == profile_id:
                return profile.slice_count
        raise nvml_error_for_code(_NOT_FOUND, f"GPU {index}: no GPU instance profile with id {profile_id}")

    def create_compute_instance(self, index: int, gi_id: int) -> b.MigDeviceRecord:
        """Create the full-size CI of a GI (shared engine profile) and read its MIG UUID back."""
        h = self._h(index, "create_compute_instance")
        with self._nvml(f"GPU instance {gi_id} of GPU {index}") as n:
            gi = n.nvmlDeviceGetGpuInstanceById(h, gi_id)
            profile_id = int(n.nvmlGpuInstanceGetInfo(gi).profileId)
        ci_enum = _FULL_CI_PROFILE[self._gi_slices(index, h, profile_id)]
        with self._nvml(f"create compute instance in GI {gi_id} of GPU {index}") as n:
            ci_profile = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi, ci_enum, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
            )
            ci = n.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile.id)
            ci_id = int(n.nvmlComputeInstanceGetInfo(ci).id)
        for rec in self.mig_devices(index):
            if rec.gi_id == gi_id and rec.ci_id == ci_id:
                return rec
        raise nvml_error_for_code(
            _NOT_FOUND, f"GPU {index}: new compute instance {gi_id}/{ci_id} has no MIG handle"
        )

    def destroy_compute_instance(self, index: int, gi_id: int, ci_id: int) -> None:
        """``nvmlComputeInstanceDestroy``."""
        h = self._h(index, "destroy_compute_instance")
        with self._nvml(f"destroy compute instance {gi_id}/{ci_id} of GPU {index}") as n:
            gi = n.nvmlDeviceGetGpuInstanceById(h, gi_id)
            n.nvmlComputeInstanceDestroy(n.nvmlGpuInstanceGetComputeInstanceById(gi, ci_id))

    def destroy_gpu_instance(self, index: int, gi_id: int) -> None:
        """``nvmlGpuInstanceDestroy``."""
        h = self._h(index, "destroy_gpu_instance")
        with self._nvml(f"destroy GPU instance {gi_id} of GPU {index}") as n:
            n.nvmlGpuInstanceDestroy(n.nvmlDeviceGetGpuInstanceById(h, gi_id))

    # -- NVLink and fabric -----------------------------------------------------------------------
    def nvlinks(self, index: int) -> tuple[b.NvLinkRecord, ...]:
        """Walk links until INVALID_ARGUMENT; NOT_SUPPORTED on link 0 means no NVLink at all."""
        h = self._h(index, "nvlinks")
        records: list[b.NvLinkRecord] = []
        for link in range(36):  # NVML_NVLINK_MAX_LINKS in current headers
            try:
                with self._nvml(f"nvmlDeviceGetNvLinkState(GPU {index}, link {link})") as n:
                    active = bool(n.nvmlDeviceGetNvLinkState(h, link))
            except NvmlError as exc:
                if exc.code in (_NOT_SUPPORTED, _INVALID_ARGUMENT):
                    break
                raise
            if not active:
                records.append(b.NvLinkRecord.inactive(link))
                continue
            with self._nvml(f"NVLink {link} of GPU {index}") as n:
                records.append(
                    b.NvLinkRecord(
                        link=link,
                        active=True,
                        version=int(n.nvmlDeviceGetNvLinkVersion(h, link)),
                        remote_type=int(n.nvmlDeviceGetNvLinkRemoteDeviceType(h, link)),
                        remote_bus_id=_s(n.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId),
                    )
                )
        return tuple(records)

    def fabric_info(self, index: int) -> b.FabricInfoRecord:
        """Fabric info v3, falling back to v2 and then to the deprecated unversioned call."""
        h = self._h(index, "fabric_info")
        attempts = (
            ("c_nvmlGpuFabricInfo_v3_t", "nvmlDeviceGetGpuFabricInfoV"),
            ("c_nvmlGpuFabricInfo_v2_t", "nvmlDeviceGetGpuFabricInfoV"),
            ("c_nvmlGpuFabricInfo_t", "nvmlDeviceGetGpuFabricInfo"),
        )
        for i, (struct, fn) in enumerate(attempts):
            try:
                with self._nvml(f"{fn}(GPU {index})") as n:
                    info = getattr(n, struct)()
                    getattr(n, fn)(h, ctypes.byref(info))
            except NvmlError as exc:
                if exc.code in (_FUNCTION_NOT_FOUND, _ARGUMENT_VERSION_MISMATCH) and i + 1 < len(attempts):
                    continue
                raise
            return b.FabricInfoRecord(
                state=int(info.state),
                status=int(info.status),
                cluster_uuid=str(uuid_mod.UUID(bytes=bytes(bytearray(info.clusterUuid)))),
                clique_id=int(info.cliqueId),
                health_mask=int(getattr(info, "healthMask", 0)),
                health_summary=int(getattr(info, "healthSummary", 0)),
            )
        raise AssertionError("unreachable: the last attempt either returns or raises")

    # -- events ----------------------------------------------------------------------------------
    def supported_event_types(self, index: int) -> int:
        """``nvmlDeviceGetSupportedEventTypes``."""
        return int(self._call(index, "nvmlDeviceGetSupportedEventTypes"))

    def register_events(self, index: int, mask: int) -> None:
        """``nvmlDeviceRegisterEvents`` on the backend's one event set (created on first use)."""
        h = self._h(index, "register_events")
        with self._nvml(f"nvmlDeviceRegisterEvents(GPU {index}, {mask:#x})") as n:
            if self._event_set is None:
                self._event_set = n.nvmlEventSetCreate()
            n.nvmlDeviceRegisterEvents(h, mask, self._event_set)

    def wait_event(self, timeout_ms: int) -> b.EventRecord:
        """``nvmlEventSetWait_v2``; the event's device becomes an index and UUID (None if unreadable)."""
        if self._event_set is None:
            raise nvml_error_for_code(b.NVML_TIMEOUT, "nvmlEventSetWait: no GPU registered")
        with self._nvml("nvmlEventSetWait") as n:
            data = n.nvmlEventSetWait_v2(self._event_set, timeout_ms)
        index: int | None = None
        uuid: str | None = None
        try:
            with self._nvml("event device") as n:
                uuid = _s(n.nvmlDeviceGetUUID(data.device))
                index = int(n.nvmlDeviceGetIndex(data.device))
        except NvmlError:
            pass  # upstream: an event whose device cannot be read means the GPU is lost
        return b.EventRecord(
            index=index,
            uuid=uuid,
            event_type=int(data.eventType),
            data=int(data.eventData),
            gi_id=int(data.gpuInstanceId),
            ci_id=int(data.computeInstanceId),
        )

    def free_events(self) -> None:
        """``nvmlEventSetFree`` (idempotent)."""
        if self._event_set is None:
            return
        event_set, self._event_set = self._event_set, None
        with self._nvml("nvmlEventSetFree") as n:
            n.nvmlEventSetFree(event_set)
