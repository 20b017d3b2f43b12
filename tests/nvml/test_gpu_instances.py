"""``gpu_instances``: every GPU instance, bare ones included, on the simulator and on PynvmlBackend
(over a pynvml stand-in that answers the NVML calls from a simulated node), and in conformance."""

from __future__ import annotations

import ctypes
import sys
import types
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

from nvdra.core.devices import MigPlacement
from nvdra.nvml import GpuInstanceRecord, PynvmlBackend, SimulatedNvml, run_conformance
from nvdra.nvml import _backend as b

_NOT_SUPPORTED = 3
_INSUFFICIENT_SIZE = 7
_INVALID_ARGUMENT = 2


def test_bare_gpu_instance_is_listed_but_is_no_mig_device(sim: Callable[..., SimulatedNvml]) -> None:
    """A GI without a CI appears in gpu_instances (with profile and placement), not in mig_devices."""
    node = sim("dgx-h100")
    node.set_mig_mode(0, True)
    full = node.create_gpu_instance(0, 19, 0)
    node.create_compute_instance(0, full)
    bare = node.create_gpu_instance(0, 14, 2)
    assert (bare, full) == (4, 7)  # the binary-tree numbering: GI ids do not follow creation order
    assert node.gpu_instances(0) == (
        GpuInstanceRecord(gi_id=bare, profile_id=14, placement=MigPlacement(start=2, size=2)),
        GpuInstanceRecord(gi_id=full, profile_id=19, placement=MigPlacement(start=0, size=1)),
    )
    assert [r.gi_id for r in node.mig_devices(0)] == [full]


def test_no_gpu_instances_without_mig(sim: Callable[..., SimulatedNvml]) -> None:
    """MIG off (Hopper, which still lists profiles) and no MIG at all (L4) both answer ()."""
    assert sim("dgx-h100").gpu_instances(0) == ()
    assert sim("pcie-l4").gpu_instances(0) == ()


def test_destroyed_gpu_instance_is_no_longer_listed(sim: Callable[..., SimulatedNvml]) -> None:
    """Destroying a bare GI removes it from the listing; the others stay, ordered by id."""
    node = sim("a100-mig")
    before = node.gpu_instances(2)
    gi = node.create_gpu_instance(2, 14, 4)
    assert gi in {g.gi_id for g in node.gpu_instances(2)}
    node.destroy_gpu_instance(2, gi)
    assert node.gpu_instances(2) == before


class _HidesBareGpuInstances(SimulatedNvml):
    """A backend that lists only GIs holding a CI (as walking MIG device handles would)."""

    def gpu_instances(self, index: int) -> tuple[GpuInstanceRecord, ...]:
        with_ci = {r.gi_id for r in self.mig_devices(index)}
        return tuple(g for g in super().gpu_instances(index) if g.gi_id in with_ci)


def test_conformance_catches_a_backend_that_hides_bare_gpu_instances() -> None:
    """The MIG round trip fails for a backend whose gpu_instances misses a GI without a CI."""
    results = {r.name: r for r in run_conformance(_HidesBareGpuInstances("a100-mig"), allow_mutation=True)}
    assert results["check_gpu_instances"].outcome == "passed"
    assert results["check_mig_round_trip"].outcome == "failed"
    assert "not listed as created" in results["check_mig_round_trip"].detail


# -- PynvmlBackend over a pynvml stand-in --------------------------------------------------------
class _FakePynvml(types.ModuleType):
    """The pynvml calls ``gpu_instances`` makes, answered from a simulated node the way NVML does:
    profiles by enum (NOT_SUPPORTED for the others), ``nvmlDeviceGetGpuInstances`` filling a
    caller-sized handle array and a count by reference (NOT_SUPPORTED while MIG is off), and
    ``nvmlGpuInstanceGetInfo`` on the handles. A GI handle is ``index << 32 | gi_id``."""

    NVMLError = pynvml.NVMLError
    NVML_INIT_FLAG_NO_GPUS = pynvml.NVML_INIT_FLAG_NO_GPUS
    c_nvmlGpuInstancePlacement_t = pynvml.c_nvmlGpuInstancePlacement_t
    c_nvmlGpuInstance_t = ctypes.c_uint64

    def __init__(self, node: SimulatedNvml) -> None:
        super().__init__("pynvml")
        self.node = node
        self.nvmlLib = None
        self.buffer_sizes: list[int] = []

    def nvmlInitWithFlags(self, flags: int) -> None:
        assert flags == self.NVML_INIT_FLAG_NO_GPUS
        self.node.init()

    def nvmlShutdown(self) -> None:
        self.node.shutdown()

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < self.node.device_count():
            raise pynvml.NVMLError(_INVALID_ARGUMENT)
        return index

    def _profile(self, h: int, profile_id: int) -> Any:
        return next(p for p in self.node.gpu_instance_profiles(h) if p.id == profile_id)

    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: int, enum: int, version: int) -> Any:
        assert version == 2
        p = next((p for p in self.node.gpu_instance_profiles(h) if p.profile_enum == enum), None)
        if p is None:
            raise pynvml.NVMLError(_NOT_SUPPORTED)
        members = b.nvml_members(b.GpuInstanceProfileInfo)
        return types.SimpleNamespace(
            name=p.name.encode(), **{member: int(getattr(p, field)) for field, member in members.items()}
        )

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, h: int, profile_id: int, array: Any, count_ref: Any
    ) -> None:
        placements = self._profile(h, profile_id).placements
        count_ref._obj.value = len(placements)
        for i, pl in enumerate(placements if array is not None else ()):
            array[i].start, array[i].size = pl.start, pl.size

    def nvmlDeviceGetGpuInstances(self, h: int, profile_id: int, array: Any, count_ref: Any) -> None:
        if not self.node.mig_mode(h).current:
            raise pynvml.NVMLError(_NOT_SUPPORTED)
        self.buffer_sizes.append(len(array))
        gis = [g for g in self.node.snapshot().gpus[h].gpu_instances if g.profile_id == profile_id]
        if len(gis) > len(array):
            raise pynvml.NVMLError(_INSUFFICIENT_SIZE)
        for i, gi in enumerate(gis):
            array[i] = h << 32 | gi.gi_id
        count_ref._obj.value = len(gis)

    def nvmlGpuInstanceGetInfo(self, handle: int) -> Any:
        index, gi_id = handle >> 32, handle & 0xFFFFFFFF
        gi = next(g for g in self.node.snapshot().gpus[index].gpu_instances if g.gi_id == gi_id)
        info = pynvml.c_nvmlGpuInstanceInfo_t()
        info.id, info.profileId = gi.gi_id, gi.profile_id
        info.placement.start, info.placement.size = gi.placement.start, gi.placement.size
        return info


_RealOver = Callable[[SimulatedNvml], tuple[PynvmlBackend, _FakePynvml]]


@pytest.fixture
def real_over(monkeypatch: pytest.MonkeyPatch) -> _RealOver:
    """Factory: an initialised PynvmlBackend whose ``import pynvml`` finds a stand-in over ``node``."""

    def make(node: SimulatedNvml) -> tuple[PynvmlBackend, _FakePynvml]:
        fake = _FakePynvml(node)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        backend = PynvmlBackend()
        backend.init()
        return backend, fake

    return make


def test_pynvml_lists_what_the_node_holds(
    sim: Callable[..., SimulatedNvml],
    real_over: _RealOver,
) -> None:
    """Over the stand-in, PynvmlBackend lists full and bare GIs exactly as the simulator does,
    asking NVML with a buffer of each profile's instance count."""
    node = sim("dgx-h100")
    node.set_mig_mode(0, True)
    node.create_compute_instance(0, node.create_gpu_instance(0, 19, 3))
    node.create_gpu_instance(0, 9, 4)  # bare
    real, fake = real_over(node)
    assert real.gpu_instances(0) == node.gpu_instances(0)
    assert len(real.gpu_instances(0)) == 2
    counts = {p.id: p.instance_count for p in node.gpu_instance_profiles(0)}
    assert sorted(fake.buffer_sizes) == sorted(list(counts.values()) * 2)


def test_pynvml_not_supported_with_mig_off_is_empty(
    sim: Callable[..., SimulatedNvml],
    real_over: _RealOver,
) -> None:
    """A Hopper GPU with MIG off lists profiles, but NVML's NOT_SUPPORTED becomes (); no MIG → ()."""
    real, _ = real_over(sim("dgx-h100"))
    assert real.gpu_instance_profiles(0) != ()
    assert real.gpu_instances(0) == ()
    real_l4, _ = real_over(sim("pcie-l4"))
    assert real_l4.gpu_instances(0) == ()
