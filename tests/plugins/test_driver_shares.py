"""Consumable shares at prepare: results with a shareID share a GPU; admin access reconfigures nothing."""

from __future__ import annotations

from typing import Any

import attrs

from nvdra.core.effects import EffectRecord
from nvdra.plugins.gpu.effects import ClaimContext, Effects
from tests.plugins.conftest import DriverNode, allocated_claim, prepare_one, ref_of, result, uid_of

JsonObject = dict[str, Any]


def share(device: str, share_id: str, **kw: Any) -> JsonObject:
    return {**result(device, **kw), "shareID": share_id, "consumedCapacity": {"memory": "10Gi"}}


def test_shares_of_one_gpu_are_prepared_for_each_claim(node: DriverNode) -> None:
    """With consumable shares on, two claims holding shares of gpu-4 both prepare, each with its own CDI
    device; unpreparing one leaves the other's spec and entry."""
    driver = node.driver(shares=True)
    a = allocated_claim([share("gpu-4", "11111111-0000-0000-0000-000000000001")], name="a")
    b = allocated_claim([share("gpu-4", "11111111-0000-0000-0000-000000000002")], name="b")
    first, second = prepare_one(driver, a), prepare_one(driver, b)
    assert not first.error and not second.error
    assert first.devices[0].share_id == "11111111-0000-0000-0000-000000000001"
    assert first.devices[0].cdi_device_ids != second.devices[0].cdi_device_ids
    assert driver.unprepare_resource_claims([ref_of(a)]) == {uid_of(a): ""}
    assert node.spec_path(uid_of(b)).exists() and not node.spec_path(uid_of(a)).exists()
    assert uid_of(b) in driver.checkpoint().claims


def test_a_share_never_joins_an_exclusive_holder(node: DriverNode) -> None:
    """A device held without a share stays exclusive, and a claim without a share cannot join shares."""
    driver = node.driver(shares=True)
    exclusive = allocated_claim([result("gpu-1")], name="exclusive")
    assert not prepare_one(driver, exclusive).error
    joined = prepare_one(driver, allocated_claim([share("gpu-1", "22222222-0000-0000-0000-000000000001")]))
    assert "already prepared" in joined.error
    assert not prepare_one(
        driver, allocated_claim([share("gpu-2", "22222222-0000-0000-0000-000000000002")])
    ).error
    plain = prepare_one(driver, allocated_claim([result("gpu-2")]))
    assert "already prepared" in plain.error


def test_shares_off_keeps_devices_exclusive(node: DriverNode) -> None:
    """Without --consumable-shares a shareID does not open a held device (the node never offered shares)."""
    driver = node.driver()
    assert not prepare_one(
        driver, allocated_claim([share("gpu-3", "33333333-0000-0000-0000-000000000001")])
    ).error
    again = prepare_one(driver, allocated_claim([share("gpu-3", "33333333-0000-0000-0000-000000000002")]))
    assert "already prepared" in again.error


@attrs.define
class _Seen:
    """A planner that records which devices each claim's effects were planned for."""

    devices: list[list[str]] = attrs.Factory(list)

    def plan(self, ctx: ClaimContext) -> list[EffectRecord]:
        self.devices.append([d.name for d in ctx.devices])
        return []


def test_admin_access_devices_are_never_reconfigured(node: DriverNode) -> None:
    """Effect planners (time slicing, MPS, MIG, fabric) never see an admin-access device."""
    seen = _Seen()
    driver = node.driver(effects=Effects(planners=[seen]))
    claim = allocated_claim([result("gpu-0", admin=True), result("gpu-1", request="other")])
    assert not prepare_one(driver, claim).error
    assert seen.devices == [["gpu-1"]]


def test_the_node_publishes_shareable_gpus_and_the_scheduler_packs_them() -> None:
    """CONSUMABLE_SHARES=2 with the gate: every GPU has allowMultipleAllocations, memory and 2 shares,
    and the allocator puts two claims on the first GPU and the third on the next."""
    from nvdra.alloc import Allocator, allocated_devices, builtin_device_classes, consumed_capacity
    from nvdra.tool.devices import node_publication, slice_objects

    env = {"CONSUMABLE_SHARES": "2"}
    pub = node_publication("dgx-h100", node_name="n1", feature_gates="ConsumableShares=true", env=env)
    devices = [d for p in pub.resources.pools.values() for s in p.slices for d in s.devices]
    assert devices and all(d["allowMultipleAllocations"] is True for d in devices)
    assert all(d["capacity"]["shares"]["value"] == "2" for d in devices)
    slices = slice_objects(pub.resources, driver="gpu.nvidia.com", node_name="n1")
    done: list[JsonObject] = []
    for i in range(3):
        claim = {
            "metadata": {"name": f"c{i}", "namespace": "ns"},
            "spec": {
                "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}
            },
        }
        alloc = Allocator(
            slices,
            builtin_device_classes(),
            node_name="n1",
            allocated=allocated_devices(done),
            consumed=consumed_capacity(done),
        )
        outcome = alloc.allocate([claim])
        assert outcome.allocations is not None
        done.append({**claim, "status": {"allocation": outcome.allocations[0]}})
    placed = [c["status"]["allocation"]["devices"]["results"][0]["device"] for c in done]
    assert placed == ["gpu-0", "gpu-0", "gpu-1"]
