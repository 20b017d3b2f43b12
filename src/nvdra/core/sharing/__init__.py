"""Pure sharing planners: time-slicing, MPS, and the dynamic-MIG partitionable layout.

Everything here turns inventory and configs into typed effect records (:mod:`nvdra.core.effects`) and
device dicts; executors in
``nvdra.nvml.executor`` and ``nvdra.plugins.gpu`` apply them.
"""

from __future__ import annotations

__all__ = [
    "MPS_KIND",
    "TIMESLICE_KIND",
    "DynamicMigLayout",
    "GpuSlice",
    "MigCandidate",
    "MpsDevice",
    "MpsPlan",
    "ShareLimits",
    "TimeSlice",
    "candidates_by_name",
    "counter_set_name",
    "gpu_counters",
    "mig_candidates",
    "mps_daemon_id",
    "plan_mps",
    "plan_time_slicing",
    "qualifies_for_dynamic_mig",
    "render_dynamic_mig",
    "resetless_toggle",
    "share_limits",
]

from nvdra.core.sharing.dynamic_mig import (
    DynamicMigLayout,
    GpuSlice,
    MigCandidate,
    candidates_by_name,
    counter_set_name,
    gpu_counters,
    mig_candidates,
    qualifies_for_dynamic_mig,
    render_dynamic_mig,
    resetless_toggle,
)
from nvdra.core.sharing.mps import (
    MPS_KIND,
    MpsDevice,
    MpsPlan,
    ShareLimits,
    mps_daemon_id,
    plan_mps,
    share_limits,
)
from nvdra.core.sharing.timeslicing import TIMESLICE_KIND, TimeSlice, plan_time_slicing
