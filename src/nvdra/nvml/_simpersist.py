"""The simulated node's hardware state as a file, so that it outlives the process that changed it.

On a real node the GPU keeps its MIG geometry, compute mode and time slice when the kubelet plugin is
killed; a simulated node must too, or crash-recovery tests prove nothing. :class:`SimulatedNvml` given a
``state_path`` restores the state from the file at construction and rewrites it after every change.

Format (JSON, one object)::

    {"kind": "nvdra.simulated-nvml", "version": 1,
     "gpus": [{"uuid": "GPU-…", "migCurrent": bool, "migPending": bool, "computeMode": int,
               "timeslice": int, "lost": bool, "processes": int,
               "gpuInstances": [{"giId": int, "profileId": int, "start": int,
                                 "computeInstances": [{"ciId": int, "processes": int}]}]}]}

Invariants: GPUs are matched by UUID (a GPU of the profile missing from the file keeps its profile
state; one in the file but not in the profile is an error); restoring goes through the same checks as
creating (profile ids, placements), so a file describing impossible hardware is refused with a
``ConfigError`` naming the file and field. Writes are atomic (temp file, fsync, rename): a crash leaves
the old or the new state, never a torn file.
"""

from __future__ import annotations

__all__ = ["GpuStateHolder", "dump_state", "read_state", "restore_gpu", "write_state"]

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from nvdra.core.devices import MigPlacement
from nvdra.core.errors import ConfigError
from nvdra.nvml._simstate import (
    FULL_CI_PROFILE,
    MigGeometry,
    SimulatedComputeInstance,
    SimulatedGpuInstance,
    mig_uuid,
)

_KIND = "nvdra.simulated-nvml"
_VERSION = 1


class GpuStateHolder(Protocol):
    """The mutable per-GPU record of the simulator (``_Gpu``), as far as persistence needs it."""

    geometry: MigGeometry
    mig_current: bool
    mig_pending: bool
    compute_mode: int
    timeslice: int
    lost: bool
    processes: int


def _gpu_json(uuid: str, gpu: GpuStateHolder) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "migCurrent": gpu.mig_current,
        "migPending": gpu.mig_pending,
        "computeMode": gpu.compute_mode,
        "timeslice": gpu.timeslice,
        "lost": gpu.lost,
        "processes": gpu.processes,
        "gpuInstances": [
            {
                "giId": gi.gi_id,
                "profileId": gi.profile_id,
                "start": gi.placement.start,
                "computeInstances": [
                    {"ciId": ci.ci_id, "processes": ci.processes} for ci in gi.compute_instances
                ],
            }
            for _, gi in sorted(gpu.geometry.instances.items())
        ],
    }


def dump_state(gpus: Sequence[tuple[str, GpuStateHolder]]) -> bytes:
    """The state file's bytes for ``(uuid, gpu)`` pairs."""
    doc = {"kind": _KIND, "version": _VERSION, "gpus": [_gpu_json(u, g) for u, g in gpus]}
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def write_state(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (the directory is created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> dict[str, Mapping[str, Any]] | None:
    """The per-GPU entries of a state file by UUID; None when there is no file yet.

    Raises:
        ConfigError: the file is unreadable, not JSON, or not a simulated-NVML state file.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(str(path), "unreadable", "a readable state file", reason=str(exc)) from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(str(path), "not JSON", "a simulated-NVML state file", reason=str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("kind") != _KIND or doc.get("version") != _VERSION:
        raise ConfigError(
            f"{path}:$.kind/version",
            f"{doc.get('kind') if isinstance(doc, dict) else type(doc).__name__}",
            f"{_KIND} version {_VERSION}",
        )
    gpus = doc.get("gpus")
    if not isinstance(gpus, list) or not all(
        isinstance(g, dict) and isinstance(g.get("uuid"), str) for g in gpus
    ):
        raise ConfigError(f"{path}:$.gpus", "malformed", "a list of objects with a uuid")
    return {g["uuid"]: g for g in gpus}


def _field(entry: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}", repr(value), typ.__name__)
    return value


def restore_gpu(gpu: GpuStateHolder, entry: Mapping[str, Any], where: str) -> None:
    """Set ``gpu`` to the state ``entry`` describes, checking placements like a create would.

    Raises:
        ConfigError: a field is missing or of the wrong type, or the geometry is impossible.
    """
    geometry = gpu.geometry
    instances: dict[int, SimulatedGpuInstance] = {}
    for i, gi in enumerate(_field(entry, "gpuInstances", list, where)):
        at = f"{where}.gpuInstances[{i}]"
        if not isinstance(gi, dict):
            raise ConfigError(at, repr(gi), "an object")
        profile = geometry.profile(_field(gi, "profileId", int, at))
        start = _field(gi, "start", int, at)
        gi_id = _field(gi, "giId", int, at)
        if profile is None or start not in profile.placement_starts or gi_id in instances:
            raise ConfigError(at, f"profile {gi.get('profileId')} at {start}", "a GI this GPU model can hold")
        placement = MigPlacement(start=start, size=profile.memory_slices)
        cis = tuple(
            SimulatedComputeInstance(
                ci_id=_field(ci, "ciId", int, at),
                ci_profile_id=FULL_CI_PROFILE.get(profile.compute_slices, 0),
                uuid=mig_uuid(geometry.parent_uuid, gi_id, _field(ci, "ciId", int, at), placement),
                processes=_field(ci, "processes", int, at),
            )
            for ci in _field(gi, "computeInstances", list, at)
        )
        instances[gi_id] = SimulatedGpuInstance(
            gi_id=gi_id,
            profile_id=profile.id,
            placement=placement,
            compute_slices=profile.compute_slices,
            compute_instances=cis,
        )
    used: set[int] = set()
    for gi in instances.values():
        if used & set(gi.placement.slices):
            raise ConfigError(f"{where}.gpuInstances", f"GI {gi.gi_id}", "GPU instances that do not overlap")
        used |= set(gi.placement.slices)
    gpu.mig_current = _field(entry, "migCurrent", bool, where)
    gpu.mig_pending = _field(entry, "migPending", bool, where)
    gpu.compute_mode = _field(entry, "computeMode", int, where)
    gpu.timeslice = _field(entry, "timeslice", int, where)
    gpu.lost = _field(entry, "lost", bool, where)
    gpu.processes = _field(entry, "processes", int, where)
    geometry.instances = instances
