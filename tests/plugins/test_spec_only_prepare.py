"""A claim without effects has no ``PrepareStarted`` record: its spec and its ``PrepareCompleted`` entry are
written side by side, and the answer waits for both (``GpuDriver._apply``).

A crash between the two writes, in either order, is simulated the way the process would die: a
``Killed`` exception (a BaseException, as SIGKILL stops everything after it) at the write that does not
happen; a restart is a new GpuDriver object over the same CDI root and checkpoint file.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import pytest

from nvdra.core.checkpoint import Checkpoint
from nvdra.core.errors import CdiError
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.gpu.cdi import GpuClaimSpecs
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import Applied
from nvdra.plugins.state import CheckpointStore
from tests.plugins.conftest import (
    DriverNode,
    allocated_claim,
    on_disk,
    prepare_one,
    result,
    spec_files,
    uid_of,
)


class Killed(BaseException):
    """The process dies here: nothing after it runs."""


class CountingStore(CheckpointStore):
    """A real store that counts its saves and may die right after the durable write number ``kill_after``."""

    def __init__(self, node: DriverNode, kill_after: int = 0) -> None:
        super().__init__(node.checkpoint_path, boot_id="boot-1")
        self.saves = 0
        self.kill_after = kill_after

    def save(self, cp: Checkpoint) -> None:
        super().save(cp)
        self.saves += 1
        if self.saves == self.kill_after:
            raise Killed


class NodeSpecs(GpuClaimSpecs):
    """The real specs of ``node``'s CDI root and driver root."""

    def __init__(self, node: DriverNode) -> None:
        super().__init__(
            cdi_root=node.cdi_root,
            host_driver_root=node.driver_root,
            container_driver_root=node.driver_root,
            driver_version=node.inventory.driver_version,
        )


class SpecsDyingAtWrite(NodeSpecs):
    """Real specs, except that the process dies before a spec write (the rename never happens)."""

    def write(
        self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied] = ()
    ) -> None:
        raise Killed


class SpecsHeldBack(NodeSpecs):
    """Real specs whose writes wait until ``release`` is set (to show the answer waits for them)."""

    def __init__(self, node: DriverNode) -> None:
        super().__init__(node)
        self.release = threading.Event()

    def write(
        self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied] = ()
    ) -> None:
        assert self.release.wait(10)
        super().write(claim_uid, devices, applied)


def dying_after_the_entry(node: DriverNode) -> GpuDriver:
    """A started driver whose process dies once a call's checkpoint write is durable, before its spec."""
    dying = node.driver(start=False)
    dying._specs = SpecsDyingAtWrite(node)
    dying._store = CountingStore(node, kill_after=2)  # start()'s save, then the call's: then the kill
    dying.start()
    return dying


def test_one_durable_checkpoint_write_per_prepare_without_effects(node: DriverNode) -> None:
    """A full-GPU prepare writes the checkpoint once (PrepareCompleted), no PrepareStarted write."""
    driver = node.driver(start=False)
    store = CountingStore(node)
    driver._store = store
    driver.start()
    claims = [allocated_claim([result("gpu-0")]), allocated_claim([result("gpu-1")])]
    answers = driver.prepare_resource_claims(claims)
    assert all(not a.error for a in answers.values())
    assert store.saves == 2  # start()'s own, then the call's one
    assert {c.state for c in on_disk(node).claims.values()} == {"PrepareCompleted"}
    assert len(spec_files(node.cdi_root)) == 2


def test_the_answer_waits_for_the_spec(node: DriverNode) -> None:
    """The checkpoint may land first, but the kubelet hears of the claim only once its spec is durable."""
    driver = node.driver(start=False)
    specs = SpecsHeldBack(node)
    driver._specs = specs
    driver.start()
    claim = allocated_claim([result("gpu-3")])
    answers: list[object] = []
    caller = threading.Thread(target=lambda: answers.append(prepare_one(driver, claim)))
    caller.start()
    caller.join(0.3)
    assert caller.is_alive() and answers == []
    specs.release.set()
    caller.join(10)
    assert len(answers) == 1 and node.spec_path(uid_of(claim)).is_file()


def test_crash_after_the_entry_before_the_spec_is_healed_by_the_retry(node: DriverNode) -> None:
    """Order 1: the PrepareCompleted entry is durable, the spec never written. The restarted plugin keeps
    the entry (its devices stay held) and writes the spec again, byte for byte what an uninterrupted
    prepare writes, so that the node holds what its checkpoint says; the kubelet, never answered,
    retries and gets the stored answer."""
    claim = allocated_claim([result("gpu-2")])
    reference = node.driver()
    assert not prepare_one(reference, claim).error
    expected = node.spec_path(uid_of(claim)).read_bytes()
    gone = reference.unprepare_resource_claims([ClaimRef(namespace="default", name="x", uid=uid_of(claim))])
    assert gone == {uid_of(claim): ""} and spec_files(node.cdi_root) == []

    dying = dying_after_the_entry(node)
    with pytest.raises(Killed):
        prepare_one(dying, claim)
    assert on_disk(node).claims[uid_of(claim)].state == "PrepareCompleted"
    assert spec_files(node.cdi_root) == []

    restarted = node.driver()
    assert uid_of(claim) in restarted.checkpoint().claims
    assert node.spec_path(uid_of(claim)).read_bytes() == expected
    other = allocated_claim([result("gpu-2")])
    assert "already prepared" in prepare_one(restarted, other).error
    answer = prepare_one(restarted, claim)
    assert not answer.error and answer.devices[0].device_name == "gpu-2"


def test_a_retry_restores_a_spec_lost_while_running(node: DriverNode) -> None:
    """The same state reached without a restart (the spec write failed and dropping the entry failed
    too, or the file was removed by hand): the repeated prepare writes the spec again before answering."""
    claim = allocated_claim([result("gpu-6")])
    driver = node.driver()
    assert not prepare_one(driver, claim).error
    expected = node.spec_path(uid_of(claim)).read_bytes()
    node.spec_path(uid_of(claim)).unlink()
    assert not prepare_one(driver, claim).error
    assert node.spec_path(uid_of(claim)).read_bytes() == expected


def test_crash_after_the_entry_before_the_spec_then_unprepare(node: DriverNode) -> None:
    """Order 1, then the pod goes away instead: the unprepare drops the entry; nothing is left."""
    claim = allocated_claim([result("gpu-4")])
    dying = dying_after_the_entry(node)
    with pytest.raises(Killed):
        prepare_one(dying, claim)

    restarted = node.driver()
    errors = restarted.unprepare_resource_claims([ClaimRef(namespace="default", name="c", uid=uid_of(claim))])
    assert errors == {uid_of(claim): ""}
    assert on_disk(node).claims == {} and spec_files(node.cdi_root) == []


def test_crash_after_the_spec_before_the_entry_is_swept_at_start(node: DriverNode) -> None:
    """Order 2: the spec is durable, the checkpoint write never happened (the process died before its
    rename). The restart removes the orphaned spec; the retry prepares the claim as new."""
    claim = allocated_claim([result("gpu-5")])
    dying = node.driver(start=False)
    store = CountingStore(node)
    dying._store = store
    dying.start()

    def die_before_saving(cp: Checkpoint) -> None:
        raise Killed

    store.save = die_before_saving  # type: ignore[method-assign]
    with pytest.raises(Killed):
        prepare_one(dying, claim)
    dying.close()  # the spec write, begun beside the save, has ended
    assert spec_files(node.cdi_root) == [node.spec_path(uid_of(claim))]
    assert on_disk(node).claims == {}

    restarted = node.driver()
    assert spec_files(node.cdi_root) == []
    assert not prepare_one(restarted, claim).error
    assert spec_files(node.cdi_root) == [node.spec_path(uid_of(claim))]


class SpecsInMemory(NodeSpecs):
    """Real specs that report a memory filesystem and record the thread of each write and removal."""

    def __init__(self, node: DriverNode, *, in_memory: bool) -> None:
        super().__init__(node)
        self.in_memory = in_memory
        self.threads: list[int] = []

    def write(
        self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied] = ()
    ) -> None:
        self.threads.append(threading.get_ident())
        super().write(claim_uid, devices, applied)

    def write_many(
        self, claims: Mapping[str, Sequence[AllocatableDevice]]
    ) -> dict[str, BaseException | None]:
        self.threads.append(threading.get_ident())
        return super().write_many(claims)

    def remove(self, claim_uid: str) -> None:
        self.threads.append(threading.get_ident())
        super().remove(claim_uid)

    def remove_many(self, claim_uids: Sequence[str]) -> dict[str, BaseException | None]:
        self.threads.append(threading.get_ident())
        return super().remove_many(claim_uids)


@pytest.mark.parametrize("in_memory", [True, False])
def test_specs_in_memory_are_written_without_an_io_thread(node: DriverNode, in_memory: bool) -> None:
    """On tmpfs a spec write overlaps nothing, so the calling thread makes it (one claim and a batch,
    prepare and unprepare); on a disk it goes to an I/O thread beside the checkpoint write."""
    specs = SpecsInMemory(node, in_memory=in_memory)
    driver = node.driver(specs=specs)
    one = [allocated_claim([result("gpu-0")])]
    two = [allocated_claim([result("gpu-1")]), allocated_claim([result("gpu-2")])]
    for claims in (one, two):
        answers = driver.prepare_resource_claims(claims)
        assert all(not a.error for a in answers.values())
        assert all(node.spec_path(uid_of(c)).is_file() for c in claims)
        refs = [ClaimRef(namespace="default", name="x", uid=uid_of(c)) for c in claims]
        assert driver.unprepare_resource_claims(refs) == {r.uid: "" for r in refs}
    assert spec_files(node.cdi_root) == [] and not on_disk(node).claims
    assert len(specs.threads) == 4
    here = threading.get_ident()
    assert all((t == here) is in_memory for t in specs.threads)


def test_a_failed_spec_write_in_memory_fails_its_claim_alone(node: DriverNode) -> None:
    """The calling thread's spec write failing is handled as an I/O thread's: the claim fails, its
    entry is dropped again, the other claim of the call is prepared."""

    class Failing(SpecsInMemory):
        def write_many(
            self, claims: Mapping[str, Sequence[AllocatableDevice]]
        ) -> dict[str, BaseException | None]:
            out = super().write_many(claims)
            bad = sorted(claims)[0]
            self.remove(bad)
            return {**out, bad: CdiError(f"cannot write CDI spec for {bad}: No space left on device")}

    driver = node.driver(specs=Failing(node, in_memory=True))
    claims = [allocated_claim([result("gpu-4")]), allocated_claim([result("gpu-5")])]
    bad = sorted(uid_of(c) for c in claims)[0]
    answers = driver.prepare_resource_claims(claims)
    assert "No space left" in answers[bad].error
    assert [uid for uid, a in answers.items() if not a.error] == [u for u in map(uid_of, claims) if u != bad]
    assert set(on_disk(node).claims) == {u for u in map(uid_of, claims) if u != bad}
