"""MIG geometry of one simulated GPU: GPU instances, compute instances and the rules NVML enforces.

The rules (nvidia-hardware §2.1-2.3), in the order they are checked on create:
1. the profile id must be one of the GPU's profiles, the start one of its placement starts
   (else INVALID_ARGUMENT);
2. the new GI's memory slices must not overlap an existing GI, the profile's instance count must
   not be exhausted, and the compute slices of all GIs must not exceed the GPU's compute slices
   (else INSUFFICIENT_RESOURCES).

GI ids follow the pattern observed on A100 (§2.3): on an 8-memory-slice GPU the ids form a binary
tree over the slices: 0 = the whole GPU, 1-2 = halves (given lowest-free, not tied to the start),
3-6 = quarters (``3 + start // 2``), 7-14 = eighths (``7 + start``). Other geometries get the lowest
free id. Each GI holds at most one compute instance here (the full-size one), with CI id 0.
MIG UUIDs are name-based (uuid5, version nibble 5) from the parent UUID, GI/CI ids and placement,
so they are deterministic. The class is not locked: :class:`SimulatedNvml` serialises access.
"""

from __future__ import annotations

__all__ = [
    "MigGeometry",
    "SimulatedComputeInstance",
    "SimulatedGpuInstance",
    "SimulatedGpuState",
    "SimulatedNodeState",
    "mig_uuid",
]

import uuid as uuid_mod

import attrs

from nvdra.core.devices import MigPlacement
from nvdra.core.errors import (
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNotFound,
)
from nvdra.nvml._backend import GpuInstanceRecord
from nvdra.nvml._profile import GpuModel, MigProfileSpec

_MIG_NAMESPACE = uuid_mod.UUID("6c0f5e1e-1d0b-4f7c-9d55-2a3f6b1c9e40")

# nvmlComputeInstanceProfile enum of the full-size CI for a GI of N compute slices.
FULL_CI_PROFILE: dict[int, int] = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


def mig_uuid(parent_uuid: str, gi_id: int, ci_id: int, placement: MigPlacement) -> str:
    """The simulated MIG UUID: ``MIG-`` + a name-based (version 5) UUID."""
    key = f"{parent_uuid}/gi{gi_id}/ci{ci_id}/{placement.start}+{placement.size}"
    return f"MIG-{uuid_mod.uuid5(_MIG_NAMESPACE, key)}"


@attrs.frozen(kw_only=True)
class SimulatedComputeInstance:
    """A compute instance as the simulator holds it."""

    ci_id: int
    ci_profile_id: int
    uuid: str
    processes: int = 0


@attrs.frozen(kw_only=True)
class SimulatedGpuInstance:
    """A GPU instance as the simulator holds it (a snapshot: change it with ``attrs.evolve``)."""

    gi_id: int
    profile_id: int
    placement: MigPlacement
    compute_slices: int
    compute_instances: tuple[SimulatedComputeInstance, ...] = ()


class MigGeometry:
    """The GPU instances of one GPU and the create/destroy rules."""

    def __init__(self, model: GpuModel, parent_uuid: str) -> None:
        self.model = model
        self.parent_uuid = parent_uuid
        self.instances: dict[int, SimulatedGpuInstance] = {}

    # -- queries ---------------------------------------------------------------------------------
    def profile(self, profile_id: int) -> MigProfileSpec | None:
        """The model's profile with this id."""
        return next((p for p in self.model.mig_profiles if p.id == profile_id), None)

    def gpu_instance_records(self) -> tuple[GpuInstanceRecord, ...]:
        """Every GI as the backend reports it, ordered by GI id (bare GIs included)."""
        return tuple(
            GpuInstanceRecord(gi_id=gi.gi_id, profile_id=gi.profile_id, placement=gi.placement)
            for _, gi in sorted(self.instances.items())
        )

    def used_memory_slices(self) -> set[int]:
        """Memory slices covered by existing GIs."""
        return {s for gi in self.instances.values() for s in gi.placement.slices}

    def used_compute_slices(self) -> int:
        """Compute slices taken by existing GIs."""
        return sum(gi.compute_slices for gi in self.instances.values())

    def remaining_capacity(self, profile: MigProfileSpec) -> int:
        """How many more GIs of ``profile`` fit now (free placements, instance count, compute slices)."""
        used = self.used_memory_slices()
        free = 0
        for start in profile.placement_starts:
            slices = set(range(start, start + profile.memory_slices))
            if not slices & used:
                free += 1
                used |= slices
        existing = sum(1 for gi in self.instances.values() if gi.profile_id == profile.id)
        compute_left = self.model.mig_compute_slices - self.used_compute_slices()
        return max(0, min(free, profile.instance_count - existing, compute_left // profile.compute_slices))

    # -- GPU instances ---------------------------------------------------------------------------
    def create_gpu_instance(self, profile_id: int, start: int) -> int:
        """Create a GI; returns its id. Raises INVALID_ARGUMENT or INSUFFICIENT_RESOURCES (see module)."""
        profile = self.profile(profile_id)
        if profile is None:
            raise NvmlInvalidArgument(
                f"GPU instance profile id {profile_id} is not offered by {self.model.name}"
            )
        if start not in profile.placement_starts:
            raise NvmlInvalidArgument(
                f"placement start {start} is not a possible placement of profile {profile_id} "
                f"(possible: {list(profile.placement_starts)})"
            )
        placement = MigPlacement(start=start, size=profile.memory_slices)
        clash = set(placement.slices) & self.used_memory_slices()
        if clash:
            raise NvmlInsufficientResources(f"memory slices {sorted(clash)} are used by another GPU instance")
        existing = sum(1 for gi in self.instances.values() if gi.profile_id == profile_id)
        if existing >= profile.instance_count:
            raise NvmlInsufficientResources(
                f"profile {profile_id} allows {profile.instance_count} instance(s); {existing} exist"
            )
        if self.used_compute_slices() + profile.compute_slices > self.model.mig_compute_slices:
            raise NvmlInsufficientResources(
                f"not enough compute slices: {self.used_compute_slices()} of "
                f"{self.model.mig_compute_slices} used, profile needs {profile.compute_slices}"
            )
        gi_id = self._next_gi_id(placement)
        self.instances[gi_id] = SimulatedGpuInstance(
            gi_id=gi_id, profile_id=profile_id, placement=placement, compute_slices=profile.compute_slices
        )
        return gi_id

    def _next_gi_id(self, placement: MigPlacement) -> int:
        taken = set(self.instances)
        if self.model.mig_memory_slices == 8:
            if placement.size == 8:
                return 0
            if placement.size == 2:
                return 3 + placement.start // 2
            if placement.size == 1:
                return 7 + placement.start
            if placement.size == 4:
                return next(i for i in (1, 2) if i not in taken)
        return next(i for i in range(len(taken) + 1) if i not in taken)

    def destroy_gpu_instance(self, gi_id: int) -> None:
        """Destroy a GI: NOT_FOUND if unknown, IN_USE while it holds compute instances."""
        gi = self._gi(gi_id)
        if gi.compute_instances:
            ids = [ci.ci_id for ci in gi.compute_instances]
            raise NvmlInUse(f"GPU instance {gi_id} still holds compute instance(s) {ids}")
        del self.instances[gi_id]

    def _gi(self, gi_id: int) -> SimulatedGpuInstance:
        gi = self.instances.get(gi_id)
        if gi is None:
            raise NvmlNotFound(f"no GPU instance with id {gi_id}")
        return gi

    # -- compute instances -----------------------------------------------------------------------
    def create_compute_instance(self, gi_id: int) -> SimulatedComputeInstance:
        """Create the full-size CI of a GI; INSUFFICIENT_RESOURCES if it already has one."""
        gi = self._gi(gi_id)
        if gi.compute_instances:
            raise NvmlInsufficientResources(f"GPU instance {gi_id} has no free compute slices")
        ci = SimulatedComputeInstance(
            ci_id=0,
            ci_profile_id=FULL_CI_PROFILE.get(gi.compute_slices, 0),
            uuid=mig_uuid(self.parent_uuid, gi_id, 0, gi.placement),
        )
        self.instances[gi_id] = attrs.evolve(gi, compute_instances=(ci,))
        return ci

    def destroy_compute_instance(self, gi_id: int, ci_id: int) -> None:
        """Destroy a CI: NOT_FOUND if unknown, IN_USE while processes run on it."""
        gi = self._gi(gi_id)
        ci = next((c for c in gi.compute_instances if c.ci_id == ci_id), None)
        if ci is None:
            raise NvmlNotFound(f"no compute instance {ci_id} in GPU instance {gi_id}")
        if ci.processes:
            raise NvmlInUse(
                f"{ci.processes} process(es) run on compute instance {ci_id} of GPU instance {gi_id}"
            )
        rest = tuple(c for c in gi.compute_instances if c.ci_id != ci_id)
        self.instances[gi_id] = attrs.evolve(gi, compute_instances=rest)

    def set_processes(self, gi_id: int, ci_id: int, count: int) -> None:
        """Pretend ``count`` processes run on a compute instance (drives the IN_USE paths)."""
        gi = self._gi(gi_id)
        if not any(c.ci_id == ci_id for c in gi.compute_instances):
            raise NvmlNotFound(f"no compute instance {ci_id} in GPU instance {gi_id}")
        cis = tuple(attrs.evolve(c, processes=count) if c.ci_id == ci_id else c for c in gi.compute_instances)
        self.instances[gi_id] = attrs.evolve(gi, compute_instances=cis)

    def clear(self) -> None:
        """Drop every GI and CI (what a GPU reset does)."""
        self.instances.clear()


@attrs.frozen(kw_only=True)
class SimulatedGpuState:
    """What one simulated GPU holds right now."""

    index: int
    uuid: str
    mig_current: bool
    mig_pending: bool
    compute_mode: int
    lost: bool
    processes: int
    gpu_instances: tuple[SimulatedGpuInstance, ...]


@attrs.frozen(kw_only=True)
class SimulatedNodeState:
    """A snapshot of the whole simulated node, for tests and tools to read back."""

    init_refcount: int
    gpus: tuple[SimulatedGpuState, ...]
    calls: tuple[tuple[str, int], ...]  # (method, number of calls), sorted
