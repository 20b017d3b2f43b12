"""The fault matrix: the real plugin process SIGKILLed at every named step of prepare and unprepare.

For each claim kind (full GPU, TimeSlicing, MPS, dynamic MIG, a SharedNVSwitch fabric partition, VFIO)
and each fault point its prepare or unprepare passes (``nvdra.core.faults.FAULT_POINTS``):

1. the plugin is started armed at the point and the kubelet's call kills it there;
2. a new process starts over the same node (hardware state, checkpoint, CDI dir, API server);
3. invariants: no temp file; no half-done (``PrepareStarted``) entry survives the start; the node holds
   exactly what the checkpoint's records say (MIG devices, time slices, exclusive compute modes, MPS
   Deployments and directories, Fabric Manager partitions, vfio-pci bindings, CDI specs) — or, killed
   mid-unprepare, nothing the checkpoint does not account for;
4. the kubelet replays its call: the node then equals, byte for byte, a node where nothing crashed
   (a reference run of the same scenario), the slices publish what they should, and a second claim for
   the same devices is refused while they are held (nothing double-allocated);
5. unprepare leaves it equal to the reference node after its unprepare (nothing leaked).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs
import pytest

from nvdra.plugins.gpu.simnode import reboot_simulated_node
from tests.reliability.faultnode import (
    SCRIPT,
    FaultNode,
    JsonObject,
    check_agreement,
    check_nothing_unaccounted,
    expect_published,
    live,
    no_double_allocation,
)
from tests.reliability.scenarios import SCENARIOS, node_for

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason=f"console script not installed at {SCRIPT}")


# Fault points each scenario's prepare passes, in the order it passes them (":N" = the N-th time;
# "before-rename" counts every atomic write of the process: the start's checkpoint write, which creates
# the file, is the first; later checkpoint writes are in place, through its shadow, and do not count).
PREPARE_FAULTS: dict[str, tuple[str, ...]] = {
    # A full GPU has no effects, so no PrepareStarted record: its spec and its PrepareCompleted entry are
    # written side by side. before-rename:2 = the spec not in place, the entry maybe;
    # after-checkpoint-shadow = the entry in the shadow only, the spec maybe; after-cdi-written = the spec
    # durable, the entry maybe; after-prepare-completed = the entry durable, the spec maybe not (the start
    # then writes it again: GpuDriver._apply).
    "gpu": (
        "before-rename:2",
        "after-checkpoint-shadow",
        "after-cdi-written",
        "after-prepare-completed",
    ),
    # Six spec-only claims in one call: their specs are one batch (unsynced temp files, one sync, the
    # renames, one directory fsync) beside the call's checkpoint write. before-rename:2 = no spec in
    # place; :5 = some specs renamed; :7 = all but the last; after-cdi-written:3 = every spec durable
    # (all six are after the batch's directory fsync).
    "gpu-batch": (
        "before-rename:2",
        "before-rename:5",
        "before-rename:7",
        "after-checkpoint-shadow",
        "after-cdi-written:3",
        "after-prepare-completed",
    ),
    # CDI root on tmpfs: the spec (or the batch) is written first, then the entry. before-rename:2 = the
    # spec not in place; after-cdi-written = the spec in place, the entry not written;
    # after-checkpoint-shadow = the entry in the shadow only.
    "gpu-tmpfs": (
        "before-rename:2",
        "after-cdi-written",
        "after-checkpoint-shadow",
        "after-prepare-completed",
    ),
    "gpu-batch-tmpfs": (
        "before-rename:2",
        "before-rename:5",
        "before-rename:7",
        "after-cdi-written:3",
        "after-checkpoint-shadow",
        "after-prepare-completed",
    ),
    "timeslicing": (
        "after-prepare-started",
        "after-timeslice-set:1",
        "after-timeslice-set:2",
        "after-cdi-written",
    ),
    "mps": ("after-prepare-started", "after-mps-started", "after-cdi-written"),
    "dynamic-mig": (
        "after-prepare-started",
        "after-mig-mode-enabled",
        "after-mig-gi-created:1",
        "after-mig-ci-created:1",
        "after-mig-gi-created:2",
        "after-cdi-written",
        "after-prepare-completed",
    ),
    "fabric": ("after-prepare-started", "after-fm-activated", "after-cdi-written"),
    "vfio": ("after-prepare-started", "after-vfio-unbound", "after-vfio-bound", "after-cdi-written"),
}
# ... and its unprepare (counts include what the prepare before it in the same process passed).
UNPREPARE_FAULTS: dict[str, tuple[str, ...]] = {
    "gpu": ("after-cdi-removed", "after-checkpoint-shadow:2", "after-unprepare-checkpoint"),
    "gpu-batch": ("after-cdi-removed:2", "after-unprepare-checkpoint"),
    "gpu-tmpfs": ("after-cdi-removed", "after-unprepare-checkpoint"),
    "gpu-batch-tmpfs": ("after-cdi-removed:2", "after-unprepare-checkpoint"),
    "timeslicing": ("after-undo",),
    "mps": ("after-undo",),
    "dynamic-mig": ("after-mig-ci-destroyed:1", "after-undo:1", "after-unprepare-checkpoint"),
    "fabric": ("after-undo",),
    "vfio": ("after-vfio-unbound:2", "after-undo"),
}


WORKERS = 4  # nodes at a time: each case mostly waits on process starts


@attrs.frozen(kw_only=True)
class Reference:
    """A scenario run without faults: what the node looks like at each step."""

    published: frozenset[str]
    prepared: JsonObject
    unprepared: JsonObject


def _stable_published(node: FaultNode) -> frozenset[str]:
    """The published names once the publisher has settled (unchanged across several polls)."""
    last: set[str] = set()
    same = 0
    deadline = time.monotonic() + 20
    while same < 5:
        assert time.monotonic() < deadline, "the published slices did not settle"
        time.sleep(0.05)
        now = node.published()
        same = same + 1 if now and now == last else 0
        last = now
    return frozenset(last)


def run_reference(name: str) -> Reference:
    """The scenario's uninterrupted run; it must itself leave nothing behind."""
    scenario = SCENARIOS[name]
    with node_for(scenario) as node:
        plugin = node.start()
        with plugin.wait_registered() as kubelet:
            kubelet.register(node.registration_socket)
            published = _stable_published(node)
            answers = node.prepare(kubelet)
            assert answers is not None and all(a.error == "" for a in answers.values()), answers
            prepared = node.observe()
            check_agreement(prepared)
            expect_published(node, set(published - scenario.hidden))
            assert node.unprepare(kubelet) == {r.uid: "" for r in scenario.refs()}
            unprepared = node.observe()
            check_agreement(unprepared)
            assert unprepared["checkpoint"] == {} and unprepared["specs"] == {}
        plugin.stop()
    return Reference(published=published, prepared=prepared, unprepared=unprepared)


def run_prepare_case(name: str, point: str, ref: Reference) -> None:
    """Killed at ``point`` mid-prepare; restart; agreement; retry; equal to the reference; unprepare."""
    scenario = SCENARIOS[name]
    uids = {r.uid: "" for r in scenario.refs()}
    with node_for(scenario) as node:
        first = node.start(point)
        with first.wait_registered() as kubelet:
            assert node.prepare(kubelet) is None, f"{point} was not reached"
        first.wait_killed()

        second = node.start()
        with second.wait_registered() as kubelet:
            check_agreement(node.observe())
            answers = node.prepare(kubelet)
            assert answers is not None and all(a.error == "" for a in answers.values()), answers
            assert node.observe() == ref.prepared
            expect_published(node, set(ref.published - scenario.hidden))
            no_double_allocation(node, kubelet, prepared=True)
            assert node.unprepare(kubelet) == uids
            assert node.observe() == ref.unprepared
            expect_published(node, set(ref.published))
        second.stop()


def run_unprepare_case(name: str, point: str, ref: Reference) -> None:
    """Prepared, then killed at ``point`` mid-unprepare; restart; nothing unaccounted; retry; nothing left."""
    scenario = SCENARIOS[name]
    uids = {r.uid: "" for r in scenario.refs()}
    with node_for(scenario) as node:
        first = node.start(point)
        with first.wait_registered() as kubelet:
            answers = node.prepare(kubelet)
            assert answers is not None and all(a.error == "" for a in answers.values()), answers
            assert node.observe() == ref.prepared
            assert node.unprepare(kubelet) is None, f"{point} was not reached"
        first.wait_killed()

        second = node.start()
        with second.wait_registered() as kubelet:
            check_nothing_unaccounted(node.observe())
            assert node.unprepare(kubelet) == uids
            assert node.observe() == ref.unprepared
            expect_published(node, set(ref.published))
            no_double_allocation(node, kubelet, prepared=False)
        second.stop()


def run_reboot_case(name: str, point: str, ref: Reference) -> None:
    """Prepared, then the node reboots (``point`` is "reboot"): the entries are discarded, what outlives
    a reboot (an MPS Deployment, its directories, CDI specs on disk) is cleaned up, hardware is as a
    reboot leaves it, and the kubelet's new prepare ends as on a fresh node."""
    assert point == "reboot"
    scenario = SCENARIOS[name]
    uids = {r.uid: "" for r in scenario.refs()}
    with node_for(scenario) as node:
        first = node.start()
        with first.wait_registered() as kubelet:
            answers = node.prepare(kubelet)
            assert answers is not None and all(a.error == "" for a in answers.values()), answers
        first.proc.kill()  # the power goes: no clean stop
        first.proc.wait()
        reboot_simulated_node(node.state, scenario.profile)

        second = node.start()
        with second.wait_registered() as kubelet:
            after = node.observe()
            assert after["checkpoint"] == {}
            assert all(not items for items in live(after).values()), live(after)
            assert "node rebooted" in second.output()
            answers = node.prepare(kubelet)
            assert answers is not None and all(a.error == "" for a in answers.values()), answers
            assert node.observe() == ref.prepared
            assert node.unprepare(kubelet) == uids
            assert node.observe() == ref.unprepared
        second.stop()


class Matrix:
    """Runs the selected cases on a few nodes at a time (each case is two plugin starts, mostly waiting).

    Every test then waits for its own case and re-raises its failure, so each fault point is still its
    own test with its own result; only the work overlaps.
    """

    def __init__(self, cases: list[tuple[str, str, str]], workers: int = WORKERS) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fault-matrix")
        names = sorted({name for _, name, _ in cases})
        # References first: the queue is FIFO, so no case waits on a reference that has not started.
        self.references = {name: self.pool.submit(run_reference, name) for name in names}
        self.cases: dict[tuple[str, str, str], Future[None]] = {
            case: self.pool.submit(self._run, *case) for case in cases
        }

    def _run(self, phase: str, name: str, point: str) -> None:
        ref = self.references[name].result()
        _RUNNERS[phase](name, point, ref)

    def result(self, phase: str, name: str, point: str) -> None:
        """Wait for one case; raise its failure."""
        self.cases[(phase, name, point)].result(timeout=600)

    def close(self) -> None:
        """Wait for whatever is still running."""
        self.pool.shutdown(wait=True, cancel_futures=True)


_PHASES = {
    "test_crash_during_prepare": "prepare",
    "test_crash_during_unprepare": "unprepare",
    "test_reboot": "reboot",
}
_RUNNERS = {"prepare": run_prepare_case, "unprepare": run_unprepare_case, "reboot": run_reboot_case}


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    """The cases of this module that this session selected, started together."""
    cases = [
        (_PHASES[item.originalname], str(item.callspec.params["name"]), str(item.callspec.params["point"]))
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname in _PHASES
        and item.module is sys.modules[__name__]
    ]
    running = Matrix(cases)
    yield running
    running.close()


def _cases(table: dict[str, tuple[str, ...]]) -> list[Any]:
    return [pytest.param(s, p, id=f"{s}-{p}") for s, points in table.items() for p in points]


@pytest.mark.parametrize(("name", "point"), _cases(PREPARE_FAULTS))
def test_crash_during_prepare(matrix: Matrix, name: str, point: str) -> None:
    """Killed mid-prepare: a restart agrees with its checkpoint; the retry ends as if nothing happened."""
    matrix.result("prepare", name, point)


@pytest.mark.parametrize(("name", "point"), _cases(UNPREPARE_FAULTS))
def test_crash_during_unprepare(matrix: Matrix, name: str, point: str) -> None:
    """Killed mid-unprepare: nothing unaccounted after a restart; the retry leaves nothing behind."""
    matrix.result("unprepare", name, point)


@pytest.mark.parametrize(("name", "point"), [pytest.param(s, "reboot", id=s) for s in SCENARIOS])
def test_reboot(matrix: Matrix, name: str, point: str) -> None:
    """A reboot (new boot id) discards the entries, cleans what outlives it, and the node works as new."""
    matrix.result("reboot", name, point)
