"""Dynamic MIG as partitionable devices (KEP-4815): which GPUs qualify, their candidates and counters.

With the ``DynamicMIG`` gate every (profile, placement) of a qualifying GPU is published as an abstract
``type: mig`` device that consumes counters of its GPU's counter set ``gpu-<minor>-counter-set``; the
full GPU consumes every counter of the set. The scheduler therefore never hands out two devices whose
memory slices overlap, nor a MIG device together with its full GPU.

Invariants owned here (upstream-driver §3.1, §3.4, §5.3):
- a GPU qualifies when it is MIG-capable, reports MIG profiles, and is Hopper or later (reset-less
  MIG toggling) or Ampere with MIG already on. Hopper+ publishes its full GPU and every candidate;
  Ampere with MIG on publishes only candidates (it is never toggled);
- counters: the full-GPU capacities (per-dimension maximum over all profiles) under kebab-case names,
  plus ``memory-slice-<i>`` = 1 for every memory slice; a candidate consumes its own capacities and
  the memory slices of its placement;
- candidate names are the upstream MIG names, so a dynamic device and the static MIG device of the
  same profile and placement share a name;
- layouts: Kubernetes >= 1.35 puts all counter sets in a first slice of their own and one device slice
  per GPU (sorted by PCI bus id, devices by name); older servers put each GPU's counter set beside its
  devices. Non-qualifying GPUs keep their classic devices, in their own slice.
"""

from __future__ import annotations

__all__ = [
    "DynamicMigLayout",
    "GpuSlice",
    "MigCandidate",
    "candidates_by_name",
    "counter_set_name",
    "gpu_counters",
    "mig_candidates",
    "qualifies_for_dynamic_mig",
    "render_dynamic_mig",
    "resetless_toggle",
]

from typing import Any

import attrs

from nvdra.core.devices import Gpu, Inventory, MigPlacement, MigProfile, mig_device_name
from nvdra.core.quantity import format_bytes
from nvdra.core.resourceslice import gpu_device, static_mig_device

_RESET_LESS_ARCHS = frozenset({"Hopper", "Blackwell", "Rubin"})
_MIB = 1024 * 1024

# Capacity name (camelCase, as devices publish it) -> counter name (kebab-case) and profile field.
_DIMENSIONS: tuple[tuple[str, str, str], ...] = (
    ("multiprocessors", "multiprocessors", "multiprocessors"),
    ("copyEngines", "copy-engines", "copy_engines"),
    ("decoders", "decoders", "decoders"),
    ("encoders", "encoders", "encoders"),
    ("jpegEngines", "jpeg-engines", "jpeg_engines"),
    ("ofaEngines", "ofa-engines", "ofa_engines"),
)


@attrs.frozen(kw_only=True)
class MigCandidate:
    """One (profile, placement) of a GPU that can be created on demand."""

    gpu: Gpu
    profile: MigProfile
    placement: MigPlacement

    @property
    def name(self) -> str:
        """The upstream MIG device name, e.g. ``gpu-0-mig-1g10gb-19-0``."""
        return mig_device_name(self.gpu.minor, self.profile.name, self.profile.id, self.placement.start)


def qualifies_for_dynamic_mig(gpu: Gpu) -> bool:
    """Whether ``gpu`` is partitioned on demand (see the module docstring)."""
    if not gpu.mig_capable or not gpu.mig_profiles:
        return False
    return gpu.architecture in _RESET_LESS_ARCHS or gpu.mig_enabled


def resetless_toggle(architecture: str) -> bool:
    """Whether MIG mode of a GPU of this architecture may be toggled without a GPU reset (Hopper+)."""
    return architecture in _RESET_LESS_ARCHS


def mig_candidates(gpu: Gpu) -> list[MigCandidate]:
    """Every (profile, placement) of ``gpu``, ordered by device name."""
    out = [
        MigCandidate(gpu=gpu, profile=p, placement=pl)
        for p in gpu.mig_profiles
        if p.memory_slices > 0
        for pl in p.placements
    ]
    return sorted(out, key=lambda c: c.name)


def counter_set_name(gpu: Gpu) -> str:
    """``gpu-<minor>-counter-set``."""
    return f"gpu-{gpu.minor}-counter-set"


def _memory_slices(gpu: Gpu) -> int:
    return max((pl.start + pl.size for p in gpu.mig_profiles for pl in p.placements), default=0)


def _profile_values(profile: MigProfile) -> dict[str, int]:
    """Counter name -> amount this profile uses (memory in bytes)."""
    values = {counter: int(getattr(profile, field)) for _, counter, field in _DIMENSIONS}
    values["memory"] = profile.memory_mb * _MIB
    return values


def gpu_counters(gpu: Gpu) -> dict[str, int]:
    """The counters of a GPU's counter set: per-dimension maxima over its profiles, and memory slices."""
    counters: dict[str, int] = {}
    for profile in gpu.mig_profiles:
        for name, value in _profile_values(profile).items():
            counters[name] = max(counters.get(name, 0), value)
    for i in range(_memory_slices(gpu)):
        counters[f"memory-slice-{i}"] = 1
    return counters


def _quantity(name: str, value: int) -> dict[str, str]:
    return {"value": format_bytes(value) if name == "memory" else str(value)}


def _consumes(gpu: Gpu, counters: dict[str, int]) -> list[dict[str, Any]]:
    rendered = {k: _quantity(k, v) for k, v in sorted(counters.items())}
    return [{"counterSet": counter_set_name(gpu), "counters": rendered}]


def _full_gpu_device(gpu: Gpu, inventory: Inventory) -> dict[str, Any]:
    device = gpu_device(gpu, inventory)
    counters = gpu_counters(gpu)
    capacity = {cap: {"value": str(counters[counter])} for cap, counter, _ in _DIMENSIONS}
    capacity["memory"] = _quantity("memory", counters["memory"])
    device["capacity"] = dict(sorted(capacity.items()))
    device["consumesCounters"] = _consumes(gpu, counters)
    return device


def _copied(items: list[tuple[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    return {k: dict(v) for k, v in items}


def _candidate_devices(gpu: Gpu, inventory: Inventory) -> list[dict[str, Any]]:
    """The devices of every candidate of ``gpu`` (in profile and placement order).

    The GPU's attributes are rendered once and each profile's capacities once, then copied into each
    device (every device owns its dicts: nothing rendered is shared between two devices).
    """
    shared = dict(gpu_device(gpu, inventory)["attributes"])
    del shared["uuid"]  # the MIG device does not exist yet
    shared["type"] = {"string": "mig"}
    shared["parentUUID"] = {"string": gpu.uuid}
    counter_set = counter_set_name(gpu)
    out: list[dict[str, Any]] = []
    for profile in gpu.mig_profiles:
        if profile.memory_slices <= 0:
            continue
        attributes = sorted({**shared, "profile": {"string": profile.name}}.items())
        values = {k: _quantity(k, v) for k, v in _profile_values(profile).items()}
        capacity = sorted(
            [(cap, values[counter]) for cap, counter, _ in _DIMENSIONS] + [("memory", values["memory"])]
        )
        for placement in profile.placements:
            consumed = dict(values)
            for i in placement.slices:
                consumed[f"memory-slice-{i}"] = {"value": "1"}
            out.append(
                {
                    "name": mig_device_name(gpu.minor, profile.name, profile.id, placement.start),
                    "attributes": _copied(attributes),
                    "capacity": _copied(capacity),
                    "consumesCounters": [
                        {"counterSet": counter_set, "counters": _copied(sorted(consumed.items()))}
                    ],
                }
            )
    return out


def _classic_devices(gpu: Gpu, inventory: Inventory) -> list[dict[str, Any]]:
    if gpu.mig_enabled:
        return [static_mig_device(m, gpu, inventory) for m in sorted(gpu.mig_devices, key=lambda m: m.name)]
    return [gpu_device(gpu, inventory)]


@attrs.frozen(kw_only=True)
class GpuSlice:
    """The devices of one physical GPU, and its counter set (None for a non-qualifying GPU)."""

    gpu: Gpu
    devices: tuple[dict[str, Any], ...]
    counter_set: dict[str, Any] | None


@attrs.frozen(kw_only=True)
class DynamicMigLayout:
    """What a DynamicMIG node publishes, before it is cut into ResourceSlices."""

    gpus: tuple[GpuSlice, ...]

    @property
    def counter_sets(self) -> tuple[dict[str, Any], ...]:
        """Every qualifying GPU's counter set, in GPU order."""
        return tuple(g.counter_set for g in self.gpus if g.counter_set is not None)

    def slices(
        self, *, separate_counters: bool = True
    ) -> list[tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]]:
        """``(devices, sharedCounters)`` per slice, in the Kubernetes >= 1.35 layout or the older one."""
        if separate_counters:
            first = [((), self.counter_sets)] if self.counter_sets else []
            return first + [(g.devices, ()) for g in self.gpus]
        return [(g.devices, (g.counter_set,) if g.counter_set is not None else ()) for g in self.gpus]

    @property
    def device_count(self) -> int:
        """Number of published devices."""
        return sum(len(g.devices) for g in self.gpus)


def render_dynamic_mig(inventory: Inventory) -> DynamicMigLayout | None:
    """The partitionable layout of ``inventory``; None when no GPU qualifies (classic model then)."""
    if not any(qualifies_for_dynamic_mig(g) for g in inventory.gpus):
        return None
    out = []
    for gpu in sorted(inventory.gpus, key=lambda g: g.pci_bus_id):
        if not qualifies_for_dynamic_mig(gpu):
            out.append(GpuSlice(gpu=gpu, devices=tuple(_classic_devices(gpu, inventory)), counter_set=None))
            continue
        devices = _candidate_devices(gpu, inventory)
        if gpu.architecture in _RESET_LESS_ARCHS:
            devices.append(_full_gpu_device(gpu, inventory))
        counters = {k: _quantity(k, v) for k, v in sorted(gpu_counters(gpu).items())}
        out.append(
            GpuSlice(
                gpu=gpu,
                devices=tuple(sorted(devices, key=lambda d: str(d["name"]))),
                counter_set={"name": counter_set_name(gpu), "counters": counters},
            )
        )
    return DynamicMigLayout(gpus=tuple(out))


def candidates_by_name(inventory: Inventory) -> dict[str, MigCandidate]:
    """Every dynamic MIG candidate of the qualifying GPUs, by device name."""
    return {c.name: c for g in inventory.gpus if qualifies_for_dynamic_mig(g) for c in mig_candidates(g)}
