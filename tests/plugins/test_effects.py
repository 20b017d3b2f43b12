"""The effect protocol of the GPU driver: intent logged before apply, reverse undo, crash rollback."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from nvdra.cdi import ContainerEdits
from nvdra.core.effects import EffectRecord, effect_to_json
from nvdra.core.errors import HostError
from nvdra.plugins.gpu.effects import Applied, ClaimContext, Effects, expect
from tests.plugins.conftest import DriverNode, allocated_claim, prepare_one, ref_of, result, uid_of


@attrs.frozen(kw_only=True)
class Step(EffectRecord):
    KIND: ClassVar[str] = "step"
    device: str
    step: str


class StepPlanner:
    """Plans two steps per device: 'a' then 'b'."""

    def plan(self, ctx: ClaimContext) -> Sequence[Step]:
        return [Step(device=d.name, step=s) for d in ctx.devices for s in ("a", "b")]


class RecordingExecutor:
    """A fake node: applies steps into a set, records every call, can fail on a chosen step."""

    records: tuple[type[EffectRecord], ...] = (Step,)

    def __init__(self, node: DriverNode) -> None:
        self.node = node
        self.done: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str, str]] = []
        self.fail_apply: tuple[str, str] | None = None
        self.fail_undo = False
        self.intent_seen: list[bool] = []

    def apply(self, record: EffectRecord) -> Applied:
        step = expect(record, Step)
        key = (step.device, step.step)
        self.calls.append(("apply", *key))
        # The intent must already be durable: the checkpoint on disk names this record.
        raw = json.loads(self.node.checkpoint_path.read_text())
        on_disk = effect_to_json(step)
        self.intent_seen.append(any(on_disk in c["applied"] for c in raw["data"]["claims"].values()))
        if key == self.fail_apply:
            raise HostError(f"step {key} failed")
        self.done.add(key)
        edits = ContainerEdits(env=(f"STEP_{key[1].upper()}=1",))
        return Applied(claim_edits=edits)

    def undo(self, record: EffectRecord) -> None:
        step = expect(record, Step)
        key = (step.device, step.step)
        self.calls.append(("undo", *key))
        if self.fail_undo:
            raise HostError("undo failed")
        self.done.discard(key)


def _effects(node: DriverNode) -> tuple[Effects, RecordingExecutor]:
    executor = RecordingExecutor(node)
    return Effects([StepPlanner()], [executor]), executor


def test_effects_apply_after_intent_and_feed_the_spec(node: DriverNode) -> None:
    """Effects run in order, each only after its intent is on disk, and their edits reach the CDI spec."""
    effects, ex = _effects(node)
    driver = node.driver(effects=effects)
    claim = allocated_claim([result("gpu-0")])
    assert not prepare_one(driver, claim).error
    assert ex.calls == [("apply", "gpu-0", "a"), ("apply", "gpu-0", "b")]
    assert ex.intent_seen == [True, True]
    assert "STEP_B=1" in node.spec_path(uid_of(claim)).read_text()


def test_failed_effect_rolls_back_everything_in_reverse(node: DriverNode) -> None:
    """A failing effect undoes all the claim's records in reverse and leaves no spec or entry."""
    effects, ex = _effects(node)
    ex.fail_apply = ("gpu-0", "b")
    driver = node.driver(effects=effects)
    claim = allocated_claim([result("gpu-0")])
    res = prepare_one(driver, claim)
    assert "step ('gpu-0', 'b') failed" in res.error
    assert ex.calls[-2:] == [("undo", "gpu-0", "b"), ("undo", "gpu-0", "a")]
    assert ex.done == set()
    assert not node.spec_path(uid_of(claim)).exists()
    assert uid_of(claim) not in driver.checkpoint().claims


def test_unprepare_undoes_in_reverse(node: DriverNode) -> None:
    """Unprepare undoes the recorded effects last-first, then removes spec and entry."""
    effects, ex = _effects(node)
    driver = node.driver(effects=effects)
    claim = allocated_claim([result("gpu-0"), result("gpu-1")])
    assert not prepare_one(driver, claim).error
    ex.calls.clear()
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert [c[1:] for c in ex.calls] == [("gpu-1", "b"), ("gpu-1", "a"), ("gpu-0", "b"), ("gpu-0", "a")]
    assert ex.done == set()


def test_undo_failure_keeps_the_claim_for_a_retry(node: DriverNode) -> None:
    """If an effect cannot be undone, unprepare fails for that claim and keeps it; a retry finishes."""
    effects, ex = _effects(node)
    driver = node.driver(effects=effects)
    claim = allocated_claim([result("gpu-0")])
    assert not prepare_one(driver, claim).error
    ex.fail_undo = True
    assert driver.unprepare_resource_claims([ref_of(claim)])[uid_of(claim)]
    assert uid_of(claim) in driver.checkpoint().claims
    assert node.spec_path(uid_of(claim)).exists()
    ex.fail_undo = False
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert not node.spec_path(uid_of(claim)).exists()


def test_crash_after_apply_is_rolled_back_at_start(node: DriverNode) -> None:
    """A PrepareStarted entry whose effects ran (a crash before completion) is undone at the next start."""
    effects, ex = _effects(node)
    driver = node.driver(effects=effects)
    claim = allocated_claim([result("gpu-0")])
    # Simulate the crash: the PrepareStarted write happens, the PrepareCompleted write never does.
    real_save, saves = driver._store.save, []

    def save_once(cp: Any) -> None:
        saves.append(cp)
        if len(saves) == 1:
            real_save(cp)

    driver._store.save = save_once  # type: ignore[method-assign]
    prepare_one(driver, claim)
    assert ex.done == {("gpu-0", "a"), ("gpu-0", "b")}
    restarted = node.driver(effects=Effects([StepPlanner()], [ex]))
    assert ex.done == set()
    assert uid_of(claim) not in restarted.checkpoint().claims
    assert not node.spec_path(uid_of(claim)).exists()
