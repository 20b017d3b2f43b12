"""The real plugin process against a damaged node: a corrupt or older checkpoint, a full disk under the
CDI dir, an API server that fails or is gone for a while. Each test checks that the plugin keeps serving,
that a failed call changed nothing, and that the kubelet's retry then succeeds.
"""

from __future__ import annotations

import hashlib
import json
import resource
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from nvdra.kubeletplugin import ApiServer, ClaimRef, KubeletClient, PrepareResult
from nvdra.plugins.gpu.simnode import BOOT_ID_FILE
from tests.plugin_harness import wait_for
from tests.plugins.conftest import allocated_claim, result
from tests.reliability.faultnode import FaultNode, JsonObject, Plugin, check_agreement, live
from tests.reliability.scenarios import SCENARIOS, node_for

pytestmark = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")


@pytest.fixture
def node() -> Iterator[FaultNode]:
    """A node of the fault matrix's dynamic-MIG scenario (hardware changes at prepare)."""
    with node_for(SCENARIOS["dynamic-mig"]) as made:
        yield made


@pytest.fixture
def gpu_node() -> Iterator[FaultNode]:
    """A node of the fault matrix's full-GPU scenario."""
    with node_for(SCENARIOS["gpu"]) as made:
        yield made


def ok(answers: Mapping[str, PrepareResult] | None) -> bool:
    """Every claim of a prepare answered without error."""
    return answers is not None and all(a.error == "" for a in answers.values())


# -- the checkpoint ---------------------------------------------------------------------------------


def _restart_after_damage(node: FaultNode, damage: str, *names: str) -> tuple[Plugin, JsonObject]:
    """Prepare, kill the plugin, damage the named files of its directory (``truncated`` through the
    JSON; ``garbage``; ``torn``: zeros from the middle of the JSON on, the size kept, as a write in
    place that did not finish) and start a new process: it, and what the node held while prepared."""
    first = node.start()
    with first.wait_registered() as kubelet:
        assert ok(node.prepare(kubelet))
        prepared = node.observe()
    first.proc.kill()
    first.proc.wait()
    for name in names:
        raw = (node.plugin_dir / name).read_bytes()
        cut = len(raw.rstrip()) // 2
        damaged = {
            "truncated": raw[:cut],
            "garbage": b"\x00\xff not json",
            "torn": raw[:cut] + bytes(len(raw) - cut),
        }[damage]
        (node.plugin_dir / name).write_bytes(damaged)
    return node.start(), prepared


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint_is_set_aside_and_the_node_swept(node: FaultNode, damage: str) -> None:
    """A damaged checkpoint (its shadow too) does not stop the plugin: it is moved aside, and what its
    entries made that a sweep can find (dynamic MIG devices, CDI specs) is removed; the freed devices
    prepare again."""
    second, _ = _restart_after_damage(node, damage, "checkpoint.json", "checkpoint.json.shadow")
    with second.wait_registered() as kubelet:
        assert list(node.plugin_dir.glob("checkpoint.json.corrupt-*"))
        after = node.observe()
        check_agreement(after)
        assert after["checkpoint"] == {} and live(after)["mig"] == [] and after["specs"] == {}
        assert node.unprepare(kubelet) == {r.uid: "" for r in node.scenario.refs()}  # unknown: fine
        assert ok(node.prepare(kubelet))
    second.stop()


def test_a_checkpoint_torn_mid_write_is_taken_from_its_shadow(node: FaultNode) -> None:
    """Killed while the checkpoint itself is written in place (its shadow complete): the next start takes
    the shadow's entries, so the dynamic MIG devices stay accounted for, and unprepare removes them."""
    second, prepared = _restart_after_damage(node, "torn", "checkpoint.json")
    with second.wait_registered() as kubelet:
        assert list(node.plugin_dir.glob("checkpoint.json.corrupt-*"))
        after = node.observe()
        check_agreement(after)
        assert after == prepared
        assert node.unprepare(kubelet) == {r.uid: "" for r in node.scenario.refs()}
        after = node.observe()
        assert after["checkpoint"] == {} and live(after)["mig"] == [] and after["specs"] == {}
    second.stop()


def test_older_checkpoint_without_effect_records_is_read(gpu_node: FaultNode) -> None:
    """A version-1 file from before effects were recorded (entries lack ``applied``) keeps its claims."""
    node = gpu_node
    first = node.start()
    with first.wait_registered() as kubelet:
        assert ok(node.prepare(kubelet))
    first.stop()
    path = node.plugin_dir / "checkpoint.json"
    doc = json.loads(path.read_bytes())
    for entry in doc["data"]["claims"].values():
        del entry["applied"]
    canonical = json.dumps(doc["data"], sort_keys=True, separators=(",", ":")).encode()
    doc["checksum"] = "sha256:" + hashlib.sha256(canonical).hexdigest()
    path.write_text(json.dumps(doc))

    second = node.start()
    with second.wait_registered() as kubelet:
        after = node.observe()
        assert set(after["checkpoint"]) == {r.uid for r in node.scenario.refs()}
        assert not list(node.plugin_dir.glob("checkpoint.json.corrupt-*"))
        assert "already prepared" in _second_claim_error(node, kubelet)
        assert node.unprepare(kubelet) == {r.uid: "" for r in node.scenario.refs()}
        assert node.observe()["specs"] == {}
    second.stop()


def _second_claim_error(node: FaultNode, kubelet: KubeletClient) -> str:
    meta = node.store.add_claim(allocated_claim([result("gpu-1", pool="n1")]))["metadata"]
    ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    answers = node.prepare(kubelet, [ref])
    assert answers is not None
    return answers[ref.uid].error


# -- the disk -----------------------------------------------------------------------------------------


def test_full_disk_fails_the_claim_and_changes_nothing(gpu_node: FaultNode) -> None:
    """While writes beyond 2 KiB fail (RLIMIT_FSIZE on the plugin, standing in for ENOSPC: write(2) fails
    mid-file either way) the 6 KiB CDI spec cannot be written: the claim fails, no spec, no temp file, no
    entry; once space is back the kubelet's retry succeeds."""
    node = gpu_node
    plugin = node.start()
    pid = plugin.proc.pid
    with plugin.wait_registered() as kubelet:
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (2048, hard))
        try:
            answers = node.prepare(kubelet)
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
        assert answers is not None
        [answer] = answers.values()
        assert "File too large" in answer.error, answer
        after = node.observe()
        assert after["specs"] == {} and after["temp_files"] == [] and after["checkpoint"] == {}
        assert ok(node.prepare(kubelet))
        assert node.unprepare(kubelet) == {r.uid: "" for r in node.scenario.refs()}
    plugin.stop()


# -- the API server -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429, 503])
def test_claim_read_errors_are_per_claim_and_retried(gpu_node: FaultNode, status: int) -> None:
    """The claim GET answering ``status`` fails that prepare (touching nothing); the retry succeeds."""
    node = gpu_node
    plugin = node.start()
    with plugin.wait_registered() as kubelet:
        node.store.fail_next("get", resource="resourceclaims", status=status, times=1)
        answers = node.prepare(kubelet)
        assert answers is not None
        [answer] = answers.values()
        assert answer.error, answers
        assert node.observe()["checkpoint"] == {} and node.observe()["specs"] == {}
        assert ok(node.prepare(kubelet))
        assert node.unprepare(kubelet) == {r.uid: "" for r in node.scenario.refs()}
    plugin.stop()


def test_api_server_gone_for_a_while(gpu_node: FaultNode) -> None:
    """With the API server down, prepare fails per claim; once it is back on its address, the retry works."""
    node = gpu_node
    plugin = node.start()
    with plugin.wait_registered() as kubelet:
        kubelet.register(node.registration_socket)
        wait_for("slices", node.published)
        port = int(node.server.url.rsplit(":", 1)[1])
        node.server.close()
        answers = node.prepare(kubelet)
        assert answers is not None and all(a.error for a in answers.values()), answers
        assert node.observe()["checkpoint"] == {}
        with ApiServer(node.store, port=port):
            assert ok(node.prepare(kubelet))
            assert node.unprepare(kubelet) == {r.uid: "" for r in node.scenario.refs()}
    plugin.stop()


@pytest.mark.parametrize("status", [409, 429, 500])
def test_slice_publishing_retries_through_errors(gpu_node: FaultNode, status: int) -> None:
    """ResourceSlice creates answered with ``status`` a few times: the publisher retries until published."""
    node = gpu_node
    node.store.fail_next("create", resource="resourceslices", status=status, times=3)
    plugin = node.start()
    with plugin.wait_registered() as kubelet:
        kubelet.register(node.registration_socket)
        wait_for("all eight GPUs published", lambda: node.published() == {f"gpu-{i}" for i in range(8)})
    plugin.stop()


def test_mps_deployment_create_failure_rolls_back() -> None:
    """The MPS Deployment create answering 500 fails the claim and leaves no directory, mode or entry."""
    with node_for(SCENARIOS["mps"]) as node:
        plugin = node.start()
        with plugin.wait_registered() as kubelet:
            node.store.fail_next("create", resource="deployments", status=500, times=1)
            answers = node.prepare(kubelet)
            assert answers is not None and all(a.error for a in answers.values()), answers
            after = node.observe()
            assert after["checkpoint"] == {} and after["specs"] == {}
            assert all(not items for items in live(after).values()), live(after)
            assert ok(node.prepare(kubelet))
            assert node.unprepare(kubelet) == {r.uid: "" for r in node.scenario.refs()}
        plugin.stop()


def test_boot_id_of_a_simulated_node_is_kept_in_its_state(gpu_node: FaultNode) -> None:
    """``--simulate-state`` gives the node one boot id across plugin restarts (so no false 'reboot')."""
    node = gpu_node
    for _ in range(2):
        plugin = node.start()
        plugin.wait_registered().close()
        plugin.stop()
    boot = (node.hw / BOOT_ID_FILE).read_text().strip()
    assert boot and "node rebooted" not in node.log.read_text()
    assert Path(node.hw / "nvml.json").is_file()
