"""The ``NvmlBackend`` Protocol: the narrow NVML surface nvdra uses, and the records it returns.

Every backend (the real :class:`~nvdra.nvml.PynvmlBackend`, the :class:`~nvdra.nvml.SimulatedNvml`)
implements this Protocol structurally; nothing has to inherit from it.

Invariants owned here:
- methods are keyed by GPU index (and GPU-instance / compute-instance ids), never by library
  handles, and return these small frozen records or plain ints/strs, never pynvml structs;
- strings are ``str`` (never bytes); PCI bus ids are in NVML's form ``00000000:1B:00.0``;
- failures raise the :mod:`nvdra.core.errors` NVML classes with the code the real library returns
  (``nvml_error_for_code``): NOT_FOUND for an unknown UUID, NOT_SUPPORTED for MIG calls on a GPU
  without MIG, INVALID_ARGUMENT for a bad index or placement, INSUFFICIENT_RESOURCES when a GPU
  instance does not fit, IN_USE when something still uses what is being destroyed, UNINITIALIZED
  for any call before ``init`` or after the last ``shutdown``;
- ``init``/``shutdown`` are reference counted like NVML itself; nothing is loaded before ``init``.
"""

from __future__ import annotations

__all__ = [
    "DeviceIdentity",
    "EventRecord",
    "FabricInfoRecord",
    "GpuInstanceProfileInfo",
    "GpuInstanceRecord",
    "MigDeviceRecord",
    "MigModeState",
    "NvLinkRecord",
    "NvmlBackend",
    "PciInfo",
    "nvml_member",
    "nvml_members",
]

import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from nvdra.core.devices import FabricInfo, MigPlacement

# The forms of the identity strings every backend returns (profiles and the conformance suite check them).
BUS_ID_FORM = re.compile(r"^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$")  # 00000000:1B:00.0
GPU_UUID_FORM = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MIG_UUID_FORM = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")

# nvmlComputeMode_t values.
COMPUTE_MODE_DEFAULT = 0
COMPUTE_MODE_EXCLUSIVE_THREAD = 1  # support removed from current drivers
COMPUTE_MODE_PROHIBITED = 2
COMPUTE_MODE_EXCLUSIVE_PROCESS = 3

# nvmlIntNvLinkDeviceType_t values.
NVLINK_REMOTE_GPU = 0
NVLINK_REMOTE_IBMNPU = 1
NVLINK_REMOTE_SWITCH = 2
NVLINK_REMOTE_UNKNOWN = 0xFF

# nvmlGpuFabricState_t values.
FABRIC_STATE_NOT_SUPPORTED = 0
FABRIC_STATE_NOT_STARTED = 1
FABRIC_STATE_IN_PROGRESS = 2
FABRIC_STATE_COMPLETED = 3

# nvmlEventType bits (nvidia-hardware §1.7); upstream registers XID | double- | single-bit ECC.
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_PSTATE = 0x4
EVENT_XID_CRITICAL = 0x8
EVENT_CLOCK = 0x10
HEALTH_EVENT_MASK = EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC | EVENT_SINGLE_BIT_ECC
NO_INSTANCE = 0xFFFFFFFF  # GI/CI id of an event on a whole GPU
NVML_TIMEOUT = 10  # nvmlReturn_t of a wait with no event: normal, loop again

# nvmlDeviceAddressingModeType_t values.
ADDRESSING_MODES: dict[int, str] = {0: "None", 1: "HMM", 2: "ATS"}

# GPU-instance profile enums whose go-nvlib name carries a suffix (nvml.h NVML_GPU_INSTANCE_PROFILE_*).
PROFILE_ENUM_SUFFIX: dict[int, str] = {
    0x7: "+me",  # 1_SLICE_REV1
    0x8: "+me",  # 2_SLICE_REV1
    0xA: "+gfx",  # 1_SLICE_GFX
    0xB: "+gfx",  # 2_SLICE_GFX
    0xC: "+gfx",  # 4_SLICE_GFX
    0xD: "-me",  # 1_SLICE_NO_ME
    0xE: "-me",  # 2_SLICE_NO_ME
    0xF: "+me.all",  # 1_SLICE_ALL_ME
    0x10: "+me.all",  # 2_SLICE_ALL_ME
    0x11: "+gfx",  # 8_SLICE_GFX
}
PROFILE_ENUM_COUNT = 0x12


@attrs.frozen(kw_only=True)
class DeviceIdentity:
    """Who a GPU is: the values that do not change while the driver is loaded."""

    index: int
    uuid: str  # "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    name: str  # e.g. "NVIDIA H100 80GB HBM3"
    minor: int  # /dev/nvidia<minor>
    brand: int  # nvmlBrandType_t (14 = NVIDIA)
    architecture: int  # nvmlDeviceArchitecture_t (7 Ampere, 9 Hopper, 10 Blackwell)
    cuda_compute_capability: tuple[int, int]


@attrs.frozen(kw_only=True)
class PciInfo:
    """The parts of ``nvmlPciInfo_t`` nvdra uses."""

    bus_id: str  # NVML form, "00000000:1B:00.0"
    device_id: int  # pciDeviceId: device << 16 | 0x10DE


@attrs.frozen(kw_only=True)
class MigModeState:
    """MIG mode now and after the next GPU reset."""

    current: bool
    pending: bool


_NVML_MEMBER = "nvml"


def nvml_member(name: str) -> dict[str, str]:
    """Field metadata: the field is the NVML struct's member ``name`` (read by :func:`nvml_members`)."""
    return {_NVML_MEMBER: name}


def nvml_members(cls: type[Any]) -> Mapping[str, str]:
    """Field name -> NVML struct member, for the fields of the attrs class ``cls`` that name one."""
    return {a.name: a.metadata[_NVML_MEMBER] for a in attrs.fields(cls) if _NVML_MEMBER in a.metadata}


@attrs.frozen(kw_only=True)
class GpuInstanceProfileInfo:
    """One GPU-instance profile as ``nvmlDeviceGetGpuInstanceProfileInfoV`` reports it, plus its placements.

    ``profile_enum`` is the NVML enum it was queried with (it decides the ``+me``-style suffix);
    ``id`` is the profile ID the create/placement calls take. ``placements`` are every possible
    placement (``nvmlDeviceGetGpuInstancePossiblePlacements``), in the order NVML lists them. The
    numbers are the ``nvmlGpuInstanceProfileInfo_v2_t`` members their metadata names (all unsigned
    ints in the struct; ``is_p2p_supported`` is made a bool).
    """

    profile_enum: int
    id: int = attrs.field(metadata=nvml_member("id"))
    name: str  # as NVML reports it, e.g. "MIG 1g.18gb"
    slice_count: int = attrs.field(metadata=nvml_member("sliceCount"))  # compute slices
    instance_count: int = attrs.field(metadata=nvml_member("instanceCount"))
    multiprocessor_count: int = attrs.field(metadata=nvml_member("multiprocessorCount"))
    copy_engine_count: int = attrs.field(metadata=nvml_member("copyEngineCount"))
    decoder_count: int = attrs.field(metadata=nvml_member("decoderCount"))
    encoder_count: int = attrs.field(metadata=nvml_member("encoderCount"))
    jpeg_count: int = attrs.field(metadata=nvml_member("jpegCount"))
    ofa_count: int = attrs.field(metadata=nvml_member("ofaCount"))
    memory_size_mb: int = attrs.field(metadata=nvml_member("memorySizeMB"))
    is_p2p_supported: bool = attrs.field(converter=bool, metadata=nvml_member("isP2pSupported"))
    placements: tuple[MigPlacement, ...]


@attrs.frozen(kw_only=True)
class GpuInstanceRecord:
    """An existing GPU instance, whether or not it holds a compute instance (``nvmlGpuInstanceInfo_t``).

    A GI without a compute instance has no MIG device handle, so :class:`MigDeviceRecord` cannot
    show it; this record is how a half-made MIG device (GI created, CI not) is found again.
    """

    gi_id: int
    profile_id: int
    placement: MigPlacement


@attrs.frozen(kw_only=True)
class MigDeviceRecord:
    """An existing MIG device: a compute instance inside a GPU instance."""

    uuid: str  # "MIG-…"
    gi_id: int
    ci_id: int
    gi_profile_id: int
    ci_profile_id: int
    placement: MigPlacement


@attrs.frozen(kw_only=True)
class NvLinkRecord:
    """One NVLink of a GPU. Inactive links report version 0, remote type UNKNOWN and an empty bus id."""

    link: int
    active: bool
    version: int  # nvmlNvlinkVersion_t: 4 = NVLink 3.0, 6 = 4.0, 7 = 5.0
    remote_type: int  # NVLINK_REMOTE_*
    remote_bus_id: str  # NVML form

    @classmethod
    def inactive(cls, link: int) -> NvLinkRecord:
        """Link ``link`` as an inactive one reports itself."""
        return cls(link=link, active=False, version=0, remote_type=NVLINK_REMOTE_UNKNOWN, remote_bus_id="")


FabricInfoRecord = FabricInfo
"""``nvmlGpuFabricInfo_v3_t`` in nvdra terms: the inventory's own record (``state`` one of FABRIC_STATE_*,
``cluster_uuid`` canonical UUID text), so discovery passes it on as it is."""


@attrs.frozen(kw_only=True)
class EventRecord:
    """One ``nvmlEventData_t``: ``data`` is the XID for XID events; ``gi_id``/``ci_id`` are
    :data:`NO_INSTANCE` for a whole GPU. ``uuid`` is None when the event's device cannot be read
    (upstream treats that as a lost GPU)."""

    index: int | None
    uuid: str | None
    event_type: int
    data: int
    gi_id: int = NO_INSTANCE
    ci_id: int = NO_INSTANCE


@runtime_checkable
class NvmlBackend(Protocol):
    """The NVML calls nvdra makes. See the module docstring for the error contract."""

    def init(self) -> None:
        """Initialise NVML with ``NVML_INIT_FLAG_NO_GPUS`` (reference counted)."""

    def shutdown(self) -> None:
        """Drop one reference; UNINITIALIZED if there is none."""

    def driver_version(self) -> str:
        """The kernel driver version, e.g. ``"580.105.08"``."""

    def cuda_driver_version(self) -> int:
        """The CUDA driver API version as NVML's integer, e.g. ``13000``."""

    def device_count(self) -> int:
        """Number of physical GPUs (MIG devices are not counted)."""

    def index_by_uuid(self, uuid: str) -> int:
        """The index of the GPU with this UUID; NOT_FOUND if none."""

    def device_identity(self, index: int) -> DeviceIdentity:
        """Identity of GPU ``index``; INVALID_ARGUMENT for a bad index, GPU_IS_LOST for a lost GPU."""

    def pci_info(self, index: int) -> PciInfo:
        """PCI bus id (NVML form) and PCI device id."""

    def memory_total(self, index: int) -> int | None:
        """Framebuffer size in bytes, or None where NVML answers NOT_SUPPORTED."""

    def module_id(self, index: int) -> int:
        """Baseboard module id (Fabric Manager physical id); 0 for PCIe products."""

    def addressing_mode(self, index: int) -> int | None:
        """``nvmlDeviceAddressingModeType_t``, or None where NVML answers NOT_SUPPORTED."""

    def numa_node(self, index: int) -> int | None:
        """The GPU's NUMA node, or None where NVML answers NOT_SUPPORTED."""

    def mig_mode(self, index: int) -> MigModeState:
        """Current and pending MIG mode; NOT_SUPPORTED on GPUs without MIG."""

    def gpu_instance_profiles(self, index: int) -> tuple[GpuInstanceProfileInfo, ...]:
        """Every GPU-instance profile this GPU offers now, with placements (empty when none is offered)."""

    def gpu_instance_remaining_capacity(self, index: int, profile_id: int) -> int:
        """How many more GPU instances of ``profile_id`` could be created now."""

    def gpu_instances(self, index: int) -> tuple[GpuInstanceRecord, ...]:
        """Every GPU instance of GPU ``index``, with or without compute instances, ordered by GI id
        (empty when MIG is off or unsupported)."""

    def mig_devices(self, index: int) -> tuple[MigDeviceRecord, ...]:
        """Existing MIG devices of GPU ``index`` (empty when MIG is off)."""

    def nvlinks(self, index: int) -> tuple[NvLinkRecord, ...]:
        """Every NVLink the GPU has, active or not; empty for GPUs without NVLink."""

    def fabric_info(self, index: int) -> FabricInfoRecord:
        """NVLink fabric registration; NOT_SUPPORTED before Hopper."""

    def compute_mode(self, index: int) -> int:
        """``nvmlComputeMode_t`` of the GPU."""

    def set_compute_mode(self, index: int, mode: int) -> None:
        """Change the compute mode (DEFAULT 0, PROHIBITED 2, EXCLUSIVE_PROCESS 3)."""

    def set_mig_mode(self, index: int, enabled: bool) -> int:
        """Request MIG mode; returns NVML's activation status (0 = took effect, 16 = reset required)."""

    def create_gpu_instance(self, index: int, profile_id: int, placement_start: int) -> int:
        """Create a GPU instance of ``profile_id`` at memory slice ``placement_start``; returns its GI id."""

    def create_compute_instance(self, index: int, gi_id: int) -> MigDeviceRecord:
        """Create the full-size compute instance inside GPU instance ``gi_id``; the MIG device it makes."""

    def destroy_compute_instance(self, index: int, gi_id: int, ci_id: int) -> None:
        """Destroy a compute instance; NOT_FOUND if it does not exist, IN_USE if processes use it."""

    def destroy_gpu_instance(self, index: int, gi_id: int) -> None:
        """Destroy a GPU instance; IN_USE while it still holds compute instances or processes."""

    def supported_event_types(self, index: int) -> int:
        """``nvmlDeviceGetSupportedEventTypes``: the event bits GPU ``index`` can report."""

    def register_events(self, index: int, mask: int) -> None:
        """Add GPU ``index`` to the backend's one event set for ``mask`` (NOT_SUPPORTED if it cannot)."""

    def wait_event(self, timeout_ms: int) -> EventRecord:
        """Next event of the event set; an NVML error with code 10 (TIMEOUT) when none arrived,
        GPU_IS_LOST when a registered GPU fell off the bus."""

    def free_events(self) -> None:
        """Free the event set (idempotent); registrations are forgotten."""
