"""The claim status writes leave the kubelet's critical path: written by a worker, in order, coalesced."""

from __future__ import annotations

import threading
from typing import Any

from nvdra.kubeletplugin import ClaimRef, FakeKube
from nvdra.kubeletplugin.objects import RESOURCE_CLAIMS
from nvdra.plugins.devicestatus import ClaimStatusReporter
from tests.plugins.conftest import DRIVER, NODE, PreparesEverything, allocated_claim, result


class _Gated(FakeKube):
    """A FakeKube whose status writes wait until ``gate`` is set (a slow API server)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def update_object(self, rt: Any, body: Any, *, status: bool = False) -> Any:
        assert self.gate.wait(10)
        return super().update_object(rt, body, status=status)


def _entry(uid: str) -> list[dict[str, Any]]:
    return [{"driver": DRIVER, "pool": NODE, "device": "gpu-0", "data": {"uid": uid}}]


def test_answer_does_not_wait_for_the_write_and_a_claims_newest_write_wins() -> None:
    """The calls return while the API server is stalled; a claim prepared and unprepared before the worker
    got to it is written once (its removal: nothing to write); another claim's entries are written."""
    store = _Gated()
    first = store.add_claim(allocated_claim([result("gpu-0")]))
    second = store.add_claim(allocated_claim([result("gpu-1")]))
    reporter = ClaimStatusReporter(
        PreparesEverything(), store, driver_name=DRIVER, describe=_entry, background=True
    )
    try:
        reporter.prepare_resource_claims([first])  # the worker takes it and waits on the gate
        reporter.prepare_resource_claims([second])
        meta = second["metadata"]
        reporter.unprepare_resource_claims(
            [ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])]
        )
        assert not reporter.flush(0.2)  # still stalled, yet every call above has returned
        store.clear_calls()
        store.gate.set()
        assert reporter.flush(10)
    finally:
        reporter.close()
    writes = [c.name for c in store.calls() if c.verb == "update-status"]
    assert writes == [first["metadata"]["name"]]  # the second claim's entries were never written
    done = store.get_object(RESOURCE_CLAIMS, first["metadata"]["name"], first["metadata"]["namespace"])
    assert done["status"]["devices"][0]["data"] == {"uid": first["metadata"]["uid"]}


def test_close_writes_what_is_queued() -> None:
    """Stopping the plugin writes the pending reports before the worker ends."""
    store = FakeKube()
    claim = store.add_claim(allocated_claim([result("gpu-0")]))
    reporter = ClaimStatusReporter(
        PreparesEverything(), store, driver_name=DRIVER, describe=_entry, background=True
    )
    reporter.prepare_resource_claims([claim])
    reporter.close()
    done = store.get_object(RESOURCE_CLAIMS, claim["metadata"]["name"], claim["metadata"]["namespace"])
    assert [d["device"] for d in done["status"]["devices"]] == ["gpu-0"]
