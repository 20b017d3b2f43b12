"""Group commit: calls arriving while the driver is busy, or announced while fetching their claims, are
joined into one driver call."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from nvdra.kubeletplugin import ClaimRef, groupcommit
from nvdra.kubeletplugin.serialize import RequestSerializer
from nvdra.kubeletplugin.service import DraService
from nvdra.kubeletplugin.types import PrepareResult


class _SlowDriver:
    """Records each call's claim UIDs; the first call waits for ``release``; ``fail`` makes calls raise."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> dict[str, PrepareResult]:
        return {uid: PrepareResult() for uid in self._call([c["metadata"]["uid"] for c in claims])}

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> dict[str, str]:
        return {uid: "" for uid in self._call([c.uid for c in claims])}

    def _call(self, uids: list[str]) -> list[str]:
        self.calls.append(uids)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("disk full")
        return uids

    def handle_error(self, error: BaseException, message: str) -> None:
        raise AssertionError(message)


def _ref(uid: str) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{uid}", uid=uid)


def _concurrently(service: DraService, driver: _SlowDriver, calls: list[list[str]]) -> list[dict[str, str]]:
    """The first call enters the driver and blocks; the others queue; then the driver is released."""
    answers: list[dict[str, str]] = [{} for _ in calls]

    def run(i: int) -> None:
        answers[i] = service.unprepare([_ref(u) for u in calls[i]])

    first = threading.Thread(target=run, args=(0,))
    first.start()
    assert driver.entered.wait(10)
    rest = [threading.Thread(target=run, args=(i,)) for i in range(1, len(calls))]
    for t in rest:
        t.start()
    while sum(len(j.items) for j in service._unprepares._pending) < sum(len(c) for c in calls[1:]):
        threading.Event().wait(0.005)  # until every queued caller is waiting
    driver.release.set()
    for t in [first, *rest]:
        t.join(10)
    return answers


def test_waiting_calls_share_one_driver_call_and_get_their_own_answers() -> None:
    """Three callers queued behind a busy driver call make one driver call; each gets only its claims."""
    driver = _SlowDriver()
    service = DraService(driver, kube=None)  # type: ignore[arg-type]  # unprepare reads no claims
    answers = _concurrently(service, driver, [["a"], ["b"], ["c", "d"], ["e"]])
    assert driver.calls[0] == ["a"]
    assert sorted(driver.calls[1]) == ["b", "c", "d", "e"] and len(driver.calls) == 2
    assert answers == [{"a": ""}, {"b": ""}, {"c": "", "d": ""}, {"e": ""}]
    service.close()


def test_a_call_naming_a_claim_already_in_the_batch_waits_for_the_next() -> None:
    """The kubelet retrying a claim while it is queued: the two never meet in one driver call."""
    driver = _SlowDriver()
    service = DraService(driver, kube=None)  # type: ignore[arg-type]
    _concurrently(service, driver, [["a"], ["b"], ["b", "c"]])
    assert driver.calls[1:] == [["b"], ["b", "c"]]
    service.close()


def test_a_failed_driver_call_is_every_joined_callers_error() -> None:
    """An exception in the joined driver call becomes an error for every claim of every caller in it."""
    driver = _SlowDriver()
    driver.fail = True
    service = DraService(driver, kube=None)  # type: ignore[arg-type]
    answers = _concurrently(service, driver, [["a"], ["b"], ["c"]])
    assert len(driver.calls) == 2
    for answer in answers:
        ((uid, message),) = answer.items()
        assert message == "unprepare failed: RuntimeError: disk full", uid
    service.close()


def test_prepares_naming_the_same_device_are_not_joined() -> None:
    """Two claims allocated the same GPU, both queued: the driver sees them one after another (so the
    second is refused as already prepared, as without joining); a third, on another GPU, joins one."""
    from nvdra.kubeletplugin import FakeKube
    from nvdra.tool.demo import allocated_claim

    store = FakeKube()
    store.add_node("n1")
    refs = []
    for name, gpu in (("a", "gpu-0"), ("b", "gpu-1"), ("c", "gpu-1"), ("d", "gpu-2")):
        claim = store.add_claim(allocated_claim(name=name, namespace="default", devices=[gpu], node="n1"))
        refs.append(ClaimRef(namespace="default", name=name, uid=claim["metadata"]["uid"]))
    driver = _SlowDriver()
    service = DraService(driver, kube=store)
    threads = [threading.Thread(target=service.prepare, args=([ref],)) for ref in refs]
    threads[0].start()
    assert driver.entered.wait(10)
    for t in threads[1:]:
        t.start()
    while len(service._prepares._pending) < 3:
        threading.Event().wait(0.005)
    driver.release.set()
    for t in threads:
        t.join(10)
    uid = {r.name: r.uid for r in refs}
    assert driver.calls[0] == [uid["a"]]
    joined = [sorted(c) for c in driver.calls[1:]]
    assert sorted(joined) == sorted([sorted([uid["b"], uid["d"]]), [uid["c"]]]) or sorted(joined) == sorted(
        [sorted([uid["c"], uid["d"]]), [uid["b"]]]
    )
    service.close()


def test_without_serialization_a_call_never_waits_for_one_in_the_driver() -> None:
    """serialize=False (the ComputeDomain plugin): a channel prepare waiting in the driver for its
    daemon must not hold up the daemon's own claim; the second call enters the driver while the first
    is still there (seen on a real 1.36 cluster: the daemon's prepare waited out the 45 s channel wait)."""
    driver = _SlowDriver()
    service = DraService(driver, kube=None, serializer=RequestSerializer(enabled=False))  # type: ignore[arg-type]
    answers: dict[str, dict[str, str]] = {}
    first = threading.Thread(target=lambda: answers.update(a=service.unprepare([_ref("a")])))
    first.start()
    assert driver.entered.wait(10)
    second = threading.Thread(target=lambda: answers.update(b=service.unprepare([_ref("b")])))
    second.start()
    second.join(10)
    assert not second.is_alive() and answers["b"] == {"b": ""}
    assert driver.calls == [["a"], ["b"]] and first.is_alive()
    driver.release.set()
    first.join(10)
    assert answers["a"] == {"a": ""}
    service.close()


class _Claims:
    """A KubeApi stand-in serving allocated claims; the GET of a claim in ``held`` waits for its event."""

    def __init__(self, *held: str) -> None:
        self.held = {uid: threading.Event() for uid in held}
        self.fetching = {uid: threading.Event() for uid in held}

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        uid = name.removeprefix("claim-")
        if uid in self.held:
            self.fetching[uid].set()
            assert self.held[uid].wait(10)
        return {
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "status": {"allocation": {"devices": {"results": []}}},
        }


class _Recorder(_SlowDriver):
    """Records each call's claim UIDs and answers at once."""

    def _call(self, uids: list[str]) -> list[str]:
        self.calls.append(uids)
        return uids


def _prepare_in_thread(service: DraService, uid: str, out: dict[str, Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.update(service.prepare([_ref(uid)])))
    thread.start()
    return thread


def test_a_lead_waits_for_a_prepare_still_fetching_its_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prepare whose claims are being fetched is announced: the call that would enter the driver alone
    waits for it (up to JOIN_WAIT_S), and the two share one driver call."""
    monkeypatch.setattr(groupcommit, "JOIN_WAIT_S", 10.0)
    kube, driver, answers = _Claims("b"), _Recorder(), {}  # type: ignore[var-annotated]
    service = DraService(driver, kube=kube)  # type: ignore[arg-type]
    second = _prepare_in_thread(service, "b", answers)
    assert kube.fetching["b"].wait(10)
    first = _prepare_in_thread(service, "a", answers)
    first.join(0.2)
    assert first.is_alive() and driver.calls == []  # "a" waits for "b", announced and still fetching
    kube.held["b"].set()
    for thread in (first, second):
        thread.join(10)
    assert [sorted(call) for call in driver.calls] == [["a", "b"]]
    assert answers == {"a": PrepareResult(), "b": PrepareResult()}
    service.close()


def test_the_wait_for_a_slow_fetch_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch slower than JOIN_WAIT_S does not hold the others back any longer: they go without it."""
    monkeypatch.setattr(groupcommit, "JOIN_WAIT_S", 0.05)
    kube, driver, answers = _Claims("b"), _Recorder(), {}  # type: ignore[var-annotated]
    service = DraService(driver, kube=kube)  # type: ignore[arg-type]
    second = _prepare_in_thread(service, "b", answers)
    assert kube.fetching["b"].wait(10)
    _prepare_in_thread(service, "a", answers).join(10)
    assert driver.calls == [["a"]] and answers == {"a": PrepareResult()}
    kube.held["b"].set()
    second.join(10)
    assert driver.calls == [["a"], ["b"]]
    service.close()
