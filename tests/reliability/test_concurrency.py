"""Concurrency of the GPU plugin over its real sockets: batches, parallel calls, races, rolling updates.

What must hold whatever the interleaving: a device is never prepared for two claims at once; every
claim the plugin answered with success is checkpointed as completed and has its CDI spec until it is
unprepared; an unprepared claim leaves neither; two plugin instances sharing one plugin directory
(rolling update, per-instance sockets) behave as one.
"""

from __future__ import annotations

import fcntl
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from nvdra.kubeletplugin import ClaimRef
from nvdra.kubeletplugin.serialize import SERIALIZE_LOCK_NAME
from nvdra.plugins.gpu.serve import serve
from tests.reliability.conftest import Node

GPUS = [f"gpu-{i}" for i in range(8)]


def test_many_claims_in_one_call(node: Node) -> None:
    """Eight claims (one per GPU) in one call are all prepared, then all unprepared in one call."""
    refs = [node.claim(gpu) for gpu in GPUS]
    with node.plugin() as (_, plugin):
        answers = plugin.prepare(refs)
        assert {uid: a.error for uid, a in answers.items()} == {r.uid: "" for r in refs}
        assert [answers[r.uid].devices[0].device_name for r in refs] == GPUS
        node.assert_consistent()
        assert node.spec_uids() == {r.uid for r in refs}

        assert plugin.unprepare(refs) == {r.uid: "" for r in refs}
    assert node.checkpoint().claims == {}
    assert node.spec_uids() == set()


def test_one_call_with_claims_competing_for_a_device(node: Node) -> None:
    """Two claims of one call allocated the same GPU: exactly one gets it, the other fails cleanly."""
    first, second, other = node.claim("gpu-0"), node.claim("gpu-0"), node.claim("gpu-1")
    with node.plugin() as (_, plugin):
        answers = plugin.prepare([first, second, other])
    assert answers[first.uid].error == "" and answers[other.uid].error == ""
    assert "also allocated to claim" in answers[second.uid].error
    node.assert_consistent()
    assert set(node.checkpoint().claims) == {first.uid, other.uid}


def test_parallel_kubelet_calls_never_share_a_device(node: Node) -> None:
    """16 threads prepare/unprepare claims on 8 GPUs in parallel: no GPU is ever held by two claims."""
    owners: dict[str, str] = {}
    owners_lock = threading.Lock()
    violations: list[str] = []
    refs = {t: [node.claim(GPUS[(t + i) % 8]) for i in range(6)] for t in range(16)}

    def worker(t: int) -> int:
        won = 0
        for i, ref in enumerate(refs[t]):
            gpu = GPUS[(t + i) % 8]
            answer = plugin.prepare([ref])[ref.uid]
            if answer.error:
                assert "already prepared" in answer.error, answer.error
                continue
            won += 1
            with owners_lock:
                if owners.get(gpu):
                    violations.append(f"{gpu}: {ref.uid} while {owners[gpu]}")
                owners[gpu] = ref.uid
            with owners_lock:  # give up ownership before the plugin frees it: others may win next
                owners[gpu] = ""
            assert plugin.unprepare([ref]) == {ref.uid: ""}
        return won

    with node.plugin() as (_, plugin), ThreadPoolExecutor(max_workers=16) as pool:
        won = sum(pool.map(worker, range(16)))
    assert violations == []
    assert won > 0
    assert node.checkpoint().claims == {}
    assert node.spec_uids() == set()


def test_prepare_and_unprepare_of_one_claim_racing(node: Node) -> None:
    """Prepare and unprepare of the same claim race; at rest the claim is either fully there or gone."""
    ref = node.claim("gpu-2")
    with node.plugin() as (running, plugin), ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(15):
            first = pool.submit(plugin.prepare, [ref])
            undone = pool.submit(plugin.unprepare, [ref])
            second = pool.submit(plugin.prepare, [ref])
            assert first.result()[ref.uid].error == "" and second.result()[ref.uid].error == ""
            assert undone.result() == {ref.uid: ""}
            node.assert_consistent()
            held = ref.uid in node.checkpoint().claims
            assert held == (ref.uid in running.driver.checkpoint().claims)
        assert plugin.unprepare([ref]) == {ref.uid: ""}
    assert node.checkpoint().claims == {} and node.spec_uids() == set()


def test_rolling_update_instances_act_as_one(node: Node) -> None:
    """Old and new instance (pod UIDs) serve side by side: each sees the other's claims and devices."""
    with node.plugin("pod-old") as (old, via_old), node.plugin("pod-new") as (new, via_new):
        assert old.helper.dra_socket != new.helper.dra_socket
        assert old.helper.registration_socket != new.helper.registration_socket
        a, b = node.claim("gpu-0"), node.claim("gpu-0")
        assert via_old.prepare([a])[a.uid].error == ""
        refused = via_new.prepare([b])[b.uid].error
        assert "already prepared for claim" in refused and a.uid in refused
        c = node.claim("gpu-1")
        assert via_new.prepare([c])[c.uid].error == ""
        assert set(node.checkpoint().claims) == {a.uid, c.uid}

        assert via_new.unprepare([a]) == {a.uid: ""}  # prepared by the old instance
        assert via_old.prepare([b])[b.uid].error == ""  # the old one sees gpu-0 freed
        assert set(node.checkpoint().claims) == {b.uid, c.uid}
        node.assert_consistent()
    assert (node.plugins / "gpu.nvidia.com").is_dir()


def test_rolling_update_instances_under_parallel_load(node: Node) -> None:
    """Parallel calls spread over both instances keep every GPU exclusive and the state consistent."""
    refs = [node.claim(GPUS[i % 8]) for i in range(48)]
    with node.plugin("pod-old") as (_, via_old), node.plugin("pod-new") as (_, via_new):

        def cycle(i: int) -> str:
            ref = refs[i]
            one, other = (via_old, via_new) if i % 2 else (via_new, via_old)
            answer = one.prepare([ref])[ref.uid]
            if answer.error:
                return "refused"
            assert other.prepare([ref])[ref.uid] == answer  # the other instance returns the stored answer
            assert other.unprepare([ref]) == {ref.uid: ""}
            return "done"

        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = list(pool.map(cycle, range(len(refs))))
    assert "done" in outcomes
    assert node.checkpoint().claims == {}
    assert node.spec_uids() == set()


def test_new_instance_waits_for_the_old_ones_call_before_repairing_state(node: Node) -> None:
    """A starting instance does not roll back or sweep state while another instance holds the flock."""
    ref = node.claim("gpu-3")
    with node.plugin("pod-old") as (_, via_old):
        assert via_old.prepare([ref])[ref.uid].error == ""
    # Now the old instance is "mid-call" again: its spec exists but no entry owns it yet.
    cp_path = node.plugin_dir / "checkpoint.json"
    cp_path.unlink()
    lock_fd = os.open(node.plugin_dir / SERIALIZE_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    started = threading.Event()
    release = threading.Event()

    def start_new() -> None:
        with serve(node.config("pod-new"), kube=node.kube):
            started.set()
            release.wait(30)

    thread = threading.Thread(target=start_new)
    thread.start()
    try:
        assert not started.wait(1.0)  # blocked on the flock, not a timing goal
        assert node.spec_uids() == {ref.uid}  # the orphan sweep has not run
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    assert started.wait(30)
    release.set()
    thread.join(30)
    assert node.spec_uids() == set()  # once the lock was free, the true orphan was swept


def test_unknown_and_repeated_claims_in_parallel(node: Node) -> None:
    """Concurrent unprepares of never-prepared claims succeed and change nothing."""
    ghosts = [
        ClaimRef(namespace="default", name=f"ghost-{i}", uid=f"00000000-0000-0000-0000-{i:012d}")
        for i in range(20)
    ]
    kept = node.claim("gpu-5")
    with node.plugin() as (_, plugin), ThreadPoolExecutor(max_workers=8) as pool:
        assert plugin.prepare([kept])[kept.uid].error == ""
        before = (node.plugin_dir / "checkpoint.json").read_bytes()
        answers = list(pool.map(lambda r: plugin.unprepare([r]), ghosts))
        assert answers == [{r.uid: ""} for r in ghosts]
        assert (node.plugin_dir / "checkpoint.json").read_bytes() == before
    node.assert_consistent()
