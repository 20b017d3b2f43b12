"""Named fault points: places in prepare and unprepare where a test may kill the process outright.

Crash consistency is only proven by crashing. Production code calls :func:`reach` with a name from
:data:`FAULT_POINTS` at every step after which a crash leaves a distinct state on the node (a durable
checkpoint write, one hardware change, a CDI spec write or removal).

This module only keeps the names and counts; it does no I/O of its own. A process edge arms one point
with :func:`arm` and says what happens there (the plugins read ``NVDRA_FAULT_POINT`` and SIGKILL
themselves: :mod:`nvdra.plugins.faults`). :func:`parse_fault` reads the variable's syntax: ``<name>``
fires the first time the point is reached, ``<name>:<N>`` the N-th time (counted per process, across
threads); any other value arms nothing.

Cost when nothing is armed: :func:`reach` is one ``is None`` test.
"""

from __future__ import annotations

__all__ = ["FAULT_ENV", "FAULT_POINTS", "FaultAction", "arm", "armed", "parse_fault", "reach"]

import itertools
import threading
from collections.abc import Callable, Mapping

FAULT_ENV = "NVDRA_FAULT_POINT"
"""The environment variable the process edge reads to arm a point (read there, never here)."""

FaultAction = Callable[[str, int], None]
"""What happens at the armed point: called with its name and how many times it was reached."""

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
    "after-checkpoint-shadow": "an in-place checkpoint write is in the shadow (synced), not yet in the file",
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


_ARMED: tuple[str, int] | None = None
_ACTION: FaultAction | None = None
_seen = itertools.count(1)  # times the armed point was reached
_lock = threading.Lock()


def arm(point: tuple[str, int] | None, action: FaultAction) -> None:
    """Arm ``point`` (from :func:`parse_fault`; None disarms) so that reaching it calls ``action``."""
    global _ARMED, _ACTION, _seen
    with _lock:
        _ARMED, _ACTION, _seen = point, action, itertools.count(1)


def armed() -> tuple[str, int] | None:
    """The point (and occurrence) this process will stop at, if any."""
    return _ARMED


def reach(name: str) -> None:
    """Mark that execution passed fault point ``name``; run the armed action if it is the armed one."""
    point, action = _ARMED, _ACTION
    if point is None or point[0] != name or action is None:
        return
    with _lock:
        seen = next(_seen)
    if seen >= point[1]:
        action(name, seen)
