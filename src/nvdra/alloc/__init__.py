"""nvdra.alloc: the scheduler's structured-parameters allocation, with Kubernetes' CEL, offline.

Pure and importable: give it ResourceSlices, DeviceClasses, claims and what is already allocated
(API-shaped dicts), get the ``status.allocation`` the scheduler would write, or an explanation of
why there is none, per request and per candidate device. Imports ``nvdra.core`` and the CEL engine
(``common-expression-language``, in :mod:`nvdra.alloc._cel` only).
"""

__all__ = [
    "COST_LIMIT",
    "AllocationInputError",
    "Allocator",
    "CandidateVerdict",
    "CelCompileError",
    "CelError",
    "CelEvalError",
    "ClaimSpec",
    "Comparison",
    "DeviceId",
    "DeviceInput",
    "Diagnosis",
    "Outcome",
    "Quantity",
    "RequestDiagnosis",
    "Selector",
    "Semver",
    "allocated_devices",
    "builtin_device_classes",
    "capacity_consumption",
    "compile_selector",
    "consumed_capacity",
    "diagnose",
    "parse_claim",
    "parse_semver",
]

from nvdra.alloc._cel import (
    COST_LIMIT,
    CelCompileError,
    CelError,
    CelEvalError,
    Comparison,
    DeviceInput,
    Selector,
    compile_selector,
)
from nvdra.alloc.allocator import Allocator, Outcome
from nvdra.alloc.capacity import capacity_consumption, consumed_capacity
from nvdra.alloc.classes import builtin_device_classes
from nvdra.alloc.explain import CandidateVerdict, Diagnosis, RequestDiagnosis, diagnose
from nvdra.alloc.model import (
    AllocationInputError,
    ClaimSpec,
    DeviceId,
    allocated_devices,
    parse_claim,
)
from nvdra.alloc.values import Quantity, Semver, parse_semver
