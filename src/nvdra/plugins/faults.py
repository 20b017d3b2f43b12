"""Fault injection at the process edge: ``NVDRA_FAULT_POINT`` arms a point of :mod:`nvdra.core.faults`.

At the armed point the process sends itself SIGKILL: no ``finally``, no atexit, no flush — exactly
what the kernel's OOM killer or a node power cut leaves behind. The fault-matrix tests set the variable
on the real console scripts and read the line written to stderr just before.
"""

from __future__ import annotations

__all__ = ["arm_from_environment", "kill_self"]

import contextlib
import os
import signal
from collections.abc import Mapping

from nvdra.core.faults import FAULT_ENV, arm, parse_fault


def kill_self(name: str, seen: int) -> None:
    """Say why the process dies (the test reads it from the log), then die without any cleanup."""
    with contextlib.suppress(OSError):
        os.write(2, f"nvdra: fault point {name!r} reached ({seen}): SIGKILL\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


def arm_from_environment(environ: Mapping[str, str] | None = None) -> None:
    """Arm the point ``NVDRA_FAULT_POINT`` names (if any) to SIGKILL this process there."""
    env = os.environ if environ is None else environ
    point = parse_fault(env.get(FAULT_ENV, ""))
    if point is not None:
        arm(point, kill_self)
