"""Device and inventory models: what a node has, as immutable snapshots.

These records are what discovery (``nvdra.nvml``) produces and what everything above it consumes:
ResourceSlice rendering, CDI rendering, planners. They carry no handles and do no I/O.

Invariants owned here:
- a :class:`Gpu` with ``mig_enabled`` publishes its MIG devices instead of itself;
- device names follow upstream exactly: ``gpu-<minor>`` and
  ``gpu-<parentMinor>-mig-<canonical profile>-<profileId>-<placementStart>``;
- every version string handed to Kubernetes is semver-normalised (no leading zeros).
"""

from __future__ import annotations

__all__ = [
    "ARCHITECTURES",
    "BRANDS",
    "FabricInfo",
    "Gpu",
    "Inventory",
    "MigDevice",
    "MigPlacement",
    "MigProfile",
    "NvLink",
    "canonical_profile",
    "cuda_driver_version_semver",
    "gpu_device_name",
    "mig_device_name",
    "parse_mig_device_name",
    "pci_bus_id_from_nvml",
    "semver_normalize",
]

import re

import attrs

from nvdra.core.ids import DeviceName, GpuUuid, MigUuid, PciBusId

ARCHITECTURES: dict[int, str] = {
    2: "Kepler",
    3: "Maxwell",
    4: "Pascal",
    5: "Volta",
    6: "Turing",
    7: "Ampere",
    8: "Ada Lovelace",
    9: "Hopper",
    10: "Blackwell",
    13: "Rubin",
}
"""NVML ``nvmlDeviceArchitecture_t`` values → the strings go-nvlib (and so upstream) publishes."""

BRANDS: dict[int, str] = {
    0: "Unknown",
    1: "Quadro",
    2: "Tesla",
    3: "NVS",
    4: "Grid",
    5: "GeForce",
    6: "Titan",
    14: "Nvidia",
}
"""NVML ``nvmlBrandType_t`` values → brand strings (datacenter parts report ``Nvidia`` = 14)."""


@attrs.frozen(kw_only=True)
class MigPlacement:
    """A GPU instance's position: ``size`` memory slices starting at slice ``start``."""

    start: int = attrs.field(validator=attrs.validators.ge(0))
    size: int = attrs.field(validator=attrs.validators.ge(1))

    @property
    def slices(self) -> range:
        """The memory-slice indices this placement occupies."""
        return range(self.start, self.start + self.size)


@attrs.frozen(kw_only=True)
class MigProfile:
    """A GPU-instance profile with a full-size compute instance, as ``nvidia-smi mig -lgip`` lists it.

    ``id`` is the profile *ID* (19, 20, 15, 14, 9, 5, 0 on 7-slice GPUs), not the NVML enum.
    """

    id: int
    name: str  # e.g. "1g.10gb" or "1g.10gb+me"
    compute_slices: int
    memory_slices: int
    instance_count: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpeg_engines: int
    ofa_engines: int
    memory_mb: int
    placement_starts: tuple[int, ...] = ()

    @property
    def placements(self) -> tuple[MigPlacement, ...]:
        """Every legal placement of this profile."""
        return tuple(MigPlacement(start=s, size=self.memory_slices) for s in self.placement_starts)


@attrs.frozen(kw_only=True)
class MigDevice:
    """An existing MIG device (a GPU instance with its full-size compute instance)."""

    uuid: MigUuid
    parent_uuid: GpuUuid
    parent_minor: int
    gi_id: int
    ci_id: int
    profile: MigProfile
    placement: MigPlacement

    @property
    def name(self) -> DeviceName:
        """The upstream device name, e.g. ``gpu-0-mig-1g10gb-19-0``."""
        return mig_device_name(self.parent_minor, self.profile.name, self.profile.id, self.placement.start)


@attrs.frozen(kw_only=True)
class NvLink:
    """One active NVLink of a GPU and what sits at its far end."""

    link: int
    version: int  # nvmlNvlinkVersion_t (4 = NVLink 3.0, 6 = 4.0, 7 = 5.0)
    remote_type: str  # "gpu" | "switch" | "unknown"
    remote_pci_bus_id: PciBusId


@attrs.frozen(kw_only=True)
class FabricInfo:
    """NVML GPU fabric info (``nvmlGpuFabricInfo``); only meaningful on Hopper and later."""

    state: int  # 0 NOT_SUPPORTED, 1 NOT_STARTED, 2 IN_PROGRESS, 3 COMPLETED
    status: int  # an nvmlReturn_t, valid only when state is COMPLETED
    cluster_uuid: str  # canonical UUID text; all zeros = not multi-node capable
    clique_id: int
    health_mask: int = 0
    health_summary: int = 0  # 0 not supported, 1 healthy, 2 unhealthy, 3 limited capacity


@attrs.frozen(kw_only=True)
class Gpu:
    """A physical GPU as discovered. ``memory_bytes`` is ``None`` where NVML does not report it."""

    index: int
    minor: int
    uuid: GpuUuid
    product_name: str
    brand: str
    architecture: str
    cuda_compute_capability: tuple[int, int]
    memory_bytes: int | None
    pci_bus_id: PciBusId
    pci_device_id: int = 0  # NVML pciDeviceId: device << 16 | 0x10DE
    pcie_root: str | None = None  # e.g. "pci0000:64"
    addressing_mode: str | None = None  # "HMM" | "ATS" | "None"; None = not reported
    numa_node: int | None = None
    module_id: int = 0
    mig_capable: bool = False
    mig_enabled: bool = False
    mig_profiles: tuple[MigProfile, ...] = ()
    mig_devices: tuple[MigDevice, ...] = ()
    nvlinks: tuple[NvLink, ...] = ()
    fabric: FabricInfo | None = None

    @property
    def name(self) -> DeviceName:
        """The upstream device name, ``gpu-<minor>``."""
        return gpu_device_name(self.minor)


@attrs.frozen(kw_only=True)
class Inventory:
    """Everything discovery found on one node."""

    driver_version: str  # as NVML reports it, e.g. "580.105.08"
    cuda_driver_version: int  # NVML integer, e.g. 13000
    gpus: tuple[Gpu, ...]


def gpu_device_name(minor: int) -> DeviceName:
    """``gpu-<minor>``: upstream names full GPUs by NVML minor number, not index."""
    return DeviceName(f"gpu-{minor}")


_NON_NAME = re.compile(r"[^a-z0-9-.]")


def canonical_profile(profile_name: str) -> str:
    """Upstream's profile spelling inside device names: lower case, dots dropped, others → ``-``.

    >>> canonical_profile("1g.10gb+me")
    '1g10gb-me'
    """
    return _NON_NAME.sub("-", profile_name.lower()).replace(".", "")


def mig_device_name(parent_minor: int, profile_name: str, profile_id: int, start: int) -> DeviceName:
    """``gpu-<parentMinor>-mig-<canonical profile>-<profileId>-<placementStart>``."""
    return DeviceName(f"gpu-{parent_minor}-mig-{canonical_profile(profile_name)}-{profile_id}-{start}")


_MIG_NAME = re.compile(r"^gpu-(\d+)-mig-(.+)-(\d+)-(\d+)$")


def parse_mig_device_name(name: str) -> tuple[int, str, int, int] | None:
    """Split a MIG device name into (parent minor, canonical profile, profile id, start); None if not MIG."""
    m = _MIG_NAME.match(name)
    if m is None:
        return None
    return int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))


def semver_normalize(version: str) -> str:
    """Dotted version → semver: pad to three parts, drop leading zeros (``580.126.09`` → ``580.126.9``)."""
    parts = [p for p in version.strip().split(".") if p != ""]
    nums = [str(int(p)) if p.isdigit() else p for p in parts[:3]]
    while len(nums) < 3:
        nums.append("0")
    return ".".join(nums)


def cuda_driver_version_semver(value: int) -> str:
    """NVML's integer CUDA driver version as semver: ``12080`` → ``12.8.0``."""
    return f"{value // 1000}.{(value % 1000) // 10}.0"


def pci_bus_id_from_nvml(bus_id: str) -> PciBusId:
    """NVML ``00000000:3B:00.0`` → sysfs ``0000:3b:00.0`` (lower case, 4-digit domain)."""
    domain, rest = bus_id.strip().split(":", 1)
    return PciBusId(f"{int(domain, 16):04x}:{rest.lower()}")
