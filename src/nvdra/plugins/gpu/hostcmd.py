"""Host commands of the GPU plugin: ``nvidia-smi`` (compute mode, time slice) and ``mount``/``umount``.

One abstraction, two implementations:

- :class:`HostCommands` runs the real programs. ``nvidia-smi`` is taken from the driver root, with
  ``LD_PRELOAD`` pointing at the driver root's ``libnvidia-ml.so.1`` as upstream does, so the tool and
  the library always match the running kernel driver whatever the container image holds;
- :class:`SimulatedHostCommands` parses the same argv and applies it to a :class:`SimulatedNvml`:
  ``-i <uuid> -c <MODE>`` changes the simulated GPU's compute mode, ``compute-policy -i <uuid>
  --set-timeslice <n>`` its time slice (held by the simulated GPU, so it persists with the rest of
  its state: NVML has no call for it, only nvidia-smi does); mounts are recorded. Every command is
  logged in :attr:`SimulatedHostCommands.commands`.

Invariants: argv only (no shell); a failing command raises :class:`HostError` naming the command and
its output; a command the simulator does not understand is an error, never silently accepted.
"""

from __future__ import annotations

__all__ = [
    "COMPUTE_MODES",
    "HostCommandRunner",
    "HostCommands",
    "SimulatedHostCommands",
    "set_compute_mode",
    "set_timeslice",
]

import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from nvdra.core.errors import HostError, NvmlError
from nvdra.nvml import SimulatedNvml

COMPUTE_MODES: dict[str, int] = {"DEFAULT": 0, "PROHIBITED": 2, "EXCLUSIVE_PROCESS": 3}
"""``nvidia-smi -c`` names → nvmlComputeMode_t."""

_LIB_DIRS = ("usr/lib64", "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib", "lib64")


class HostCommandRunner(Protocol):
    """Runs host commands; see the module docstring."""

    def nvidia_smi(self, args: Sequence[str]) -> str:
        """Run ``nvidia-smi <args>``; return its stdout; raise HostError on failure."""
        ...

    def run(self, argv: Sequence[str]) -> str:
        """Run another host command (``mount``, ``umount``); raise HostError on failure."""
        ...


def set_compute_mode(runner: HostCommandRunner, uuid: str, mode: str) -> None:
    """``nvidia-smi -i <uuid> -c <mode>``."""
    runner.nvidia_smi(["-i", uuid, "-c", mode])


def set_timeslice(runner: HostCommandRunner, uuid: str, value: int) -> None:
    """``nvidia-smi compute-policy -i <uuid> --set-timeslice <value>`` (0 Default … 3 Long)."""
    runner.nvidia_smi(["compute-policy", "-i", uuid, "--set-timeslice", str(value)])


class HostCommands:
    """The real runner (subprocess, argv, bounded by a timeout)."""

    def __init__(self, driver_root: Path, *, timeout: float = 30.0) -> None:
        self.driver_root = driver_root
        self.timeout = timeout

    def _find(self, relative: Sequence[str], name: str) -> Path | None:
        return next(
            (self.driver_root / d / name for d in relative if (self.driver_root / d / name).exists()), None
        )

    def nvidia_smi(self, args: Sequence[str]) -> str:
        """Run the driver root's ``nvidia-smi`` with its NVML preloaded."""
        binary = self._find(("usr/bin", "bin"), "nvidia-smi")
        if binary is None:
            raise HostError(f"nvidia-smi not found under driver root {self.driver_root} (usr/bin, bin)")
        env = dict(os.environ)
        lib = self._find(_LIB_DIRS, "libnvidia-ml.so.1")
        if lib is not None:
            env["LD_PRELOAD"] = str(lib)
        return self._exec([str(binary), *args], env)

    def run(self, argv: Sequence[str]) -> str:
        """Run a host command as given."""
        return self._exec(list(argv), None)

    def _exec(self, argv: list[str], env: dict[str, str] | None) -> str:
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostError(f"cannot run {' '.join(argv)}: {exc}") from exc
        if done.returncode != 0:
            raise HostError(
                f"{' '.join(argv)} failed with exit code {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout


class SimulatedHostCommands:
    """The simulated node's runner: nvidia-smi argv applied to a :class:`SimulatedNvml`."""

    def __init__(self, backend: SimulatedNvml) -> None:
        self.backend = backend
        self.commands: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def timeslice(self, uuid: str) -> int:
        """GPU ``uuid``'s time slice as ``nvidia-smi compute-policy -l`` reports it (0 if never set)."""
        return self.backend.timeslice(uuid)

    def nvidia_smi(self, args: Sequence[str]) -> str:
        """Apply ``-i <uuid> -c <MODE>`` or ``compute-policy -i <uuid> --set-timeslice <n>``."""
        argv = tuple(args)
        with self._lock:
            self.commands.append(("nvidia-smi", *argv))
            try:
                return self._apply(argv)
            except NvmlError as exc:
                raise HostError(f"nvidia-smi {' '.join(argv)} failed: {exc}") from exc

    def _apply(self, argv: tuple[str, ...]) -> str:
        if len(argv) == 4 and argv[0] == "-i" and argv[2] == "-c":
            mode = COMPUTE_MODES.get(argv[3].upper())
            if mode is None:
                raise HostError(
                    f"nvidia-smi: invalid compute mode {argv[3]!r} (allowed: {sorted(COMPUTE_MODES)})"
                )
            self.backend.set_compute_mode(self.backend.index_by_uuid(argv[1]), mode)
            return f"Compute mode set to {argv[3].upper()} for GPU {argv[1]}.\n"
        if len(argv) == 5 and argv[:2] == ("compute-policy", "-i") and argv[3] == "--set-timeslice":
            if argv[4] not in ("0", "1", "2", "3"):
                raise HostError(f"nvidia-smi compute-policy: invalid time slice {argv[4]!r} (allowed 0..3)")
            self.backend.index_by_uuid(argv[2])  # NOT_FOUND for an unknown GPU, as the real tool
            self.backend.set_timeslice(argv[2], int(argv[4]))
            return f"Set timeslice to {argv[4]} for GPU {argv[2]}.\n"
        raise HostError(f"simulated nvidia-smi does not understand: nvidia-smi {' '.join(argv)}")

    def run(self, argv: Sequence[str]) -> str:
        """Record ``mount``/``umount`` (the simulated node has no mounts to make); others are errors."""
        with self._lock:
            self.commands.append(tuple(argv))
        if not argv or argv[0] not in ("mount", "umount"):
            raise HostError(f"simulated host does not run {' '.join(argv)}")
        return ""
