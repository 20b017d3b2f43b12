"""nvdra.fabric: NVLink topology, partition catalogs, the partition planner, and Fabric Manager.

- :class:`Topology` — the NVLink graph of a node's GPUs, with bandwidth (GB/s, as NVIDIA quotes it)
  and latency by path class.
- :class:`PartitionCatalog` — a node's partitions: Fabric Manager's listing, its default board
  tables (:data:`BOARD_TABLES`), or partitions derived from the NVLink graph.
- :func:`plan_partition` — the pure, optimal, deterministic planner.
- :data:`POLICIES` — what each virtualization model means for partitions.
- :mod:`nvdra.fabric.attributes` — the published attribute names; :mod:`nvdra.fabric.requirements` —
  what a claim's selectors and constraints must say for its ``fabricTopologyConfig`` (and ``--fix``).
- :class:`FabricManager` — the libnvfm surface; :class:`LibnvfmFabricManager` (ctypes) and
  :class:`SimulatedFabricManager` implement it.

Imports only :mod:`nvdra.core`; nothing here loads a native library at import.
"""

from __future__ import annotations

__all__ = [
    "BOARD_TABLES",
    "FABRIC_MODE_ENV",
    "FM_RETURN_NAMES",
    "LINK_RATES",
    "PATH_LATENCY_MS",
    "POLICIES",
    "BoardTable",
    "FabricManager",
    "FabricManagerError",
    "FabricMode",
    "FmBadParam",
    "FmGpuInfo",
    "FmInUse",
    "FmLibraryNotFound",
    "FmNotConfigured",
    "FmNotSupported",
    "FmPartitionInfo",
    "FmPciDevice",
    "FmUninitialized",
    "GpuLinks",
    "LibnvfmFabricManager",
    "LinkRate",
    "ModelPolicy",
    "Partition",
    "PartitionCatalog",
    "PartitionChoice",
    "PartitionRequest",
    "PathClass",
    "SimulatedFabricManager",
    "Topology",
    "describe_mode",
    "detect_board",
    "fm_address",
    "fm_error_for_code",
    "nvswitch_functions",
    "objective",
    "plan_partition",
    "policy_for",
    "simulated_fabric_mode",
]

from nvdra.fabric.catalog import BOARD_TABLES, BoardTable, Partition, PartitionCatalog, detect_board
from nvdra.fabric.libnvfm import LibnvfmFabricManager, fm_address
from nvdra.fabric.manager import (
    FM_RETURN_NAMES,
    FabricManager,
    FabricManagerError,
    FmBadParam,
    FmGpuInfo,
    FmInUse,
    FmLibraryNotFound,
    FmNotConfigured,
    FmNotSupported,
    FmPartitionInfo,
    FmPciDevice,
    FmUninitialized,
    fm_error_for_code,
)
from nvdra.fabric.models import POLICIES, FabricMode, ModelPolicy, describe_mode, policy_for
from nvdra.fabric.planner import PartitionChoice, PartitionRequest, objective, plan_partition
from nvdra.fabric.simulated import FABRIC_MODE_ENV, SimulatedFabricManager, simulated_fabric_mode
from nvdra.fabric.topology import (
    LINK_RATES,
    PATH_LATENCY_MS,
    GpuLinks,
    LinkRate,
    PathClass,
    Topology,
    nvswitch_functions,
)
