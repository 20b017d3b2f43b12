"""GpuDriver on a simulated dgx-h100 with real CDI specs and a real checkpoint file.

Covers prepare (answers, idempotence, refusals, per-claim config errors), unprepare, and the repair
done by ``start()`` after a crash, a corrupt checkpoint or a reboot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.checkpoint import Checkpoint, DeviceRecord, PreparedClaim, encode_checkpoint
from nvdra.core.devices import Inventory
from nvdra.core.errors import CdiError, CheckpointError
from nvdra.core.featuregates import FeatureGates
from nvdra.kubeletplugin.types import ClaimRef, PreparedDevice, PrepareResult
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.cdi import GpuClaimSpecs
from nvdra.plugins.gpu.devices import AllocatableDevice, allocatable_devices
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.state import CheckpointStore
from tests.plugins.conftest import (
    DriverNode,
    allocated_claim,
    gpu_config,
    opaque,
    result,
    sample_claim,
    spec_files,
)

JsonObject = dict[str, Any]
CDI_KIND = "k8s.gpu.nvidia.com/claim"


def ref_of(claim: JsonObject) -> ClaimRef:
    """The kubelet's reference to ``claim``."""
    meta = claim["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def uid_of(claim: JsonObject) -> str:
    """The claim's UID."""
    return str(claim["metadata"]["uid"])


def prepare_one(driver: GpuDriver, claim: JsonObject) -> PrepareResult:
    """Prepare a single claim and return its result."""
    return driver.prepare_resource_claims([claim])[uid_of(claim)]


def on_disk(node: DriverNode, boot_id: str = "boot-1") -> Checkpoint:
    """The checkpoint as a restarted plugin (same boot unless told) would read it."""
    checkpoint, _ = node.store(boot_id).load()
    return checkpoint


def cdi_id(uid: str, device: str) -> str:
    """The CDI device id the driver must return for ``device`` of claim ``uid``."""
    return f"{CDI_KIND}={uid}-{device}"


def fingerprint(path: Path) -> tuple[int, int, int]:
    """(inode, mtime ns, size): changes whenever the file is rewritten (atomic writes replace the inode)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


# -- prepare ---------------------------------------------------------------------------------------


def test_one_gpu_prepare_returns_cdi_id_and_writes_a_schema_valid_spec(
    node: DriverNode, cdi_schema: Callable[[Path], JsonObject]
) -> None:
    """A one-GPU claim gets k8s.gpu.nvidia.com/claim=<uid>-gpu-0 and a valid spec naming /dev/nvidia0."""
    driver = node.driver()
    claim = allocated_claim([result("gpu-0")])
    uid = uid_of(claim)

    answer = prepare_one(driver, claim)

    assert answer == PrepareResult(
        devices=(
            PreparedDevice(
                requests=("gpu",), pool_name="n1", device_name="gpu-0", cdi_device_ids=(cdi_id(uid, "gpu-0"),)
            ),
        )
    )
    assert spec_files(node.cdi_root) == [node.spec_path(uid)]
    doc = cdi_schema(node.spec_path(uid))
    assert doc["kind"] == CDI_KIND
    assert [d["name"] for d in doc["devices"]] == [f"{uid}-gpu-0"]
    paths = [n["path"] for n in doc["devices"][0]["containerEdits"]["deviceNodes"]]
    assert paths == ["/dev/nvidia0"]
    entry = on_disk(node).claims[uid]
    assert entry.state == "PrepareCompleted"
    assert [d.device_name for d in entry.devices] == ["gpu-0"]


def test_repeated_prepare_returns_the_same_answer_and_writes_nothing(node: DriverNode) -> None:
    """A second prepare of a completed claim answers identically and rewrites neither spec nor checkpoint."""
    driver = node.driver()
    claim = allocated_claim([result("gpu-1"), result("gpu-2")])
    first = prepare_one(driver, claim)
    spec_before = fingerprint(node.spec_path(uid_of(claim)))
    checkpoint_before = fingerprint(node.checkpoint_path)

    second = prepare_one(driver, claim)

    assert not first.error
    assert second == first
    assert fingerprint(node.spec_path(uid_of(claim))) == spec_before
    assert fingerprint(node.checkpoint_path) == checkpoint_before


def test_device_held_by_another_claim_is_refused(node: DriverNode) -> None:
    """A device prepared for claim A is refused to claim B, which leaves no spec and no entry."""
    driver = node.driver()
    holder = allocated_claim([result("gpu-4")], name="holder")
    other = allocated_claim([result("gpu-4")], name="other")
    assert not prepare_one(driver, holder).error

    refused = prepare_one(driver, other)

    assert "gpu-4" in refused.error and "already prepared" in refused.error
    assert "holder" in refused.error
    assert refused.devices == ()
    assert spec_files(node.cdi_root) == [node.spec_path(uid_of(holder))]
    assert set(on_disk(node).claims) == {uid_of(holder)}


def test_two_claims_of_one_call_wanting_one_device_one_is_refused(node: DriverNode) -> None:
    """Within one call, only the first of two claims allocated the same device is prepared."""
    driver = node.driver()
    first = allocated_claim([result("gpu-5")])
    second = allocated_claim([result("gpu-5")])

    answers = driver.prepare_resource_claims([first, second])

    assert not answers[uid_of(first)].error
    assert "gpu-5" in answers[uid_of(second)].error
    assert "same request" in answers[uid_of(second)].error
    assert spec_files(node.cdi_root) == [node.spec_path(uid_of(first))]
    assert set(on_disk(node).claims) == {uid_of(first)}


@pytest.mark.parametrize(
    ("alloc", "words"),
    [
        (result("gpu-8"), ("'gpu-8'", "not published")),
        (result("gpu-0", pool="n2"), ("'gpu-0'", "'n2'", "'n1'")),
        (result("gpu-0-mig-1g.10gb-0-0"), ("'gpu-0-mig-1g.10gb-0-0'", "not published")),
    ],
    ids=["unknown-device", "wrong-pool", "mig-device-not-present"],
)
def test_device_not_on_this_node_is_refused_by_name(
    node: DriverNode, alloc: JsonObject, words: tuple[str, ...]
) -> None:
    """A device this node does not publish, or one from another pool, fails the claim naming it."""
    driver = node.driver()
    claim = allocated_claim([result("gpu-1"), alloc])

    answer = prepare_one(driver, claim)

    for word in words:
        assert word in answer.error
    assert spec_files(node.cdi_root) == []
    assert on_disk(node).claims == {}


def test_claim_without_devices_of_this_driver_is_refused(node: DriverNode) -> None:
    """A claim allocated only another driver's devices fails with the driver name in the message."""
    driver = node.driver()
    claim = allocated_claim([result("gpu-0", driver="compute-domain.nvidia.com")])

    assert "gpu.nvidia.com" in prepare_one(driver, claim).error
    assert spec_files(node.cdi_root) == []


BAD_CONFIGS = [
    pytest.param(opaque(gpu_config(bogus=1)), ("bogus", "unknown field"), id="unknown-field"),
    pytest.param(
        opaque(gpu_config(sharing={"strategy": "MPS"})),
        ("sharing.strategy", "MPSSupport"),
        id="mps-without-gate",
    ),
    pytest.param(
        opaque({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "MigDeviceConfig"}, requests=["gpu"]),
        ("config[0]", "MigDeviceConfig", "gpu-3"),
        id="wrong-kind-scoped-to-request",
    ),
    pytest.param(
        opaque(gpu_config(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}})),
        ("sharing.strategy", "TimeSlicingSettings"),
        id="time-slicing-without-gate",
    ),
]


@pytest.mark.parametrize(("config", "words"), BAD_CONFIGS)
def test_bad_opaque_config_fails_only_that_claim(
    node: DriverNode, config: JsonObject, words: tuple[str, ...]
) -> None:
    """A bad config fails its own claim (message names the field) and leaves no spec or entry for it."""
    driver = node.driver()
    good = allocated_claim([result("gpu-2")])
    bad = allocated_claim([result("gpu-3")], config=[config])

    answers = driver.prepare_resource_claims([good, bad])

    assert not answers[uid_of(good)].error
    assert answers[uid_of(bad)].devices == ()
    for word in words:
        assert word in answers[uid_of(bad)].error
    assert spec_files(node.cdi_root) == [node.spec_path(uid_of(good))]
    assert set(on_disk(node).claims) == {uid_of(good)}


def test_multi_request_claim_maps_request_names(node: DriverNode) -> None:
    """Each device is returned for its own request; a subrequest ``req/sub`` is returned as ``req``."""
    driver = node.driver()
    claim = allocated_claim(
        [result("gpu-0", request="train"), result("gpu-1", request="infer/small"), result("gpu-2")]
    )
    uid = uid_of(claim)

    answer = prepare_one(driver, claim)

    assert [(d.device_name, d.requests) for d in answer.devices] == [
        ("gpu-0", ("train",)),
        ("gpu-1", ("infer",)),
        ("gpu-2", ("gpu",)),
    ]
    assert [d.cdi_device_ids for d in answer.devices] == [(cdi_id(uid, f"gpu-{i}"),) for i in range(3)]


def test_admin_access_result_may_share_a_prepared_device(node: DriverNode) -> None:
    """An adminAccess result gets a device another claim holds; a plain claim still does not."""
    driver = node.driver()
    holder = allocated_claim([result("gpu-6")])
    admin = allocated_claim([result("gpu-6", admin=True)])
    plain = allocated_claim([result("gpu-6")])
    assert not prepare_one(driver, holder).error

    assert not prepare_one(driver, admin).error
    assert "gpu-6" in prepare_one(driver, plain).error
    assert node.spec_path(uid_of(admin)).exists()

    assert driver.unprepare_resource_claims([ref_of(admin)]) == {uid_of(admin): ""}
    assert node.spec_path(uid_of(holder)).exists()


# -- the README's fabric example -------------------------------------------------------------------

README_PARAMETERS: JsonObject = {
    # The GpuConfig of the user's README (FabricManager section), exactly as written there.
    "apiVersion": "nvidia.com/v1beta1",
    "kind": "GpuConfig",
    "sharing": {"strategy": "TimeSlicing"},
    "fabricTopologyConfig": {
        "strategy": "Auto",
        "partitionSize": 4,
        "virtualizationModel": "BareMetal",
        "minBandwidth": 600.0,
        "maxLatency": 0.1,
        "partitionIDs": ["partition-1"],
    },
}
FABRIC_GATES = "TimeSlicingSettings=true,FabricTopologySupport=true"


def readme_claim() -> JsonObject:
    """The README's parameters as a claim config over gpu-0 … gpu-3 of pool n1."""
    return allocated_claim(
        [result(f"gpu-{i}", request="gpus") for i in range(4)],
        config=[opaque(README_PARAMETERS, requests=["gpus"])],
    )


def test_readme_fabric_example_prepares_with_its_gates(node: DriverNode) -> None:
    """The README's GpuConfig (Auto with partitionIDs) prepares four GPUs when both gates are on."""
    driver = node.driver(gates=FABRIC_GATES)
    claim = readme_claim()

    answer = prepare_one(driver, claim)

    assert answer.error == ""
    assert [d.device_name for d in answer.devices] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert node.spec_path(uid_of(claim)).exists()


def test_sample_claim_with_class_and_claim_configs_prepares(
    tmp_path: Path, node: DriverNode, cdi_schema: Callable[[Path], JsonObject]
) -> None:
    """The real allocated sample claim (pool sim-a, class + claim GpuConfig) prepares on node sim-a."""
    sim_a = DriverNode(tmp_path / "sim-a", node.inventory, node.driver_root, node_name="sim-a")
    try:
        claim = sample_claim()
        answer = prepare_one(sim_a.driver(gates=FABRIC_GATES), claim)
        assert answer.error == ""
        assert {d.pool_name for d in answer.devices} == {"sim-a"}
        assert len(cdi_schema(sim_a.spec_path(uid_of(claim)))["devices"]) == 4
    finally:
        sim_a.close()


@pytest.mark.parametrize(
    ("gates", "missing"),
    [
        ("TimeSlicingSettings=true", "FabricTopologySupport"),
        ("FabricTopologySupport=true", "TimeSlicingSettings"),
    ],
)
def test_readme_fabric_example_is_refused_naming_the_missing_gate(
    node: DriverNode, gates: str, missing: str
) -> None:
    """With one of its gates off the README example fails with a message naming that gate."""
    driver = node.driver(gates=gates)
    claim = readme_claim()

    answer = prepare_one(driver, claim)

    assert missing in answer.error
    assert spec_files(node.cdi_root) == []
    assert on_disk(node).claims == {}


# -- unprepare -------------------------------------------------------------------------------------


def test_unprepare_removes_spec_and_entry_and_is_idempotent(node: DriverNode) -> None:
    """Unprepare deletes the spec and the entry; a second unprepare and unknown claims succeed."""
    driver = node.driver()
    claim = allocated_claim([result("gpu-7")])
    unknown = ClaimRef(namespace="default", name="never", uid="00000000-0000-0000-0000-000000000001")
    assert not prepare_one(driver, claim).error

    assert driver.unprepare_resource_claims([ref_of(claim), unknown]) == {uid_of(claim): "", unknown.uid: ""}
    assert spec_files(node.cdi_root) == []
    assert on_disk(node).claims == {}
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    # The device is free again.
    assert not prepare_one(driver, allocated_claim([result("gpu-7")])).error


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
        "truncated": lambda raw: raw[: len(raw) // 2],
        "empty": lambda raw: b"",
        "checksum-mismatch": checksum_mismatch,
    }


@pytest.mark.parametrize("damage", sorted(corrupt_variants()))
def test_corrupt_checkpoint_is_moved_aside_and_start_works(node: DriverNode, damage: str) -> None:
    """A damaged checkpoint is renamed to checkpoint.json.corrupt-*, state starts empty, prepares work."""
    claim = allocated_claim([result("gpu-3")])
    assert not prepare_one(node.driver(), claim).error
    damaged = corrupt_variants()[damage](node.checkpoint_path.read_bytes())
    node.checkpoint_path.write_bytes(damaged)

    driver = node.driver(start=False)
    report = driver.start()

    assert report.corrupt_moved_to is not None
    assert report.corrupt_moved_to.name.startswith("checkpoint.json.corrupt-")
    assert report.corrupt_moved_to.read_bytes() == damaged
    assert driver.checkpoint().claims == {}
    assert on_disk(node).claims == {}
    # Its spec has no owner any more, so it was swept; the device can be prepared again.
    assert spec_files(node.cdi_root) == []
    assert not prepare_one(driver, allocated_claim([result("gpu-3")])).error


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
    """The checkpoint file is written mode 0600 (it names claims of every namespace)."""
    node.driver()
    assert node.checkpoint_path.stat().st_mode & 0o777 == 0o600
    assert encode_checkpoint(on_disk(node)) == node.checkpoint_path.read_bytes()
    assert os.access(node.checkpoint_path, os.R_OK)


# -- MIG devices (a100-mig profile) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mig_node_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Inventory, Path]:
    """Inventory and driver root (with MIG capability files) of the simulated a100-mig node."""
    backend = SimulatedNvml(load_profile("a100-mig"))
    backend.init()
    try:
        inventory = discover_inventory(backend)
        root = make_simulated_driver_root(backend, tmp_path_factory.mktemp("mig-driver-root"))
    finally:
        backend.shutdown()
    return inventory, root


def test_mig_device_prepares_with_its_capability_nodes(
    tmp_path: Path, mig_node_parts: tuple[Inventory, Path], cdi_schema: Callable[[Path], JsonObject]
) -> None:
    """A static MIG device gets its parent's /dev/nvidiaN plus its GI and CI capability nodes."""
    inventory, root = mig_node_parts
    mig_node = DriverNode(tmp_path, inventory, root)
    try:
        driver = mig_node.driver()
        mig = next(d for d in allocatable_devices(inventory).values() if d.mig is not None)
        claim = allocated_claim([result(mig.name)])

        answer = prepare_one(driver, claim)

        assert answer.error == ""
        assert answer.devices[0].cdi_device_ids == (cdi_id(uid_of(claim), mig.name),)
        doc = cdi_schema(mig_node.spec_path(uid_of(claim)))
        nodes = [n["path"] for n in doc["devices"][0]["containerEdits"]["deviceNodes"]]
        assert nodes[0] == f"/dev/nvidia{mig.gpu.minor}"
        assert len(nodes) == 3 and all(n.startswith("/dev/nvidia-caps/nvidia-cap") for n in nodes[1:])
        # The MIG-enabled parent itself is not published, so it cannot be prepared as a whole GPU.
        whole = allocated_claim([result(f"gpu-{mig.gpu.index}")])
        assert "not published" in prepare_one(driver, whole).error
    finally:
        mig_node.close()


# -- failures while applying -----------------------------------------------------------------------


class FailingSpecs(GpuClaimSpecs):
    """Real claim specs, except that writing those of ``fail_uids`` fails like a full disk."""

    def __init__(self, fail_uids: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_uids = fail_uids

    def write(self, claim_uid: str, devices: Sequence[AllocatableDevice]) -> None:
        if claim_uid in self.fail_uids:
            raise CdiError(f"cannot write CDI spec for {claim_uid}: No space left on device")
        super().write(claim_uid, devices)


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


@pytest.mark.parametrize("fail_at", [2, 3], ids=["prepare-started-save", "prepare-completed-save"])
def test_checkpoint_write_failure_fails_the_call_and_leaves_nothing_after_restart(
    node: DriverNode, fail_at: int
) -> None:
    """A failed checkpoint write fails every claim of the call; a restart leaves no spec behind.

    Save 1 is start()'s own; save 2 records PrepareStarted, save 3 PrepareCompleted.
    """
    claim = allocated_claim([result("gpu-2")])
    store = FailingStore(node.checkpoint_path, boot_id="boot-1", fail_at=fail_at)
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


# -- gaps against the architecture (strict xfail: they flip to failures once fixed) -----------------


@pytest.mark.xfail(
    strict=True,
    reason="GpuDriver does not verify fabricTopologyConfig at prepare (ARCHITECTURE §4: 'Prepare verifies "
    "the allocated GPUs satisfy the config (or fails the claim with a precise reason)')",
)
def test_gpus_that_cannot_form_the_partition_size_are_refused(node: DriverNode) -> None:
    """Two GPUs allocated under partitionSize 4 cannot form the partition, so the claim must fail."""
    driver = node.driver(gates=FABRIC_GATES)
    claim = allocated_claim(
        [result("gpu-0", request="gpus"), result("gpu-5", request="gpus")],
        config=[opaque(README_PARAMETERS, requests=["gpus"])],
    )

    answer = prepare_one(driver, claim)

    assert "partition" in answer.error
    assert spec_files(node.cdi_root) == []


ADMIN_REASON = (
    "an adminAccess claim blocks regular claims of the same device: holder_of() and the in-batch check "
    "count admin-access devices as held (driver.py _check_result/_plan; DeviceRecord has no admin flag)"
)


@pytest.mark.xfail(strict=True, reason=ADMIN_REASON)
def test_regular_claim_may_follow_an_admin_access_claim(node: DriverNode) -> None:
    """A device prepared for an adminAccess claim can still be prepared for a regular claim afterwards."""
    driver = node.driver()
    admin = allocated_claim([result("gpu-6", admin=True)])
    regular = allocated_claim([result("gpu-6")])
    assert not prepare_one(driver, admin).error

    assert prepare_one(driver, regular).error == ""


@pytest.mark.xfail(strict=True, reason=ADMIN_REASON)
def test_admin_access_and_regular_claim_in_one_call_both_prepare(node: DriverNode) -> None:
    """In one call, an adminAccess claim listed first does not make a regular claim of the device fail."""
    driver = node.driver()
    admin = allocated_claim([result("gpu-5", admin=True)])
    regular = allocated_claim([result("gpu-5")])

    answers = driver.prepare_resource_claims([admin, regular])

    assert answers[uid_of(admin)].error == ""
    assert answers[uid_of(regular)].error == ""
