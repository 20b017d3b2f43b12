"""The ``FabricManager`` Protocol (the libnvfm SDK surface nvdra uses), its errors, and its records.

Every ``fmReturn_t`` (nv_fm_types.h) maps to a :class:`FabricManagerError` subclass with a message
saying what it means; backends raise :func:`fm_error_for_code`. Records hold plain values, never
ctypes structs. Partition members are named by *physical id*, which on H100 and later is the NVML
module id (FM leaves ``uuid`` and ``pciBusId`` empty there).
"""

from __future__ import annotations

__all__ = [
    "FM_RETURN_NAMES",
    "FabricManager",
    "FabricManagerError",
    "FmBadParam",
    "FmConnectionNotValid",
    "FmGenericError",
    "FmGpuInfo",
    "FmInUse",
    "FmLibraryNotFound",
    "FmNotConfigured",
    "FmNotSupported",
    "FmNvlinkError",
    "FmPartitionInfo",
    "FmPciDevice",
    "FmTimeout",
    "FmUninitialized",
    "FmVersionMismatch",
    "fm_error_for_code",
]

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from nvdra.core.errors import ReturnCodeError
from nvdra.fabric.models import FabricMode


class FabricManagerError(ReturnCodeError):
    """A Fabric Manager SDK call failed; ``code`` is the ``fmReturn_t``."""

    code = -2


class FmBadParam(FabricManagerError, code=-1):
    """FM_ST_BADPARAM (-1): a bad argument, e.g. an unknown partition id."""


class FmGenericError(FabricManagerError, code=-2):
    """FM_ST_GENERIC_ERROR (-2)."""


class FmNotSupported(FabricManagerError, code=-3):
    """FM_ST_NOT_SUPPORTED (-3): the call needs another FABRIC_MODE (e.g. partitions in bare-metal mode)."""


class FmUninitialized(FabricManagerError, code=-4):
    """FM_ST_UNINITIALIZED (-4): the library is not initialised — or, quirk, the partition is not active."""


class FmTimeout(FabricManagerError, code=-5):
    """FM_ST_TIMEOUT (-5)."""


class FmVersionMismatch(FabricManagerError, code=-6):
    """FM_ST_VERSION_MISMATCH (-6): struct version words differ between client and FM."""


class FmInUse(FabricManagerError, code=-7):
    """FM_ST_IN_USE (-7): the partition is active, or its GPUs are in another active partition."""


class FmNotConfigured(FabricManagerError, code=-8):
    """FM_ST_NOT_CONFIGURED (-8): FM is initialising or waits for the activated-partition list."""


class FmConnectionNotValid(FabricManagerError, code=-9):
    """FM_ST_CONNECTION_NOT_VALID (-9): FM cannot be reached at the address."""


class FmNvlinkError(FabricManagerError, code=-10):
    """FM_ST_NVLINK_ERROR (-10): NVLink training or routing failed for the partition."""


class FmLibraryNotFound(FabricManagerError):
    """``libnvfm.so`` could not be loaded (the Fabric Manager SDK package is not installed).

    No ``fmReturn_t`` of its own: it carries the family's default code, -2 (FM_ST_GENERIC_ERROR), and
    :func:`fm_error_for_code` never builds it.
    """


FM_RETURN_NAMES: Mapping[int, tuple[str, str]] = {
    0: ("FM_ST_SUCCESS", "success"),
    -1: ("FM_ST_BADPARAM", "a parameter is invalid (unknown partition id?)"),
    -2: ("FM_ST_GENERIC_ERROR", "generic Fabric Manager error"),
    -3: ("FM_ST_NOT_SUPPORTED", "not supported in Fabric Manager's current FABRIC_MODE"),
    -4: ("FM_ST_UNINITIALIZED", "not initialised (or, on deactivate, the partition is not active)"),
    -5: ("FM_ST_TIMEOUT", "timed out"),
    -6: ("FM_ST_VERSION_MISMATCH", "SDK struct version differs from Fabric Manager's"),
    -7: ("FM_ST_IN_USE", "the partition or one of its GPUs is already in an active partition"),
    -8: ("FM_ST_NOT_CONFIGURED", "Fabric Manager is initialising or waits for the activated list"),
    -9: ("FM_ST_CONNECTION_NOT_VALID", "cannot connect to Fabric Manager"),
    -10: ("FM_ST_NVLINK_ERROR", "NVLink error while (de)activating the partition"),
    -11: ("FM_ST_RESOURCE_BAD", "a resource is bad"),
    -12: ("FM_ST_RESOURCE_IN_USE", "a resource is in use"),
    -13: ("FM_ST_RESOURCE_NOT_IN_USE", "a resource is not in use"),
    -14: ("FM_ST_RESOURCE_EXHAUSTED", "resources exhausted"),
    -15: ("FM_ST_RESOURCE_NOT_READY", "a resource is not ready"),
    -16: ("FM_ST_PARTITION_EXISTS", "the partition exists"),
    -17: ("FM_ST_PARTITION_ID_IN_USE", "the partition id is in use"),
    -18: ("FM_ST_PARTITION_ID_NOT_IN_USE", "the partition id is not in use"),
    -19: ("FM_ST_PARTITION_NAME_IN_USE", "the partition name is in use"),
    -20: ("FM_ST_PARTITION_NAME_NOT_IN_USE", "the partition name is not in use"),
    -21: ("FM_ST_PARTITION_ID_NAME_MISMATCH", "partition id and name do not match"),
    -22: ("FM_ST_NOT_READY", "not ready"),
    -23: ("FM_ST_RESOURCE_USED_IN_THIS_PARTITION", "the resource is used in this partition"),
    -24: ("FM_ST_RESOURCE_USED_IN_ANOTHER_PARTITION", "the resource is used in another partition"),
    -25: ("FM_ST_PARTITION_MISWIRED_TRUNKS", "the partition's trunks are miswired"),
    -26: ("FM_ST_PARTITION_INSUFFICIENT_TRUNKS", "the partition has too few trunks"),
    -27: ("FM_ST_PARTITION_MISSING_SWITCHES", "the partition misses switches"),
    -28: ("FM_ST_PARTITION_NETWORK_CONFIG_ERROR", "partition network configuration error"),
    -29: ("FM_ST_PARTITION_ROUTE_PROGRAMMING_ERROR", "partition route programming error"),
}
"""Every ``fmReturn_t``: value → (name, meaning). Values -11 and below belong to the multi-node FM API."""


def fm_error_for_code(code: int, doing: str) -> FabricManagerError:
    """The most specific error for ``fmReturn_t`` ``code``; the message names the call and the code."""
    name, meaning = FM_RETURN_NAMES.get(code, (f"fmReturn_t {code}", "unknown Fabric Manager return code"))
    return FabricManagerError.for_code(code, f"Fabric Manager {doing}: {name} ({code}): {meaning}")


@attrs.frozen(kw_only=True)
class FmPciDevice:
    """``fmPciDevice_t``: a PCI address (a VF for ``fmActivateFabricPartitionWithVFs``)."""

    domain: int
    bus: int
    device: int
    function: int


@attrs.frozen(kw_only=True)
class FmGpuInfo:
    """``fmFabricPartitionGpuInfo_t``."""

    physical_id: int  # module id on H100 and later
    uuid: str = ""
    pci_bus_id: str = ""
    num_nvlinks_available: int = 0
    max_num_nvlinks: int = 0
    nvlink_line_rate_mbps: int = 0


@attrs.frozen(kw_only=True)
class FmPartitionInfo:
    """``fmFabricPartitionInfo_t``."""

    partition_id: int
    is_active: bool
    gpus: tuple[FmGpuInfo, ...]

    @property
    def physical_ids(self) -> tuple[int, ...]:
        """The members' physical (module) ids, ascending."""
        return tuple(sorted(g.physical_id for g in self.gpus))

    @property
    def nvlinks_per_gpu(self) -> int:
        """NVLinks each member has available inside the partition (the minimum)."""
        return min((g.num_nvlinks_available for g in self.gpus), default=0)


@runtime_checkable
class FabricManager(Protocol):
    """A connection to Fabric Manager through its SDK. Every call may raise :class:`FabricManagerError`."""

    def mode(self) -> FabricMode:
        """Fabric Manager's FABRIC_MODE."""
        ...

    def partitions(self) -> tuple[FmPartitionInfo, ...]:
        """``fmGetSupportedFabricPartitions``; NOT_SUPPORTED in bare-metal mode."""
        ...

    def activate(self, partition_id: int) -> None:
        """``fmActivateFabricPartition`` (Shared NVSwitch mode); IN_USE if it or its GPUs are active."""
        ...

    def activate_with_vfs(self, partition_id: int, vfs: Sequence[FmPciDevice]) -> None:
        """``fmActivateFabricPartitionWithVFs`` (vGPU mode): one VF per GPU, order significant."""
        ...

    def deactivate(self, partition_id: int) -> None:
        """``fmDeactivateFabricPartition``; UNINITIALIZED when the partition is not active (SDK quirk)."""
        ...

    def set_activated(self, partition_ids: Sequence[int]) -> None:
        """``fmSetActivatedFabricPartitions``: after an FM restart, the live partitions (may be none)."""
        ...

    def close(self) -> None:
        """Disconnect and shut the library down."""
        ...
