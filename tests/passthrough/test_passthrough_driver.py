"""Passthrough claims on the simulated sysfs tree: bind, hidden sibling, CDI, restore, crash recovery."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin.types import DriverResources
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import Effects
from nvdra.plugins.gpu.vfio import PassthroughView, VfioExecutor, VfioPlanner, ensure_vfio_ready
from nvdra.plugins.gpu.vfio_host import SimulatedSysfs, make_simulated_sysfs
from tests.plugins.conftest import (
    DriverNode,
    KilledAtSpecWrite,
    allocated_claim,
    opaque,
    prepare_one,
    ref_of,
    result,
    uid_of,
)

JsonObject = dict[str, Any]
GATES = "PassthroughSupport=true"


def vfio_config(**iommu: Any) -> JsonObject:
    body: JsonObject = {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "VfioDeviceConfig"}
    if iommu:
        body["iommu"] = iommu
    return body


class Passthrough:
    """A simulated node with passthrough on: sysfs tree, drivers over the node's state, publications."""

    def __init__(self, node: DriverNode, tmp_path: Path, sriov: dict[str, int] | None = None) -> None:
        self.node = node
        self.host = make_simulated_sysfs(tmp_path / "host", node.inventory, sriov_vfs=sriov)
        ensure_vfio_ready(self.host)
        self.published: list[DriverResources] = []
        self.sleeps: list[float] = []

    def address(self, gpu: str) -> str:
        return next(g.pci_bus_id for g in self.node.inventory.gpus if g.name == gpu)

    def driver(self, *, wait_timeout: float = 60.0, start: bool = True) -> GpuDriver:
        host = SimulatedSysfs(self.host.root)  # a restarted plugin opens the same tree
        executor = VfioExecutor(host, wait_timeout=wait_timeout, sleep=self.sleeps.append, clock=self._clock)
        driver = GpuDriver(
            node_name=self.node.node_name,
            inventory=self.node.inventory,
            gates=parse_feature_gates(GATES),
            store=self.node.store(),
            specs=self.node.specs(),
            effects=Effects([VfioPlanner()], [executor]),
            views=[PassthroughView(host, self.node.inventory)],
        )
        self.node._drivers.append(driver)
        driver.on_resources_changed = self.published.append
        if start:
            driver.start()
        return driver

    def _clock(self) -> float:
        return sum(self.sleeps)  # time passes only while the executor waits


@pytest.fixture
def pt(node: DriverNode, tmp_path: Path) -> Iterator[Passthrough]:
    yield Passthrough(node, tmp_path)


def names(resources: DriverResources) -> list[str]:
    return [d["name"] for p in resources.pools.values() for s in p.slices for d in s.devices]


def vfio_claim(device: str = "gpu-vfio-2", **iommu: Any) -> JsonObject:
    return allocated_claim(
        [result(device, request="vm")], config=[opaque(vfio_config(**iommu), source="FromClass")]
    )


def test_gpu_and_vfio_views_are_both_published_until_one_is_prepared(pt: Passthrough) -> None:
    """Before any prepare the slice has gpu-0..7 and gpu-vfio-0..7."""
    published = names(pt.driver().resources())
    assert sorted(published) == sorted([f"gpu-{i}" for i in range(8)] + [f"gpu-vfio-{i}" for i in range(8)])


def test_passthrough_round_trip(pt: Passthrough, cdi_schema: Callable[[Path], JsonObject]) -> None:
    """Prepare binds gpu-vfio-2's board to vfio-pci (persistence off), hides gpu-2 and republishes, and
    writes a CDI spec whose only spec-level edit is NVIDIA_VISIBLE_DEVICES=void (no driver mounts or
    hooks) and whose device is /dev/vfio/<group>; unprepare restores it all."""
    driver = pt.driver()
    address = pt.address("gpu-2")
    claim = vfio_claim()

    answer = prepare_one(driver, claim)
    assert answer.error == ""
    assert pt.host.driver_of(address) == "vfio-pci"
    assert pt.host.persistence == {address: False}
    assert "gpu-2" not in names(pt.published[-1]) and "gpu-vfio-2" in names(pt.published[-1])
    doc = cdi_schema(pt.node.spec_path(uid_of(claim)))
    (device,) = doc["devices"]
    assert doc["containerEdits"] == {"env": ["NVIDIA_VISIBLE_DEVICES=void"]}
    edits = device["containerEdits"]
    group = pt.host.iommu_group(address)
    assert list(edits) == ["deviceNodes"]
    assert [n["path"] for n in edits["deviceNodes"]] == [f"/dev/vfio/{group}"]
    refused = prepare_one(driver, allocated_claim([result("gpu-2")]))
    assert "unavailable while 'gpu-vfio-2'" in refused.error

    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert pt.host.driver_of(address) == "nvidia"
    assert pt.host.persistence == {address: True}
    assert "gpu-2" in names(pt.published[-1])
    assert not pt.node.spec_path(uid_of(claim)).exists()


def test_iommufd_and_api_device(pt: Passthrough) -> None:
    """PreferIommuFD with /dev/iommu present injects the vfio cdev and, with enableAPIDevice, /dev/iommu."""
    driver = pt.driver()
    claim = vfio_claim(backendPolicy="PreferIommuFD", enableAPIDevice=True)
    assert prepare_one(driver, claim).error == ""
    spec = pt.node.spec_path(uid_of(claim)).read_text()
    cdev = pt.host.vfio_cdev(pt.address("gpu-2"))
    assert f"/dev/vfio/devices/{cdev}" in spec and "/dev/iommu" in spec


def test_gpu_view_prepared_hides_the_vfio_view(pt: Passthrough) -> None:
    """Preparing gpu-5 withdraws gpu-vfio-5 and refuses claims for it; nothing is bound."""
    driver = pt.driver()
    assert prepare_one(driver, allocated_claim([result("gpu-5")])).error == ""
    assert "gpu-vfio-5" not in names(pt.published[-1])
    assert "unavailable" in prepare_one(driver, vfio_claim("gpu-vfio-5")).error
    assert pt.host.driver_of(pt.address("gpu-5")) == "nvidia"


def test_bind_waits_bounded_for_the_gpu_to_be_free(pt: Passthrough) -> None:
    """A GPU still open by processes is polled until free; one that stays busy fails the claim unchanged."""
    pt.host.set_users("/dev/nvidia2", [999], release_after=3)
    driver = pt.driver()
    assert prepare_one(driver, vfio_claim()).error == ""
    assert pt.sleeps == [1.0, 1.0, 1.0]

    pt.host.set_users("/dev/nvidia3", [999])
    busy = pt.driver(wait_timeout=5.0)
    answer = prepare_one(busy, vfio_claim("gpu-vfio-3"))
    assert "still in use by PIDs [999]" in answer.error
    assert pt.host.driver_of(pt.address("gpu-3")) == "nvidia"


def test_gpu_with_sriov_vfs_is_refused(node: DriverNode, tmp_path: Path) -> None:
    """A board with SR-IOV virtual functions is refused at planning; nothing on the host changes."""
    sriov = Passthrough(node, tmp_path, sriov={node.inventory.gpus[2].pci_bus_id: 4})
    driver = sriov.driver()
    answer = prepare_one(driver, vfio_claim())
    assert "4 SR-IOV virtual functions" in answer.error
    assert sriov.host.driver_of(sriov.address("gpu-2")) == "nvidia"
    assert sriov.host.persistence == {}


class Killed(BaseException):
    """The process dies (SIGKILL) at this point: nothing after it runs."""


def test_killed_between_bind_and_checkpoint_is_rolled_back_at_start(pt: Passthrough) -> None:
    """The plugin dies after binding but before PrepareCompleted: the next start binds the GPU back to
    nvidia, re-enables persistence, and drops the half-done entry."""
    driver = pt.driver()
    driver._specs = KilledAtSpecWrite(driver._specs, Killed)
    claim = vfio_claim()
    with pytest.raises(Killed):
        prepare_one(driver, claim)
    address = pt.address("gpu-2")
    assert pt.host.driver_of(address) == "vfio-pci"

    restarted = pt.driver()
    assert pt.host.driver_of(address) == "nvidia"
    assert pt.host.persistence == {address: True}
    assert restarted.checkpoint().claims == {}
    assert "gpu-2" in names(restarted.resources())
