"""Named fault points: places in prepare and unprepare where a test may kill the process outright.

Crash consistency is only proven by crashing. Production code calls :func:`reach` with a name from
:data:`FAULT_POINTS` at every step after which a crash leaves a distinct state on the node (a durable
checkpoint write, one hardware change, a CDI spec write or removal). When the environment variable
``NVDRA_FAULT_POINT`` names that point, the process sends itself SIGKILL there: no ``finally``, no
atexit, no flush — exactly what the kernel's OOM killer or a node power cut leaves behind.

``NVDRA_FAULT_POINT=<name>`` fires the first time the point is reached, ``<name>:<N>`` the N-th time
(counted per process, across threads). Any other value arms nothing.

Cost when off: the variable is read once at import; :func:`reach` is then one ``is None`` test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Mapping

__all__ = ["FAULT_ENV", "FAULT_POINTS", "armed", "parse_fault", "reach"]

FAULT_ENV = "NVDRA_FAULT_POINT"

FAULT_POINTS: Mapping[str, str] = {
    "after-prepare-started": "the PrepareStarted checkpoint entries of a prepare call are durable",
    "after-timeslice-set": "one GPU's compute mode and time slice were set (per GPU of a record)",
    "after-mps-started": "the MPS control-daemon Deployment was created (before it is ready)",
    "after-mig-mode-enabled": "MIG mode was switched on for a dynamic MIG device",
    "after-mig-gi-created": "the GPU instance of a dynamic MIG device exists, its compute instance not yet",
    "after-mig-ci-created": "the compute instance exists too: the MIG device is complete",
    "after-fm-activated": "Fabric Manager activated the claim's NVLink partition",
    "after-vfio-unbound": "the GPU was unbound from its driver, not yet bound to the new one",
    "after-vfio-bound": "the GPU is bound to vfio-pci",
    "after-cdi-written": "a claim's CDI spec is durable",
    "before-rename": "an atomic write's temp file is complete and synced, not yet renamed into place",
    "after-prepare-completed": "the PrepareCompleted checkpoint entries are durable (the answer is not sent)",
    "after-undo": "one effect record was undone (unprepare, rollback of a failed or half-done prepare)",
    "after-mig-ci-destroyed": "a MIG device's compute instance is gone, its GPU instance not yet",
    "after-cdi-removed": "a claim's CDI spec was removed",
    "after-unprepare-checkpoint": "the checkpoint without the unprepared claims is durable",
}
"""Every fault point, with the state a crash there leaves (docs/architecture.md lists the invariants)."""


def parse_fault(value: str) -> tuple[str, int] | None:
    """``"name"`` → (name, 1); ``"name:N"`` → (name, N); empty or malformed → None (nothing armed)."""
    name, sep, count = value.strip().partition(":")
    if not name:
        return None
    if not sep:
        return name, 1
    try:
        n = int(count)
    except ValueError:
        return None
    return (name, n) if n >= 1 else None


_ARMED = parse_fault(os.environ.get(FAULT_ENV, ""))
_seen = itertools.count(1)  # times the armed point was reached
_lock = threading.Lock()


def armed() -> tuple[str, int] | None:
    """The point (and occurrence) this process will die at, if any."""
    return _ARMED


def reach(name: str) -> None:
    """Mark that execution passed fault point ``name``; SIGKILL this process if it is the armed one."""
    if _ARMED is None or _ARMED[0] != name:
        return
    with _lock:
        seen = next(_seen)
    if seen < _ARMED[1]:
        return
    # Say why the process died (the test reads it from the log), then die without any cleanup.
    with contextlib.suppress(OSError):
        os.write(2, f"nvdra: fault point {name!r} reached ({seen}): SIGKILL\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
