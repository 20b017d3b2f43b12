"""Converting the upstream Go plugin's checkpoint (v1/v2) into nvdra's: records that undo what it did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.checkpoint import decode_checkpoint
from nvdra.core.errors import CheckpointError
from nvdra.plugins.gpu.upstream import (
    AdoptionContext,
    adopt_upstream_checkpoint,
    convert_upstream,
    is_upstream_checkpoint,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"
UUIDS = {
    0: "GPU-8952f0b8-f8cd-8885-6821-e69935a02844",
    1: "GPU-f3600615-3b87-432a-f687-d8b1eed4d873",
    2: "GPU-c5647ab3-6156-248a-d0bf-30fc94308d83",
    3: "GPU-6f75e4b6-888b-4aa0-a786-f6939d54ae3e",
}
MPS, MIG, TS, HALF = (
    "5b1f0a52-0c1e-4d8e-9a57-3c2f4e6b7a01",
    "8a3c6e10-47d2-4b7f-b1e5-2f9d0c4a6e02",
    "c7e41b95-2d60-4a8f-9c13-6b5e8f0a1d03",
    "e2d95f37-8b14-4c6a-a0f2-7d3c1b9e5f04",
)


def load(name: str) -> Any:
    """A fixture file, decoded."""
    return json.loads((DATA / name).read_text())


def ctx(**kw: bool) -> AdoptionContext:
    """A dgx-h100 context with the given gates."""
    return AdoptionContext(uuid_by_minor=UUIDS, **kw)


def test_v2_claims_keep_state_names_devices_and_boot_id() -> None:
    """Every v2 entry becomes an nvdra entry with its state, name, namespace and kubelet devices."""
    cp, warnings = convert_upstream(load("checkpoint-v2-dgx-h100.json"), ctx())
    assert warnings == ()
    assert cp.node_boot_id == "3f0c2a9e-6f4b-4c55-9a3e-1d2b7c8e9f10"
    assert {u: c.state for u, c in cp.claims.items()} == {
        MPS: "PrepareCompleted",
        MIG: "PrepareCompleted",
        TS: "PrepareCompleted",
        HALF: "PrepareStarted",
    }
    mps = cp.claims[MPS]
    assert (mps.namespace, mps.name) == ("team-a", "mps-claim")
    [device] = mps.devices
    assert (device.requests, device.pool_name, device.device_name) == (("shared-gpu",), "n1", "gpu-2")
    assert device.cdi_device_ids == (f"k8s.gpu.nvidia.com/claim={MPS}-gpu-2",)
    assert [d.cdi_device_ids for d in cp.claims[HALF].devices] == [
        (f"k8s.gpu.nvidia.com/claim={HALF}-gpu-3-mig-2g20gb-14-2",)
    ]


def test_mps_daemon_becomes_an_mps_record() -> None:
    """configState.mpsControlDaemonID → an ``mps`` record naming the daemon and its full GPU."""
    cp, _ = convert_upstream(load("checkpoint-v2-dgx-h100.json"), ctx())
    [record] = cp.claims[MPS].applied
    assert record["kind"] == "mps"
    assert record["id"] == f"{MPS}-a5966"
    assert record["computeModeGpus"] == [UUIDS[2]]


def test_dynamic_mig_devices_are_undone_only_under_dynamic_mig() -> None:
    """With DynamicMIG the MIG device (parent, profile 19, start 0) gets a mig.create record; without it
    the device was made out of band (static MIG) and nothing is recorded to destroy it."""
    dynamic, _ = convert_upstream(load("checkpoint-v2-dgx-h100.json"), ctx(dynamic_mig=True))
    [record] = dynamic.claims[MIG].applied
    assert record == {
        "kind": "mig.create",
        "device": "gpu-3-mig-1g10gb-19-0",
        "parent": UUIDS[3],
        "profileId": 19,
        "start": 0,
    }
    [half] = dynamic.claims[HALF].applied
    assert (half["parent"], half["profileId"], half["start"]) == (UUIDS[3], 14, 2)
    static, _ = convert_upstream(load("checkpoint-v2-dgx-h100.json"), ctx())
    assert static.claims[MIG].applied == () and static.claims[HALF].applied == ()


def test_timeslicing_gate_adds_the_reset_upstream_would_do() -> None:
    """With TimeSlicingSettings each group with full GPUs gets a reset record (DEFAULT, slice 0); MPS last."""
    cp, _ = convert_upstream(load("checkpoint-v2-dgx-h100.json"), ctx(timeslicing=True))
    [ts] = cp.claims[TS].applied
    assert ts == {"kind": "timeslice", "gpus": sorted([UUIDS[0], UUIDS[1]]), "interval": 0}
    assert [r["kind"] for r in cp.claims[MPS].applied] == ["timeslice", "mps"]


def test_vfio_device_becomes_a_rebind_record() -> None:
    """A vfio device → a vfio-pci record for its PCI address (undo binds it back to nvidia)."""
    cp, _ = convert_upstream(load("checkpoint-v2-vfio.json"), ctx())
    [claim] = cp.claims.values()
    [record] = claim.applied
    assert (record["kind"], record["device"], record["address"]) == ("vfio-pci", "gpu-vfio-5", "0000:c3:00.0")


def test_v1_only_file_is_all_completed_without_names() -> None:
    """A pre-v2 file: every entry PrepareCompleted, no name, no boot id (stamped at load)."""
    cp, _ = convert_upstream(load("checkpoint-v1-only.json"), ctx())
    [claim] = cp.claims.values()
    assert (claim.state, claim.name, cp.node_boot_id) == ("PrepareCompleted", "", "")
    assert [d.device_name for d in claim.devices] == ["gpu-4"]


def test_unparseable_mig_name_is_a_warning_not_a_failure() -> None:
    """A MIG device whose name carries no profile/placement is kept (devices) but cannot be undone: warned."""
    doc = load("checkpoint-v2-dgx-h100.json")
    dev = doc["v2"]["preparedClaims"][MIG]["preparedDevices"][0]["devices"][0]["mig"]["device"]
    dev["DeviceName"] = "mig-weird"
    cp, warnings = convert_upstream(doc, ctx(dynamic_mig=True))
    assert cp.claims[MIG].applied == () and "mig-weird" in warnings[0]


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("v2", "preparedClaims", MPS, "checkpointState"), "Prepared", "checkpointState"),
        (("v2", "preparedClaims", MPS, "preparedDevices"), "nope", "preparedDevices"),
        (("v2", "preparedClaims", MPS, "preparedDevices", 0, "devices", 0), {"tpu": {}}, "expected one of"),
    ],
)
def test_malformed_upstream_files_are_refused_naming_the_field(
    path: tuple[Any, ...], value: Any, named: str
) -> None:
    """A structurally wrong file raises CheckpointError naming where (never a partial conversion)."""
    doc = load("checkpoint-v2-dgx-h100.json")
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(CheckpointError, match=named):
        convert_upstream(doc, ctx())


def test_adoption_keeps_the_original_and_writes_nvdra_format(tmp_path: Path) -> None:
    """The file is replaced by nvdra's (decodable, same claims); the original is kept byte for byte."""
    path = tmp_path / "checkpoint.json"
    raw = (DATA / "checkpoint-v2-dgx-h100.json").read_bytes()
    path.write_bytes(raw)
    report = adopt_upstream_checkpoint(path, ctx(dynamic_mig=True))
    assert report is not None and report.claims == tuple(sorted([MPS, MIG, TS, HALF]))
    assert (tmp_path / "checkpoint.json.upstream").read_bytes() == raw
    assert set(decode_checkpoint(path.read_bytes()).claims) == {MPS, MIG, TS, HALF}
    assert adopt_upstream_checkpoint(path, ctx()) is None  # an nvdra file now: nothing to adopt


def test_non_upstream_files_are_left_alone(tmp_path: Path) -> None:
    """Absent, garbage, or an upstream-looking file that does not convert: untouched, no copy made."""
    path = tmp_path / "checkpoint.json"
    assert adopt_upstream_checkpoint(path, ctx()) is None
    path.write_bytes(b"\x00garbage")
    assert adopt_upstream_checkpoint(path, ctx()) is None
    path.write_text(json.dumps({"v2": {"preparedClaims": {"u": {"checkpointState": "Weird"}}}}))
    assert adopt_upstream_checkpoint(path, ctx()) is None
    assert not (tmp_path / "checkpoint.json.upstream").exists()
    assert not is_upstream_checkpoint({"kind": "nvdra.checkpoint", "v2": {}})
