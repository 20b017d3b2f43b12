"""The nvdra error tree.

Every error nvdra raises on purpose derives from :class:`NvdraError`. Foreign errors (pynvml's
``NVMLError_*``, the kubernetes client's ``ApiException``, grpc's ``RpcError``) are translated once,
at the module that owns that SDK, and chained as ``__cause__``.

The tree::

    NvdraError                       abstract root; never raised itself
    ├── UserError                    the caller's input is wrong: retrying the same input fails again
    │   ├── ConfigError              an opaque config or flag value is invalid (carries path/value/allowed)
    │   ├── FeatureGateError         unknown gate, bad value, or a gate dependency/exclusion is violated
    │   └── ClaimError               a ResourceClaim cannot be prepared as allocated (no allocation,
    │                                UID mismatch, device held by another claim, config kind mismatch)
    └── SystemError_                 the node or a service failed: retrying may succeed
        ├── ReturnCodeError          an SDK call returned an error value (``code``); one family per SDK
        │   ├── NvmlError            an NVML call failed (``code`` holds the NVML return value)
        │   │   ├── NvmlLibraryNotFound  libnvidia-ml.so.1 was not found (names the paths searched)
        │   │   ├── NvmlNotFound, NvmlNotSupported, NvmlInvalidArgument, NvmlInsufficientResources,
        │   │   └── NvmlInUse, NvmlGpuLost, NvmlNoPermission, NvmlUninitialized, NvmlResetRequired
        │   └── FabricManagerError   (nvdra.fabric.manager) a Fabric Manager SDK call failed (``fmReturn_t``)
        ├── KubeApiError             the API server answered an error (``status`` holds the HTTP code)
        │   ├── KubeNotFound (404), KubeConflict (409), KubeUnavailable (connect error, 429, 5xx)
        ├── CheckpointError          the checkpoint file is unreadable or corrupt
        ├── CdiError                 a CDI spec could not be rendered or written
        └── HostError                a host command or file operation failed

``UserError`` is what a kubelet plugin reports per claim without retrying internally; ``SystemError_``
is what it may retry. (The trailing underscore keeps the builtin ``SystemError`` unshadowed.)
"""

from __future__ import annotations

__all__ = [
    "CdiError",
    "CheckpointError",
    "ClaimError",
    "ConfigError",
    "FeatureGateError",
    "HostError",
    "KubeApiError",
    "KubeConflict",
    "KubeNotFound",
    "KubeUnavailable",
    "NvdraError",
    "NvmlError",
    "NvmlGpuLost",
    "NvmlInUse",
    "NvmlInsufficientResources",
    "NvmlInvalidArgument",
    "NvmlLibraryNotFound",
    "NvmlNoPermission",
    "NvmlNotFound",
    "NvmlNotSupported",
    "NvmlResetRequired",
    "NvmlUninitialized",
    "ReturnCodeError",
    "SystemError_",
    "UserError",
    "nvml_error_for_code",
]

from typing import Any, ClassVar, Self


class NvdraError(Exception):
    """Root of every error nvdra raises on purpose. Abstract: raise a subclass."""

    def __init__(self, *args: object) -> None:
        if type(self) in _ABSTRACT:
            raise TypeError(f"{type(self).__name__} is abstract; raise one of its subclasses")
        super().__init__(*args)


class UserError(NvdraError):
    """The input is wrong; the same input will fail again."""


class SystemError_(NvdraError):  # the underscore avoids shadowing the builtin
    """The node or a service failed; retrying may succeed."""


_ABSTRACT: frozenset[type[NvdraError]] = frozenset({NvdraError, UserError, SystemError_})


class ConfigError(UserError, ValueError):
    """An opaque config, flag or profile value is invalid.

    Attributes:
        path: where the bad value sits, as a JSONPath-like string (``$.sharing.strategy``).
        value: the offending value (``None`` when a field is missing).
        allowed: a short phrase describing what is allowed.
    """

    def __init__(self, path: str, value: Any, allowed: str, *, reason: str = "") -> None:
        self.path = path
        self.value = value
        self.allowed = allowed
        self.reason = reason
        super().__init__(self._render())

    def _render(self) -> str:
        what = self.reason or "invalid value"
        return f"{self.path}: {what} {self.value!r}; allowed: {self.allowed}"


class FeatureGateError(UserError, ValueError):
    """A feature-gate setting is unknown, malformed, or violates a dependency or exclusion rule."""


class ClaimError(UserError):
    """A ResourceClaim cannot be prepared as allocated."""


class ReturnCodeError(SystemError_):
    """Root of an SDK's error family (NVML, Fabric Manager), keyed by the SDK's numeric return value.

    A direct subclass is a family; its subclasses name their return value as a class keyword
    (``class NvmlX(NvmlError, code=N)``), which registers them for the family's :meth:`for_code`. A
    subclass without ``code=`` keeps its parent's value and is not registered. ``code`` on an instance
    may differ from its class's (a plain family error carries whatever value the SDK returned).
    """

    code: int
    _by_code: ClassVar[dict[int, type[ReturnCodeError]]]

    def __init_subclass__(cls, *, code: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if ReturnCodeError in cls.__bases__:
            cls._by_code = {}
        if code is None:
            return
        taken = cls._by_code.get(code)
        if taken is not None:
            raise TypeError(f"{cls.__name__}: return value {code} is already {taken.__name__}'s")
        cls.code = code
        cls._by_code[code] = cls

    def __init__(self, message: str, *, code: int | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message)

    @classmethod
    def for_code(cls, code: int, message: str) -> Self:
        """The most specific error of this family for ``code``: its registered class, else ``cls``."""
        found = cls._by_code.get(code)
        if found is not None and issubclass(found, cls):
            return found(message, code=code)
        return cls(message, code=code)


class NvmlError(ReturnCodeError):
    """An NVML call failed. ``code`` is the NVML return value (see nvml.h)."""

    code = 999


class NvmlUninitialized(NvmlError, code=1):
    """NVML_ERROR_UNINITIALIZED: NVML was not initialised."""


class NvmlInvalidArgument(NvmlError, code=2):
    """NVML_ERROR_INVALID_ARGUMENT: an argument is out of range (e.g. a device index)."""


class NvmlNotSupported(NvmlError, code=3):
    """NVML_ERROR_NOT_SUPPORTED: the device or driver does not support the call."""


class NvmlNoPermission(NvmlError, code=4):
    """NVML_ERROR_NO_PERMISSION: the caller lacks the privilege the call needs."""


class NvmlNotFound(NvmlError, code=6):
    """NVML_ERROR_NOT_FOUND: the object asked for does not exist."""


class NvmlLibraryNotFound(NvmlError, code=12):
    """NVML_ERROR_LIBRARY_NOT_FOUND: no loadable libnvidia-ml."""


class NvmlGpuLost(NvmlError, code=15):
    """NVML_ERROR_GPU_IS_LOST: the GPU fell off the bus or stopped answering."""


class NvmlResetRequired(NvmlError, code=16):
    """NVML_ERROR_RESET_REQUIRED: the GPU needs a reset first."""


class NvmlInUse(NvmlError, code=19):
    """NVML_ERROR_IN_USE: the operation is blocked by a running process or a held instance."""


class NvmlInsufficientResources(NvmlError, code=23):
    """NVML_ERROR_INSUFFICIENT_RESOURCES: not enough free resources (e.g. MIG slices)."""


def nvml_error_for_code(code: int, message: str) -> NvmlError:
    """Build the most specific :class:`NvmlError` for an NVML return code.

    Args:
        code: the NVML return value (``nvmlReturn_t``).
        message: what was being attempted, for the error text.

    Returns:
        An instance of the matching subclass, or a plain :class:`NvmlError` carrying ``code``.
    """
    return NvmlError.for_code(code, message)


class KubeApiError(SystemError_):
    """The Kubernetes API server answered with an error (``status`` is the HTTP status, 0 = no answer)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


class KubeNotFound(KubeApiError):
    """404: the object does not exist."""


class KubeConflict(KubeApiError):
    """409: a precondition (resourceVersion, UID) failed or the object already exists."""


class KubeUnavailable(KubeApiError):
    """The API server could not be reached, or answered 429 or 5xx."""


class CheckpointError(SystemError_):
    """The checkpoint file is unreadable, corrupt, or of an unknown format."""


class CdiError(SystemError_):
    """A CDI spec could not be rendered, validated or written."""


class HostError(SystemError_):
    """A host command or file operation failed."""
