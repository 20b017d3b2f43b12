"""nvdra.nvml: NVML backends (real and simulated), simulated node profiles, discovery, conformance.

- :class:`NvmlBackend` is the narrow Protocol everything above talks to; :class:`PynvmlBackend`
  implements it over the real library, :class:`SimulatedNvml` over a node profile
  (:func:`load_profile`, :data:`PROFILE_NAMES`).
- :func:`discover_inventory` turns a backend into a :class:`nvdra.core.devices.Inventory`.
- :func:`make_simulated_driver_root` lays out the host files of a simulated node.
- :func:`run_conformance` checks any backend against NVML's behaviour.
- :func:`nvml_session` is how every process opens a backend: init, use, shutdown, first cause kept.

Importing this package loads neither pynvml nor the NVML library: that happens on ``init()``.
"""

from __future__ import annotations

__all__ = [
    "PROFILE_NAMES",
    "CheckResult",
    "DeviceIdentity",
    "FabricInfoRecord",
    "GpuInstanceProfileInfo",
    "GpuInstanceRecord",
    "MigDeviceRecord",
    "MigModeState",
    "NodeProfile",
    "NvLinkRecord",
    "NvmlBackend",
    "PciInfo",
    "PynvmlBackend",
    "SimulatedGpuState",
    "SimulatedNodeState",
    "SimulatedNvml",
    "discover_gpu",
    "discover_inventory",
    "load_profile",
    "make_simulated_driver_root",
    "mig_profile_name",
    "nvml_session",
    "refresh_mig_capabilities",
    "run_conformance",
]

from nvdra.nvml._backend import (
    DeviceIdentity,
    FabricInfoRecord,
    GpuInstanceProfileInfo,
    GpuInstanceRecord,
    MigDeviceRecord,
    MigModeState,
    NvLinkRecord,
    NvmlBackend,
    PciInfo,
)
from nvdra.nvml._conformance import CheckResult, run_conformance
from nvdra.nvml._driver_root import make_simulated_driver_root, refresh_mig_capabilities
from nvdra.nvml._profile import PROFILE_NAMES, NodeProfile, load_profile
from nvdra.nvml._pynvml import PynvmlBackend
from nvdra.nvml._session import nvml_session
from nvdra.nvml._simstate import SimulatedGpuState, SimulatedNodeState
from nvdra.nvml._simulated import SimulatedNvml
from nvdra.nvml.discovery import discover_gpu, discover_inventory, mig_profile_name

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__  # show the public path in reprs and docs
del _name, _obj
