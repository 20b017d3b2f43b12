"""GpuDriver recovery: start() repair after a crash, a corrupt checkpoint or a reboot; failed writes.

A restart is a new GpuDriver object over the same CDI root and checkpoint file, as after a process start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.checkpoint import (
    Checkpoint,
    DeviceRecord,
    PreparedClaim,
    encode_checkpoint,
)
from nvdra.core.errors import CdiError, CheckpointError
from nvdra.core.featuregates import FeatureGates
from nvdra.plugins.gpu.cdi import GpuClaimSpecs
from nvdra.plugins.gpu.devices import AllocatableDevice, allocatable_devices
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import Applied
from nvdra.plugins.state import CheckpointStore
from tests.plugins.conftest import (
    DriverNode,
    allocated_claim,
    cdi_id,
    fingerprint,
    on_disk,
    prepare_one,
    ref_of,
    result,
    spec_files,
    uid_of,
)

# -- restart repair --------------------------------------------------------------------------------


def started_entry(node: DriverNode, uid: str, device: str) -> PreparedClaim:
    """A ``PrepareStarted`` entry whose spec was already written, as a crash mid-prepare leaves it."""
    node.specs().write(uid, [allocatable_devices(node.inventory)[device]])
    return PreparedClaim(
        uid=uid,
        namespace="default",
        name="half-done",
        state="PrepareStarted",
        devices=(
            DeviceRecord(
                requests=("gpu",), pool_name="n1", device_name=device, cdi_device_ids=(cdi_id(uid, device),)
            ),
        ),
    )


def test_start_rolls_back_prepare_started_entries(node: DriverNode) -> None:
    """A PrepareStarted entry and its spec are both gone after start; completed claims are kept."""
    kept = allocated_claim([result("gpu-0")])
    assert not prepare_one(node.driver(), kept).error
    half = "11111111-2222-3333-4444-555555555555"
    node.store().save(on_disk(node).with_claim(started_entry(node, half, "gpu-1")))
    assert node.spec_path(half).exists()

    driver = node.driver()

    assert not node.spec_path(half).exists()
    assert set(on_disk(node).claims) == {uid_of(kept)}
    assert spec_files(node.cdi_root) == [node.spec_path(uid_of(kept))]
    # gpu-1 is no longer held by the rolled-back claim.
    assert not prepare_one(driver, allocated_claim([result("gpu-1")])).error


def test_start_sweeps_specs_no_entry_owns(node: DriverNode) -> None:
    """A claim spec without a checkpoint entry is removed at start; other files are left alone."""
    orphan = "99999999-8888-7777-6666-555555555555"
    node.specs().write(orphan, [allocatable_devices(node.inventory)["gpu-2"]])
    foreign = node.cdi_root / "nvidia.com-gpu.yaml"
    foreign.write_text("cdiVersion: 0.5.0\n")

    node.driver()

    assert not node.spec_path(orphan).exists()
    assert foreign.exists()


def corrupt_variants() -> dict[str, Callable[[bytes], bytes]]:
    """Ways a checkpoint file gets damaged, each a function of the valid bytes."""

    def checksum_mismatch(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["data"]["claims"] = {}  # the payload changes, the stored checksum does not
        return json.dumps(doc).encode()

    return {
        "garbage": lambda raw: b"\x00\xff not json at all",
        "truncated": lambda raw: raw[: len(raw.rstrip()) // 2],  # through the JSON, not its padding
        "empty": lambda raw: b"",
        "checksum-mismatch": checksum_mismatch,
    }


@pytest.mark.parametrize("damage", sorted(corrupt_variants()))
def test_corrupt_checkpoint_is_moved_aside_and_start_works(node: DriverNode, damage: str) -> None:
    """A damaged checkpoint without a usable shadow is renamed to checkpoint.json.corrupt-*, state
    starts empty, prepares work."""
    claim = allocated_claim([result("gpu-3")])
    assert not prepare_one(node.driver(), claim).error
    damaged = corrupt_variants()[damage](node.checkpoint_path.read_bytes())
    node.checkpoint_path.write_bytes(damaged)
    shadow = node.checkpoint_path.with_name("checkpoint.json.shadow")
    shadow.write_bytes(damaged)

    driver = node.driver(start=False)
    report = driver.start()

    assert report.recovered_from is None
    assert report.corrupt_moved_to is not None
    assert report.corrupt_moved_to.name.startswith("checkpoint.json.corrupt-")
    assert report.corrupt_moved_to.read_bytes() == damaged
    assert driver.checkpoint().claims == {}
    assert on_disk(node).claims == {}
    # Its spec has no owner any more, so it was swept; the device can be prepared again.
    assert spec_files(node.cdi_root) == []
    assert not prepare_one(driver, allocated_claim([result("gpu-3")])).error


@pytest.mark.parametrize("rest", ["old", "unwritten"])
def test_a_checkpoint_torn_mid_write_is_taken_from_its_shadow(node: DriverNode, rest: str) -> None:
    """A crash in the middle of the in-place write leaves the file's first part new and the rest as it
    was (or never written, after a power loss), its size unchanged, and the shadow whole: the start moves
    the damaged file aside, goes on with the shadow's claims and keeps their specs."""
    first = allocated_claim([result("gpu-3")], name="first")
    driver = node.driver()
    assert not prepare_one(driver, first).error
    before = node.checkpoint_path.read_bytes()
    second = allocated_claim([result("gpu-4")], name="second")
    assert not prepare_one(driver, second).error
    after = node.checkpoint_path.read_bytes()
    shadow = node.checkpoint_path.with_name("checkpoint.json.shadow")
    assert shadow.read_bytes() == after and len(after) == len(before)
    cut = len(after.rstrip()) // 2
    tail = before[cut:] if rest == "old" else bytes(len(after) - cut)
    node.checkpoint_path.write_bytes(after[:cut] + tail)

    driver = node.driver(start=False)
    report = driver.start()

    assert report.recovered_from == shadow and report.corrupt_moved_to is not None
    assert set(driver.checkpoint().claims) == {first["metadata"]["uid"], second["metadata"]["uid"]}
    assert on_disk(node) == driver.checkpoint()
    assert len(spec_files(node.cdi_root)) == 2
    assert prepare_one(driver, allocated_claim([result("gpu-4")], name="other")).error  # still held


def test_a_shadow_of_another_size_is_not_used(node: DriverNode) -> None:
    """A shadow that is not the size of the damaged file is not from its in-place write (e.g. left by a
    downgrade): the start moves the file aside and starts empty, as without a shadow."""
    assert not prepare_one(node.driver(), allocated_claim([result("gpu-3")])).error
    shadow = node.checkpoint_path.with_name("checkpoint.json.shadow")
    shadow.write_bytes(shadow.read_bytes().rstrip() + b"\n")  # valid, unpadded
    raw = node.checkpoint_path.read_bytes()
    node.checkpoint_path.write_bytes(bytes(len(raw)))

    report = node.driver(start=False).start()

    assert report.recovered_from is None and report.corrupt_moved_to is not None
    assert on_disk(node).claims == {} and spec_files(node.cdi_root) == []


def test_changed_boot_id_discards_entries(node: DriverNode) -> None:
    """After a reboot (new boot id) old entries are dropped, their specs swept, devices free."""
    claim = allocated_claim([result("gpu-4")], name="before-reboot")
    assert not prepare_one(node.driver(boot_id="boot-a"), claim).error

    driver = node.driver(boot_id="boot-b", start=False)
    report = driver.start()

    assert report.corrupt_moved_to is None
    assert len(report.discarded_after_reboot) == 1 and "before-reboot" in report.discarded_after_reboot[0]
    assert json.loads(node.checkpoint_path.read_bytes())["data"]["nodeBootID"] == "boot-b"
    assert on_disk(node, "boot-b").claims == {}
    assert spec_files(node.cdi_root) == []
    assert not prepare_one(driver, allocated_claim([result("gpu-4")])).error


def test_prepared_claim_survives_a_restart(node: DriverNode) -> None:
    """A new driver object over the same dirs answers the old prepare and its unprepare removes the spec."""
    claim = allocated_claim([result("gpu-0"), result("gpu-1")])
    first = prepare_one(node.driver(), claim)
    spec_before = fingerprint(node.spec_path(uid_of(claim)))

    restarted = node.driver()

    assert prepare_one(restarted, claim) == first
    assert fingerprint(node.spec_path(uid_of(claim))) == spec_before
    assert "gpu-0" in prepare_one(restarted, allocated_claim([result("gpu-0")])).error
    assert restarted.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert not node.spec_path(uid_of(claim)).exists()


def test_checkpoint_is_private(node: DriverNode) -> None:
    """The checkpoint file and its shadow are written mode 0600 (they name claims of every namespace)."""
    node.driver()
    shadow = node.checkpoint_path.with_name("checkpoint.json.shadow")
    assert node.checkpoint_path.stat().st_mode & 0o777 == 0o600
    assert shadow.stat().st_mode & 0o777 == 0o600
    # The document, padded with spaces before its last newline to 4 KiB.
    padded = node.checkpoint_path.read_bytes()
    assert len(padded) == 4096 and padded.endswith(b" \n")
    assert encode_checkpoint(on_disk(node)) == padded.rstrip() + b"\n" and shadow.read_bytes() == padded
    assert os.access(node.checkpoint_path, os.R_OK)


# -- failures while applying -----------------------------------------------------------------------


class FailingSpecs(GpuClaimSpecs):
    """Real claim specs, except that writing those of ``fail_uids`` fails like a full disk."""

    def __init__(self, fail_uids: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_uids = fail_uids

    def write(
        self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied] = ()
    ) -> None:
        if claim_uid in self.fail_uids:
            raise CdiError(f"cannot write CDI spec for {claim_uid}: No space left on device")
        super().write(claim_uid, devices, applied)

    def write_many(
        self, claims: Mapping[str, Sequence[AllocatableDevice]]
    ) -> dict[str, BaseException | None]:
        """A call's batch: the failing claims fail alike, the others are written for real."""
        out: dict[str, BaseException | None] = {
            uid: CdiError(f"cannot write CDI spec for {uid}: No space left on device")
            for uid in claims
            if uid in self.fail_uids
        }
        out.update(super().write_many({uid: d for uid, d in claims.items() if uid not in self.fail_uids}))
        return out


class FailingStore(CheckpointStore):
    """A real checkpoint store whose save number ``fail_at`` (1-based) fails like an I/O error."""

    def __init__(self, path: Path, *, boot_id: str, fail_at: int) -> None:
        super().__init__(path, boot_id=boot_id)
        self.fail_at = fail_at
        self.saves = 0

    def save(self, cp: Checkpoint) -> None:
        self.saves += 1
        if self.saves == self.fail_at:
            raise CheckpointError(f"cannot write {self.path}: Input/output error")
        super().save(cp)


def test_spec_write_failure_fails_only_that_claim(node: DriverNode) -> None:
    """If one claim's spec cannot be written, only it fails, with no entry; the other is prepared."""
    good = allocated_claim([result("gpu-0")])
    bad = allocated_claim([result("gpu-1")])
    specs = FailingSpecs(
        {uid_of(bad)},
        cdi_root=node.cdi_root,
        host_driver_root=node.driver_root,
        container_driver_root=node.driver_root,
        driver_version=node.inventory.driver_version,
    )
    driver = GpuDriver(
        node_name="n1",
        inventory=node.inventory,
        gates=FeatureGates.defaults(),
        store=node.store(),
        specs=specs,
    )
    try:
        driver.start()
        answers = driver.prepare_resource_claims([good, bad])
    finally:
        driver.close()

    assert not answers[uid_of(good)].error
    assert "No space left" in answers[uid_of(bad)].error
    assert spec_files(node.cdi_root) == [node.spec_path(uid_of(good))]
    assert {u: c.state for u, c in on_disk(node).claims.items()} == {uid_of(good): "PrepareCompleted"}


def test_checkpoint_write_failure_fails_the_call_and_leaves_nothing_after_restart(node: DriverNode) -> None:
    """A failed checkpoint write fails every claim of the call; a restart leaves no spec behind.

    Save 1 is start()'s own; save 2 records PrepareCompleted (a claim without effects has no
    PrepareStarted record: its spec is written beside that save).
    """
    claim = allocated_claim([result("gpu-2")])
    store = FailingStore(node.checkpoint_path, boot_id="boot-1", fail_at=2)
    driver = GpuDriver(
        node_name="n1",
        inventory=node.inventory,
        gates=FeatureGates.defaults(),
        store=store,
        specs=node.specs(),
    )
    try:
        driver.start()
        answer = prepare_one(driver, claim)
    finally:
        driver.close()

    assert "Input/output error" in answer.error and answer.devices == ()
    node.driver()  # the next process start
    assert spec_files(node.cdi_root) == []
    assert on_disk(node).claims == {}
