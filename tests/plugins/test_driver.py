"""GpuDriver on a simulated dgx-h100 with real CDI specs and a real checkpoint file: prepare and unprepare.

Covers the answers, idempotence (nothing rewritten), refusals, per-claim config errors, request-name
mapping, adminAccess, MIG devices and unprepare. Restart repair is in ``test_driver_recovery.py``,
the fabric example in ``test_driver_fabric.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.devices import Inventory
from nvdra.kubeletplugin.types import ClaimRef, PreparedDevice, PrepareResult
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.devices import allocatable_devices
from tests.plugins.conftest import (
    CDI_KIND,
    DriverNode,
    allocated_claim,
    cdi_id,
    fingerprint,
    gpu_config,
    on_disk,
    opaque,
    prepare_one,
    ref_of,
    result,
    spec_files,
    uid_of,
)

JsonObject = dict[str, Any]


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


def test_a_refused_claim_holds_nothing_for_the_claims_after_it(node: DriverNode) -> None:
    """A claim of the call refused for its config holds no device: a later claim of the same call
    allocated that device is prepared, and a third one wanting it again is refused for the second."""
    driver = node.driver()
    refused = allocated_claim([result("gpu-6")], config=[opaque(gpu_config(bogus=1))])
    taker = allocated_claim([result("gpu-6")])
    third = allocated_claim([result("gpu-6")])

    answers = driver.prepare_resource_claims([refused, taker, third])

    assert "bogus" in answers[uid_of(refused)].error
    assert not answers[uid_of(taker)].error
    assert "same request" in answers[uid_of(third)].error and uid_of(taker) in answers[uid_of(third)].error
    assert set(on_disk(node).claims) == {uid_of(taker)}


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


# -- admin access ---------------------------------------------------------------------------------


def test_regular_claim_may_follow_an_admin_access_claim(node: DriverNode) -> None:
    """A device prepared for an adminAccess claim can still be prepared for a regular claim afterwards."""
    driver = node.driver()
    admin = allocated_claim([result("gpu-6", admin=True)])
    regular = allocated_claim([result("gpu-6")])
    assert not prepare_one(driver, admin).error

    assert prepare_one(driver, regular).error == ""


def test_admin_access_and_regular_claim_in_one_call_both_prepare(node: DriverNode) -> None:
    """In one call, an adminAccess claim listed first does not make a regular claim of the device fail."""
    driver = node.driver()
    admin = allocated_claim([result("gpu-5", admin=True)])
    regular = allocated_claim([result("gpu-5")])

    answers = driver.prepare_resource_claims([admin, regular])

    assert answers[uid_of(admin)].error == ""
    assert answers[uid_of(regular)].error == ""
