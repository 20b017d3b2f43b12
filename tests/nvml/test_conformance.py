"""The conformance suite passes on every simulated profile and catches a non-conforming backend."""

from __future__ import annotations

import pytest

from nvdra.core.errors import NvmlInvalidArgument, NvmlNotFound
from nvdra.nvml import PROFILE_NAMES, SimulatedNvml, run_conformance
from nvdra.nvml._conformance import MUTATING_CHECKS, READ_ONLY_CHECKS


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_conforms(name: str) -> None:
    """Every check, mutating ones included, passes or skips on each built-in profile."""
    results = run_conformance(SimulatedNvml(name), allow_mutation=True)
    assert [r.name for r in results] == [c.__name__ for c in READ_ONLY_CHECKS + MUTATING_CHECKS]
    assert [r for r in results if not r.ok] == []


def test_mutating_checks_restore_state() -> None:
    """After a mutating run the MIG devices and compute modes are as before."""
    backend = SimulatedNvml("a100-mig")
    before = backend.snapshot().gpus
    run_conformance(backend, allow_mutation=True)
    assert backend.snapshot().gpus == before


def test_mig_round_trip_runs_where_there_is_room() -> None:
    """a100-mig has MIG GPUs with free slices, so the round trip is exercised, not skipped."""
    results = {r.name: r.outcome for r in run_conformance(SimulatedNvml("a100-mig"), allow_mutation=True)}
    assert results["check_mig_round_trip"] == "passed"
    assert "check_mig_round_trip" not in {r.name for r in run_conformance(SimulatedNvml("a100-mig"))}


class _GoNvmlMockLookup(SimulatedNvml):
    """A backend with go-nvml mock's bug: unknown UUIDs raise INVALID_ARGUMENT instead of NOT_FOUND."""

    def index_by_uuid(self, uuid: str) -> int:
        try:
            return super().index_by_uuid(uuid)
        except NvmlNotFound as exc:
            raise NvmlInvalidArgument(str(exc)) from exc


def test_wrong_error_code_fails_the_suite() -> None:
    """check_lookup fails for a backend that answers INVALID_ARGUMENT to an unknown UUID."""
    results = {r.name: r for r in run_conformance(_GoNvmlMockLookup("dgx-h100"))}
    assert results["check_lookup"].outcome == "failed"
    assert "NvmlNotFound" in results["check_lookup"].detail


def test_lost_gpu_fails_as_error_not_crash() -> None:
    """An unexpected NVML error is reported as a failed check, and the session is still released."""
    backend = SimulatedNvml("dgx-h100")
    backend.mark_gpu_lost(0)
    results = run_conformance(backend)
    assert any(r.outcome == "failed" and "NvmlGpuLost" in r.detail for r in results)
    assert backend.snapshot().init_refcount == 0
