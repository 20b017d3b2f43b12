"""Discovery: read an :class:`~nvdra.nvml.NvmlBackend` into a :class:`nvdra.core.devices.Inventory`.

Invariants owned here:
- MIG profile names follow go-nvlib (nvidia-hardware §2.5): the memory fraction is rounded *up* to
  the next 1/8, multiplied by the GPU's memory in whole GiB rounded up, and rounded to nearest with
  half away from zero (never Python's banker's ``round``); REV1 enums get ``+me`` and so on;
- only profiles with a full-size compute instance are published (that is what the backend lists);
- a GPU whose MIG-mode query answers NOT_SUPPORTED is not MIG capable; fabric info that answers
  NOT_SUPPORTED becomes ``None``; NVLinks are listed only when active;
- the caller owns the NVML session: discovery neither initialises nor shuts the backend down.
"""

from __future__ import annotations

__all__ = ["discover_gpu", "discover_inventory", "mig_profile_name"]

import math

from nvdra.core.devices import (
    ARCHITECTURES,
    BRANDS,
    FabricInfo,
    Gpu,
    Inventory,
    MigDevice,
    MigProfile,
    NvLink,
    pci_bus_id_from_nvml,
)
from nvdra.core.errors import NvmlNotFound, NvmlNotSupported
from nvdra.core.ids import GpuUuid, MigUuid
from nvdra.nvml import _backend as b

_GIB = 1024**3
_MIB = 1024**2
_REMOTE_TYPES = {b.NVLINK_REMOTE_GPU: "gpu", b.NVLINK_REMOTE_SWITCH: "switch"}


def _round_half_away(x: float) -> int:
    """Round to nearest, halves away from zero (Go's ``math.Round``)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def mig_profile_name(
    *,
    memory_size_mb: int,
    total_memory_bytes: int,
    gi_slices: int,
    ci_slices: int | None = None,
    profile_enum: int = 0,
) -> str:
    """The go-nvlib MIG profile name, e.g. ``1g.10gb``, ``1g.18gb+me`` or ``1c.3g.20gb``.

    Args:
        memory_size_mb: the GI profile's ``memorySizeMB``.
        total_memory_bytes: the parent GPU's total memory (NVML ``memory.total``).
        gi_slices: the GI profile's compute slice count.
        ci_slices: the CI's compute slice count (None or equal to ``gi_slices`` for a full-size CI).
        profile_enum: the NVML GI profile enum (decides ``+me``, ``+gfx``, ``-me``, ``+me.all``).

    Returns:
        The profile name.
    """
    fraction = memory_size_mb * _MIB / total_memory_bytes
    fraction = math.ceil(fraction * 8) / 8
    total_gb = (total_memory_bytes + _GIB - 1) // _GIB
    gb = _round_half_away(fraction * total_gb)
    name = f"{gi_slices}g.{gb}gb{b.PROFILE_ENUM_SUFFIX.get(profile_enum, '')}"
    if ci_slices is not None and ci_slices != gi_slices:
        name = f"{ci_slices}c.{name}"
    return name


def _profile(info: b.GpuInstanceProfileInfo, total_memory: int | None) -> MigProfile:
    if total_memory is None:
        name = info.name.removeprefix("MIG ")  # without the total, NVML's own name is the best we have
    else:
        name = mig_profile_name(
            memory_size_mb=info.memory_size_mb,
            total_memory_bytes=total_memory,
            gi_slices=info.slice_count,
            profile_enum=info.profile_enum,
        )
    sizes = {p.size for p in info.placements}
    return MigProfile(
        id=info.id,
        name=name,
        compute_slices=info.slice_count,
        memory_slices=min(sizes, default=0),
        instance_count=info.instance_count,
        multiprocessors=info.multiprocessor_count,
        copy_engines=info.copy_engine_count,
        decoders=info.decoder_count,
        encoders=info.encoder_count,
        jpeg_engines=info.jpeg_count,
        ofa_engines=info.ofa_count,
        memory_mb=info.memory_size_mb,
        placement_starts=tuple(p.start for p in info.placements),
    )


def _mig_devices(
    backend: b.NvmlBackend, index: int, uuid: str, minor: int, profiles: tuple[MigProfile, ...]
) -> tuple[MigDevice, ...]:
    by_id = {p.id: p for p in profiles}
    devices = []
    for rec in backend.mig_devices(index):
        profile = by_id.get(rec.gi_profile_id)
        if profile is None:
            raise NvmlNotFound(
                f"GPU {index}: MIG device {rec.uuid} uses GPU-instance profile {rec.gi_profile_id}, "
                f"which the GPU does not list (listed: {sorted(by_id)})"
            )
        devices.append(
            MigDevice(
                uuid=MigUuid(rec.uuid),
                parent_uuid=GpuUuid(uuid),
                parent_minor=minor,
                gi_id=rec.gi_id,
                ci_id=rec.ci_id,
                profile=profile,
                placement=rec.placement,
            )
        )
    return tuple(devices)


def _fabric(backend: b.NvmlBackend, index: int) -> FabricInfo | None:
    try:
        return backend.fabric_info(index)
    except NvmlNotSupported:
        return None


def _nvlinks(backend: b.NvmlBackend, index: int) -> tuple[NvLink, ...]:
    return tuple(
        NvLink(
            link=rec.link,
            version=rec.version,
            remote_type=_REMOTE_TYPES.get(rec.remote_type, "unknown"),
            remote_pci_bus_id=pci_bus_id_from_nvml(rec.remote_bus_id),
        )
        for rec in backend.nvlinks(index)
        if rec.active
    )


def discover_gpu(backend: b.NvmlBackend, index: int) -> Gpu:
    """Everything nvdra needs to know about GPU ``index``.

    Raises:
        NvmlError: a backend call failed with anything other than the NOT_SUPPORTED answers above.
    """
    ident = backend.device_identity(index)
    pci = backend.pci_info(index)
    memory = backend.memory_total(index)
    try:
        mode = backend.mig_mode(index)
        capable, enabled = True, mode.current
    except NvmlNotSupported:
        capable, enabled = False, False
    profiles = tuple(_profile(p, memory) for p in backend.gpu_instance_profiles(index)) if capable else ()
    devices = _mig_devices(backend, index, ident.uuid, ident.minor, profiles) if enabled else ()
    addressing = backend.addressing_mode(index)
    return Gpu(
        index=ident.index,
        minor=ident.minor,
        uuid=GpuUuid(ident.uuid),
        product_name=ident.name,
        brand=BRANDS.get(ident.brand, "Unknown"),
        architecture=ARCHITECTURES.get(ident.architecture, "Unknown"),
        cuda_compute_capability=ident.cuda_compute_capability,
        memory_bytes=memory,
        pci_bus_id=pci_bus_id_from_nvml(pci.bus_id),
        pci_device_id=pci.device_id,
        pcie_root=None,
        addressing_mode=None if addressing is None else b.ADDRESSING_MODES.get(addressing, "None"),
        numa_node=backend.numa_node(index),
        module_id=backend.module_id(index),
        mig_capable=capable,
        mig_enabled=enabled,
        mig_profiles=profiles,
        mig_devices=devices,
        nvlinks=_nvlinks(backend, index),
        fabric=_fabric(backend, index),
    )


def discover_inventory(backend: b.NvmlBackend) -> Inventory:
    """Discover every GPU of an initialised backend, in NVML index order.

    Args:
        backend: any :class:`~nvdra.nvml.NvmlBackend` on which ``init()`` was called.

    Returns:
        The node's inventory.
    """
    gpus = tuple(discover_gpu(backend, i) for i in range(backend.device_count()))
    return Inventory(
        driver_version=backend.driver_version(), cuda_driver_version=backend.cuda_driver_version(), gpus=gpus
    )
