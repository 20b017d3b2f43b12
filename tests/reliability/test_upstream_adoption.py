"""The switch an operator makes in place: nvdra starts on a node the upstream Go plugin prepared claims on.

The node is left as upstream leaves it — its ``checkpoint.json`` (v2), the MIG device it created, the GPU
instance of a prepare that died half-way, an MPS control-daemon Deployment with its directories and
EXCLUSIVE_PROCESS compute mode, time slices, CDI specs — and the real nvdra plugin process starts on it.
It must adopt the claims (keeping the original file for a human), roll back the half-done one, keep the
live MIG device through its start-up sweep, and undo everything when the kubelet unprepares them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.core.checkpoint import decode_checkpoint
from nvdra.kubeletplugin import ClaimRef, KubeletClient
from nvdra.kubeletplugin.objects import DEPLOYMENTS
from nvdra.nvml import SimulatedNvml
from nvdra.plugins.gpu.simnode import BOOT_ID_FILE, NVML_STATE_FILE
from tests.plugins.conftest import allocated_claim, result
from tests.reliability.faultnode import NAMESPACE, FaultNode, Scenario
from tests.reliability.scenarios import node_for

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"
BOOT_ID = "3f0c2a9e-6f4b-4c55-9a3e-1d2b7c8e9f10"
MPS, MIG, TS, HALF = (
    "5b1f0a52-0c1e-4d8e-9a57-3c2f4e6b7a01",
    "8a3c6e10-47d2-4b7f-b1e5-2f9d0c4a6e02",
    "c7e41b95-2d60-4a8f-9c13-6b5e8f0a1d03",
    "e2d95f37-8b14-4c6a-a0f2-7d3c1b9e5f04",
)
DAEMON = f"{MPS}-a5966"
ADOPTING = Scenario(
    name="adoption",
    profile="dgx-h100",
    gates="DynamicMIG=true,TimeSlicingSettings=true",  # MPS records are undone whatever the gate
    claims=(),
)


def leave_upstream_state(node: FaultNode, *, boot_id: str = BOOT_ID) -> bytes:
    """What upstream leaves on the node; returns the checkpoint bytes."""
    node.hw.mkdir(parents=True)
    (node.hw / BOOT_ID_FILE).write_text(boot_id + "\n")
    gpu = SimulatedNvml("dgx-h100", state_path=node.hw / NVML_STATE_FILE)
    gpu.init()
    uuids = [gpu.device_identity(i).uuid for i in range(8)]
    gpu.set_mig_mode(3, True)
    gpu.create_compute_instance(3, gpu.create_gpu_instance(3, 19, 0))  # mig-claim's device
    gpu.create_gpu_instance(3, 14, 2)  # half-done-mig: GI made, CI not
    gpu.set_compute_mode(2, 3)  # MPS: EXCLUSIVE_PROCESS
    for i in (0, 1):
        gpu.set_timeslice(uuids[i], 3)
    gpu.shutdown()
    node.store.create_object(
        DEPLOYMENTS,
        {
            "metadata": {"name": f"mps-control-daemon-{DAEMON}", "namespace": NAMESPACE},
            "spec": {"replicas": 1},
        },
    )
    for sub in ("pipe", "shm", "log"):
        (node.plugin_dir / "mps" / DAEMON / sub).mkdir(parents=True)
    node.cdi_root.mkdir()
    for uid in (MPS, MIG, TS, HALF):
        (node.cdi_root / f"k8s.gpu.nvidia.com-claim_{uid}.yaml").write_text("cdiVersion: 0.6.0\n")
    raw = (DATA / "checkpoint-v2-dgx-h100.json").read_bytes()
    (node.plugin_dir / "checkpoint.json").write_bytes(raw)
    return raw


@pytest.fixture
def node() -> Iterator[FaultNode]:
    """A fresh dgx-h100 node for the adopting plugin."""
    with node_for(ADOPTING) as made:
        yield made


def refs() -> list[ClaimRef]:
    """The kubelet's references to the upstream-prepared claims that completed."""
    return [
        ClaimRef(namespace="team-a", name="mps-claim", uid=MPS),
        ClaimRef(namespace="team-b", name="mig-claim", uid=MIG),
        ClaimRef(namespace="team-a", name="timesliced-claim", uid=TS),
    ]


def test_upstream_claims_are_adopted_and_unprepare_undoes_everything(node: FaultNode) -> None:
    """Adopted: original kept, half-done claim rolled back, MIG device kept through the sweep; unprepare
    then destroys the MIG device (MIG mode off again), deletes the MPS daemon and its directories, resets
    compute modes and time slices, removes every spec and entry."""
    raw = leave_upstream_state(node)
    plugin = node.start()
    with plugin.wait_registered() as kubelet:
        assert (node.plugin_dir / "checkpoint.json.upstream").read_bytes() == raw
        adopted = decode_checkpoint((node.plugin_dir / "checkpoint.json").read_bytes())
        assert set(adopted.claims) == {MPS, MIG, TS}
        assert {c.state for c in adopted.claims.values()} == {"PrepareCompleted"}
        gpu3 = next(g for g in node.hardware().values() if g["gpuInstances"])
        assert [(gi["profileId"], gi["start"]) for gi in gpu3["gpuInstances"]] == [(19, 0)]
        assert sorted(node.specs()) == sorted(f"k8s.gpu.nvidia.com-claim_{u}.yaml" for u in (MPS, MIG, TS))
        assert list(node.deployments()) == [f"mps-control-daemon-{DAEMON}"]
        # The adopted claims hold their devices.
        assert "already prepared" in _refused(node, kubelet, "gpu-2")

        assert node.unprepare(kubelet, refs()) == {u: "" for u in (MPS, MIG, TS)}
        after = node.observe()
    plugin.stop()
    assert after["checkpoint"] == {} and after["specs"] == {} and after["deployments"] == {}
    assert after["mps_dirs"] == []
    for gpu in after["hardware"].values():
        assert (gpu["gpuInstances"], gpu["migCurrent"], gpu["computeMode"], gpu["timeslice"]) == (
            [],
            False,
            0,
            0,
        )


def test_upstream_checkpoint_from_an_earlier_boot_is_discarded(node: FaultNode) -> None:
    """Upstream's nodeBootID differs from the node's: the node rebooted since, so nothing is adopted
    (what outlives a reboot, the MPS Deployment, is still cleaned up); the original is kept."""
    leave_upstream_state(node, boot_id="00000000-0000-0000-0000-00000000b007")
    (node.hw / BOOT_ID_FILE).write_text("11111111-2222-3333-4444-555555555555\n")
    plugin = node.start()
    with plugin.wait_registered():
        after = node.observe()
    plugin.stop()
    assert (node.plugin_dir / "checkpoint.json.upstream").is_file()
    assert after["checkpoint"] == {} and after["specs"] == {} and after["deployments"] == {}
    assert json.loads((node.plugin_dir / "checkpoint.json").read_text())["kind"] == "nvdra.checkpoint"


def _refused(node: FaultNode, kubelet: KubeletClient, device: str) -> str:
    """The error of a new claim for ``device``."""
    meta = node.store.add_claim(allocated_claim([result(device, pool="n1")]))["metadata"]
    ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    answers = node.prepare(kubelet, [ref])
    assert answers is not None
    return answers[ref.uid].error
