"""The real :class:`~nvdra.fabric.manager.FabricManager`: ``libnvfm.so`` (the FM SDK) through ctypes.

No Python binding exists, so the SDK's structs are declared here with the layouts and version words of
nv_fm_types.h (struct version = ``sizeof(struct) | (ver << 24)``; tests check sizes and words).

Where things are found (upstream's env vars):

- the library: ``NVIDIA_FABRICMANAGER_LIBRARY_PATH``, else ``libnvfm.so.1``/``libnvfm.so`` in the usual
  library directories under the driver root;
- the address: ``NVIDIA_FABRICMANAGER_ADDRESS`` selects TCP (``a.b.c.d`` or ``a.b.c.d:port``, port 6666
  by default); otherwise the Unix socket ``NVIDIA_FABRICMANAGER_UNIX_SOCKET``, by default
  ``/run/nvidia-fabricmanager/socket`` (FM's ``FM_CMD_UNIX_SOCKET_PATH`` as upstream deploys it);
- the mode: ``FABRIC_MODE`` in ``fabricmanager.cfg`` under the driver root; without the file, a
  partition listing answering NOT_SUPPORTED means bare metal, else Shared NVSwitch.

Loading the library happens in :meth:`LibnvfmFabricManager.connect`, never at import.
"""

from __future__ import annotations

__all__ = [
    "ADDRESS_ENV",
    "LIBRARY_ENV",
    "UNIX_SOCKET_ENV",
    "FmAddress",
    "LibnvfmFabricManager",
    "fm_address",
    "struct_version",
]

import ctypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from nvdra.fabric.manager import (
    FmGpuInfo,
    FmLibraryNotFound,
    FmNotSupported,
    FmPartitionInfo,
    FmPciDevice,
    fm_error_for_code,
)
from nvdra.fabric.models import FabricMode

ADDRESS_ENV = "NVIDIA_FABRICMANAGER_ADDRESS"
UNIX_SOCKET_ENV = "NVIDIA_FABRICMANAGER_UNIX_SOCKET"
LIBRARY_ENV = "NVIDIA_FABRICMANAGER_LIBRARY_PATH"
DEFAULT_UNIX_SOCKET = "/run/nvidia-fabricmanager/socket"
CONFIG_PATH = "usr/share/nvidia/nvswitch/fabricmanager.cfg"
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib")
LIBRARY_NAMES = ("libnvfm.so.1", "libnvfm.so")

FM_MAX_STR_LENGTH = 256
FM_UUID_BUFFER_SIZE = 80
FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE = 32
FM_MAX_NUM_GPUS = 16
FM_MAX_FABRIC_PARTITIONS = 64
FM_CMD_PORT_NUMBER = 6666
ADDRESS_TYPE_INET, ADDRESS_TYPE_UNIX = 1, 2


def struct_version(struct: type[ctypes.Structure], version: int) -> int:
    """The SDK's version word: ``sizeof(struct) | (version << 24)``."""
    return ctypes.sizeof(struct) | (version << 24)


u32 = ctypes.c_uint


class FmConnectParams(ctypes.Structure):
    """``fmConnectParams_v2``."""

    _fields_ = [
        ("version", u32),
        ("addressInfo", ctypes.c_char * FM_MAX_STR_LENGTH),
        ("timeoutMs", u32),
        ("addressIsUnixSocket", u32),
        ("addressType", ctypes.c_int),
    ]


class FmPciDeviceStruct(ctypes.Structure):
    """``fmPciDevice_t``."""

    _fields_ = [("domain", u32), ("bus", u32), ("device", u32), ("function", u32)]


class FmFabricPartitionGpuInfo(ctypes.Structure):
    """``fmFabricPartitionGpuInfo_t``."""

    _fields_ = [
        ("physicalId", u32),
        ("uuid", ctypes.c_char * FM_UUID_BUFFER_SIZE),
        ("pciBusId", ctypes.c_char * FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE),
        ("numNvLinksAvailable", u32),
        ("maxNumNvLinks", u32),
        ("nvlinkLineRateMBps", u32),
    ]


class FmFabricPartitionInfo(ctypes.Structure):
    """``fmFabricPartitionInfo_t``."""

    _fields_ = [
        ("partitionId", u32),
        ("isActive", u32),
        ("numGpus", u32),
        ("gpuInfo", FmFabricPartitionGpuInfo * FM_MAX_NUM_GPUS),
    ]


class FmFabricPartitionList(ctypes.Structure):
    """``fmFabricPartitionList_v2`` (its version macro uses version 1)."""

    _fields_ = [
        ("version", u32),
        ("numPartitions", u32),
        ("maxNumPartitions", u32),
        ("partitionInfo", FmFabricPartitionInfo * FM_MAX_FABRIC_PARTITIONS),
    ]


class FmActivatedFabricPartitionList(ctypes.Structure):
    """``fmActivatedFabricPartitionList_v1``."""

    _fields_ = [
        ("version", u32),
        ("numPartitions", u32),
        ("partitionIds", u32 * FM_MAX_FABRIC_PARTITIONS),
    ]


CONNECT_PARAMS_VERSION = struct_version(FmConnectParams, 2)
PARTITION_LIST_VERSION = struct_version(FmFabricPartitionList, 1)
ACTIVATED_LIST_VERSION = struct_version(FmActivatedFabricPartitionList, 1)


@attrs.frozen(kw_only=True)
class FmAddress:
    """Where Fabric Manager's SDK listens."""

    address: str
    unix: bool


def fm_address(env: Mapping[str, str]) -> FmAddress:
    """The address to connect to, from upstream's env vars (see the module docstring)."""
    tcp = env.get(ADDRESS_ENV, "").strip()
    if tcp:
        return FmAddress(address=tcp, unix=False)
    return FmAddress(address=env.get(UNIX_SOCKET_ENV, "").strip() or DEFAULT_UNIX_SOCKET, unix=True)


def find_library(driver_root: Path, env: Mapping[str, str]) -> Path:
    """The libnvfm to load.

    Raises:
        FmLibraryNotFound: naming every path searched.
    """
    explicit = env.get(LIBRARY_ENV, "").strip()
    candidates = (
        [Path(explicit)] if explicit else [driver_root / d / n for d in LIBRARY_DIRS for n in LIBRARY_NAMES]
    )
    for path in candidates:
        if path.exists():
            return path
    raise FmLibraryNotFound(
        "libnvfm.so not found (install the Fabric Manager SDK package, nvidia-fabricmanager-dev(el), "
        f"or set {LIBRARY_ENV}); searched: {', '.join(map(str, candidates))}"
    )


def read_fabric_mode(driver_root: Path) -> FabricMode | None:
    """FABRIC_MODE from ``fabricmanager.cfg`` under the driver root; None when the file is absent."""
    path = driver_root / CONFIG_PATH
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "FABRIC_MODE":
            return FabricMode(int(value.strip() or 0))
    return FabricMode.BARE_METAL  # FM's documented default


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class LibnvfmFabricManager:
    """A connected libnvfm client. Build it with :meth:`connect`; call :meth:`close` when done."""

    def __init__(self, lib: Any, handle: ctypes.c_void_p, *, configured_mode: FabricMode | None) -> None:
        self._lib = lib
        self._handle = handle
        self._mode = configured_mode

    @classmethod
    def connect(
        cls, *, driver_root: Path, env: Mapping[str, str], timeout_ms: int = 1000, lib: Any = None
    ) -> LibnvfmFabricManager:
        """Load libnvfm (unless ``lib`` is given), initialise it and connect.

        Raises:
            FmLibraryNotFound: the library is missing.
            FabricManagerError: init or connect failed (CONNECTION_NOT_VALID when FM is not listening).
        """
        if lib is None:
            path = find_library(driver_root, env)
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise FmLibraryNotFound(f"cannot load {path}: {exc}") from exc
        ret = lib.fmLibInit()
        if ret not in (0, -7):  # IN_USE: already initialised in this process
            raise fm_error_for_code(ret, "initialising libnvfm")
        where = fm_address(env)
        params = FmConnectParams()
        params.version = CONNECT_PARAMS_VERSION
        params.addressInfo = where.address.encode()[: FM_MAX_STR_LENGTH - 1]
        params.timeoutMs = timeout_ms
        params.addressIsUnixSocket = 1 if where.unix else 0
        params.addressType = ADDRESS_TYPE_UNIX if where.unix else ADDRESS_TYPE_INET
        handle = ctypes.c_void_p()
        ret = lib.fmConnect(ctypes.byref(params), ctypes.byref(handle))
        if ret != 0:
            lib.fmLibShutdown()
            raise fm_error_for_code(ret, f"connecting to {where.address}")
        return cls(lib, handle, configured_mode=read_fabric_mode(driver_root))

    def _call(self, doing: str, func: str, *args: Any) -> None:
        ret = getattr(self._lib, func)(self._handle, *args)
        if ret != 0:
            raise fm_error_for_code(ret, doing)

    def mode(self) -> FabricMode:
        """FABRIC_MODE from the config file, else probed with a partition listing."""
        if self._mode is None:
            try:
                self.partitions()
                self._mode = FabricMode.SHARED_NVSWITCH
            except FmNotSupported:
                self._mode = FabricMode.BARE_METAL
        return self._mode

    def partitions(self) -> tuple[FmPartitionInfo, ...]:
        """``fmGetSupportedFabricPartitions``."""
        listing = FmFabricPartitionList()
        listing.version = PARTITION_LIST_VERSION
        self._call("listing partitions", "fmGetSupportedFabricPartitions", ctypes.byref(listing))
        out = []
        for info in listing.partitionInfo[: min(listing.numPartitions, FM_MAX_FABRIC_PARTITIONS)]:
            gpus = tuple(
                FmGpuInfo(
                    physical_id=g.physicalId,
                    uuid=_text(g.uuid),
                    pci_bus_id=_text(g.pciBusId),
                    num_nvlinks_available=g.numNvLinksAvailable,
                    max_num_nvlinks=g.maxNumNvLinks,
                    nvlink_line_rate_mbps=g.nvlinkLineRateMBps,
                )
                for g in info.gpuInfo[: min(info.numGpus, FM_MAX_NUM_GPUS)]
            )
            out.append(
                FmPartitionInfo(partition_id=info.partitionId, is_active=bool(info.isActive), gpus=gpus)
            )
        return tuple(out)

    def activate(self, partition_id: int) -> None:
        """``fmActivateFabricPartition``."""
        self._call(f"activating partition {partition_id}", "fmActivateFabricPartition", u32(partition_id))

    def activate_with_vfs(self, partition_id: int, vfs: Sequence[FmPciDevice]) -> None:
        """``fmActivateFabricPartitionWithVFs``."""
        array = (FmPciDeviceStruct * max(len(vfs), 1))()
        for slot, vf in zip(array, vfs, strict=False):
            slot.domain, slot.bus, slot.device, slot.function = vf.domain, vf.bus, vf.device, vf.function
        self._call(
            f"activating partition {partition_id} with {len(vfs)} VFs",
            "fmActivateFabricPartitionWithVFs",
            u32(partition_id),
            array,
            u32(len(vfs)),
        )

    def deactivate(self, partition_id: int) -> None:
        """``fmDeactivateFabricPartition``."""
        self._call(f"deactivating partition {partition_id}", "fmDeactivateFabricPartition", u32(partition_id))

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        """``fmSetActivatedFabricPartitions``."""
        if len(partition_ids) > FM_MAX_FABRIC_PARTITIONS:
            raise fm_error_for_code(-1, f"setting {len(partition_ids)} activated partitions")
        listing = FmActivatedFabricPartitionList()
        listing.version = ACTIVATED_LIST_VERSION
        listing.numPartitions = len(partition_ids)
        for i, pid in enumerate(partition_ids):
            listing.partitionIds[i] = pid
        self._call(
            "setting the activated partition list", "fmSetActivatedFabricPartitions", ctypes.byref(listing)
        )

    def close(self) -> None:
        """``fmDisconnect`` and ``fmLibShutdown``."""
        self._lib.fmDisconnect(self._handle)
        self._lib.fmLibShutdown()
