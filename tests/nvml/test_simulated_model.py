"""Property test: random MIG create/destroy sequences agree with a simple reference model."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from nvdra.core.errors import (
    NvmlError,
    NvmlInsufficientResources,
    NvmlInUse,
    NvmlInvalidArgument,
    NvmlNotFound,
)
from nvdra.nvml import SimulatedNvml

# The H200 table as a plain reference: id -> (compute slices, memory slices, instances, starts).
TABLE = {
    19: (1, 1, 7, {0, 1, 2, 3, 4, 5, 6}),
    20: (1, 1, 1, {0, 1, 2, 3, 4, 5, 6}),
    15: (1, 2, 4, {0, 2, 4, 6}),
    14: (2, 2, 3, {0, 2, 4}),
    9: (3, 4, 2, {0, 4}),
    5: (4, 4, 1, {0}),
    0: (7, 8, 1, {0}),
}


class MigMachine(RuleBasedStateMachine):
    """Drives GPU 0 of hgx-h200 (MIG on) and a dict model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.backend = SimulatedNvml("hgx-h200")
        self.backend.init()
        self.backend.set_mig_mode(0, True)
        self.model: dict[int, tuple[int, int, bool]] = {}  # gi id -> (profile, start, has CI)

    def _expected_create(self, profile: int, start: int) -> type[NvmlError] | None:
        compute, size, count, starts = TABLE[profile]
        if start not in starts:
            return NvmlInvalidArgument
        used = {s for p, st_, _ in self.model.values() for s in range(st_, st_ + TABLE[p][1])}
        if used & set(range(start, start + size)):
            return NvmlInsufficientResources
        if sum(1 for p, _, _ in self.model.values() if p == profile) >= count:
            return NvmlInsufficientResources
        if sum(TABLE[p][0] for p, _, _ in self.model.values()) + compute > 7:
            return NvmlInsufficientResources
        return None

    @rule(profile=st.sampled_from(sorted(TABLE)), start=st.integers(0, 7))
    def create(self, profile: int, start: int) -> None:
        expected = self._expected_create(profile, start)
        try:
            gi = self.backend.create_gpu_instance(0, profile, start)
        except NvmlError as exc:
            assert expected is not None and isinstance(exc, expected), (exc, expected)
            return
        assert expected is None
        assert gi not in self.model
        self.model[gi] = (profile, start, False)

    @rule(data=st.data())
    def create_ci(self, data: st.DataObject) -> None:
        if not self.model:
            return
        gi = data.draw(st.sampled_from(sorted(self.model)))
        profile, start, has_ci = self.model[gi]
        try:
            self.backend.create_compute_instance(0, gi)
        except NvmlInsufficientResources:
            assert has_ci
            return
        assert not has_ci
        self.model[gi] = (profile, start, True)

    @rule(data=st.data())
    def destroy(self, data: st.DataObject) -> None:
        gi = data.draw(st.sampled_from([*sorted(self.model), 99]))
        if gi == 99:
            try:
                self.backend.destroy_gpu_instance(0, gi)
            except NvmlNotFound:
                return
            raise AssertionError("destroying an unknown GI succeeded")
        _, _, has_ci = self.model[gi]
        if has_ci:
            try:
                self.backend.destroy_gpu_instance(0, gi)
            except NvmlInUse:
                pass
            else:
                raise AssertionError("destroyed a GI that holds a CI")
            self.backend.destroy_compute_instance(0, gi, 0)
        self.backend.destroy_gpu_instance(0, gi)
        del self.model[gi]

    @invariant()
    def agrees_with_model(self) -> None:
        gis = self.backend.snapshot().gpus[0].gpu_instances
        assert {
            g.gi_id: (g.profile_id, g.placement.start, bool(g.compute_instances)) for g in gis
        } == self.model
        slices = [s for g in gis for s in g.placement.slices]
        assert len(slices) == len(set(slices))
        assert {r.gi_id for r in self.backend.mig_devices(0)} == {k for k, v in self.model.items() if v[2]}


def test_random_mig_sequences_match_the_model() -> None:
    """Random create/destroy sequences never overlap and always agree with the reference model."""
    run_state_machine_as_test(
        MigMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
