"""A stateful property test of the GPU driver against a reference model (Hypothesis state machine).

The system: the real :class:`GpuDriver` on a simulated dgx-h100 with time-slicing effects (the
simulated ``nvidia-smi`` changes the simulated GPUs), its checkpoint and CDI directory on disk;
"restart" drops the driver object and starts a new one over the same state, as a process restart does.

The model: which claim holds which GPUs, with which time slice. Rules prepare batches of claims (some
competing for GPUs, some with TimeSlicing configs), repeat prepares, unprepare batches, unprepare
unknown claims and restart. Invariants after every step: no GPU in two claims; a claim is prepared
exactly when the checkpoint holds it as completed *and* its CDI spec exists; every GPU's time slice
is the one its holder asked for (0 when free); the driver's view equals the file on disk.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.state import CheckpointStore
from tests.plugins.conftest import SPEC_PREFIX, allocated_claim, gpu_config, opaque, ref_of, result
from tests.sharing.conftest import SimNode

GATES = "TimeSlicingSettings=true"
INTERVALS = {"Short": 1, "Medium": 2, "Long": 3}


@attrs.frozen
class ModelClaim:
    """A claim as the model sees it."""

    obj: dict[str, Any]
    gpus: tuple[int, ...]
    interval: str | None

    @property
    def uid(self) -> str:
        """Its UID."""
        return str(self.obj["metadata"]["uid"])


claims_strategy = st.builds(
    lambda gpus, interval: (tuple(sorted(gpus)), interval),
    st.sets(st.integers(0, 7), min_size=1, max_size=3),
    st.none() | st.sampled_from(sorted(INTERVALS)),
)


class DriverMachine(RuleBasedStateMachine):
    """Drives one simulated node's GPU driver and checks it against :attr:`held`."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="nvdra-sm-")
        self.sim = SimNode(Path(self._tmp.name))
        self.driver: GpuDriver = self.sim.driver(GATES)
        self.prepared: dict[str, ModelClaim] = {}  # uid -> claim
        self.known: list[ModelClaim] = []
        self.answers: dict[str, Any] = {}

    def teardown(self) -> None:
        """Release threads and files."""
        self.sim.close()
        self.sim.backend.shutdown()
        self._tmp.cleanup()

    def _new_claim(self, gpus: tuple[int, ...], interval: str | None) -> ModelClaim:
        config = []
        if interval is not None:
            sharing = {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": interval}}
            config = [opaque(gpu_config(sharing=sharing))]
        obj = allocated_claim([result(f"gpu-{g}") for g in gpus], uid=str(uuid.uuid4()), config=config)
        claim = ModelClaim(obj=obj, gpus=gpus, interval=interval)
        self.known.append(claim)
        return claim

    def _held_gpus(self) -> dict[int, str]:
        return {g: c.uid for c in self.prepared.values() for g in c.gpus}

    @rule(batch=st.lists(claims_strategy, min_size=1, max_size=3))
    def prepare_new(self, batch: list[tuple[tuple[int, ...], str | None]]) -> None:
        """Prepare fresh claims in one call: a claim wins iff its GPUs are free and not taken earlier."""
        claims = [self._new_claim(gpus, interval) for gpus, interval in batch]
        answers = self.driver.prepare_resource_claims([c.obj for c in claims])
        taken = self._held_gpus()
        for claim in claims:
            answer = answers[claim.uid]
            expect_ok = not any(g in taken for g in claim.gpus)
            assert (answer.error == "") == expect_ok, (claim.gpus, taken, answer.error)
            if expect_ok:
                self.prepared[claim.uid] = claim
                self.answers[claim.uid] = answer
                taken.update({g: claim.uid for g in claim.gpus})
            else:
                assert answer.devices == ()

    @precondition(lambda self: bool(self.prepared))
    @rule(data=st.data())
    def prepare_again(self, data: st.DataObject) -> None:
        """Repeating a completed prepare returns the same answer and changes nothing."""
        uid = data.draw(st.sampled_from(sorted(self.prepared)))
        claim = self.prepared[uid]
        assert self.driver.prepare_resource_claims([claim.obj])[uid] == self.answers[uid]

    @precondition(lambda self: bool(self.known))
    @rule(data=st.data())
    def unprepare(self, data: st.DataObject) -> None:
        """Unprepare a batch of known claims (prepared or not): all succeed, the prepared are released."""
        picks = data.draw(
            st.lists(st.sampled_from(self.known), min_size=1, max_size=3, unique_by=lambda c: c.uid)
        )
        answers = self.driver.unprepare_resource_claims([ref_of(c.obj) for c in picks])
        assert answers == {c.uid: "" for c in picks}
        for claim in picks:
            self.prepared.pop(claim.uid, None)
            self.answers.pop(claim.uid, None)

    @rule()
    def restart(self) -> None:
        """A process restart: a new driver over the same checkpoint, CDI dir and GPUs."""
        self.driver.close()
        self.driver = self.sim.driver(GATES)

    @invariant()
    def no_gpu_in_two_claims(self) -> None:
        """The driver's checkpoint never holds a device for two claims."""
        held = [d.device_name for c in self.driver.checkpoint().claims.values() for d in c.devices]
        assert len(held) == len(set(held)), held

    @invariant()
    def prepared_iff_entry_and_spec(self) -> None:
        """Prepared claims have a completed entry and a spec; others have neither; disk = memory."""
        cp = self.driver.checkpoint()
        assert set(cp.claims) == set(self.prepared)
        assert {c.state for c in cp.claims.values()} <= {"PrepareCompleted"}
        specs = {
            p.name[len(SPEC_PREFIX) : -len(".yaml")]
            for p in self.sim.config.cdi_root.glob(f"{SPEC_PREFIX}*.yaml")
        }
        assert specs == set(self.prepared)
        stored, _ = CheckpointStore(self.sim.config.plugin_dir / "checkpoint.json", boot_id="b1").load()
        assert set(stored.claims) == set(cp.claims)

    @invariant()
    def time_slices_follow_holders(self) -> None:
        """Each GPU's time slice is its holder's interval, 0 when free or held without TimeSlicing."""
        for index in range(8):
            holder = next((c for c in self.prepared.values() if index in c.gpus), None)
            want = INTERVALS[holder.interval] if holder is not None and holder.interval else 0
            uuid_ = self.sim.backend.device_identity(index).uuid
            assert self.sim.runner.timeslice(uuid_) == want, (index, holder)


DriverMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_driver_state_machine = DriverMachine.TestCase
