"""The VM paths of fabricTopologyConfig on a simulated dgx-h100: SharedNVSwitch and FullPassthrough with
vfio-pci, on the simulated sysfs tree and the simulated Fabric Manager.

Real objects throughout: the driver, the fabric and vfio planners and executors as ``serve`` registers
them (fabric first), the simulated sysfs tree (a restarted plugin opens the same tree), the simulated FM
(its state outlives driver objects, as the daemon outlives a plugin), real CDI specs and checkpoints.
A crash is simulated in-process: a ``BaseException`` the driver does not catch stops it at that point.
"""

from __future__ import annotations

__all__ = ["cdi_schema"]  # the shared CDI schema fixture

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.effects import EffectRecord
from nvdra.core.featuregates import parse_feature_gates
from nvdra.fabric import FabricMode, SimulatedFabricManager, Topology, nvswitch_functions
from nvdra.kubeletplugin.types import DriverResources
from nvdra.nvml import load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import Applied, EffectExecutor, Effects
from nvdra.plugins.gpu.fabric import ACTIVATE_KIND, fabric_effects
from nvdra.plugins.gpu.metadata import MetadataPlanner
from nvdra.plugins.gpu.vfio import VFIO_KIND, PassthroughView, VfioExecutor, VfioPlanner, ensure_vfio_ready
from nvdra.plugins.gpu.vfio_host import SimulatedSysfs, make_simulated_sysfs
from tests.fabric.conftest import profile_inventory
from tests.fabric.test_scheduler_agrees import claim_context, readme_claim
from tests.plugins.conftest import (
    DriverNode,
    KilledAtSpecWrite,
    allocated_claim,
    cdi_schema,
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
GATES = "FabricTopologySupport=true,PassthroughSupport=true"
NVIDIA, VFIO = "nvidia", "vfio-pci"


class Killed(BaseException):
    """The process dies (SIGKILL) here: nothing after it runs."""


class WatchedFm(SimulatedFabricManager):
    """The simulated FM, noting which driver the GPUs were on whenever a partition is (de)activated."""

    def __init__(self, host_root: Path, addresses: Sequence[str]) -> None:
        table = SimulatedFabricManager.for_topology(
            Topology.from_inventory(profile_inventory("dgx-h100")), mode=FabricMode.SHARED_NVSWITCH
        )
        super().__init__(table.partitions(), mode=FabricMode.SHARED_NVSWITCH)
        self._root, self._addresses = host_root, addresses
        self.seen: list[tuple[str, int, tuple[str | None, ...]]] = []

    def _drivers(self) -> tuple[str | None, ...]:
        host = SimulatedSysfs(self._root)
        return tuple(host.driver_of(a) for a in self._addresses)

    def activate(self, partition_id: int) -> None:
        """Activate, noting the GPUs' drivers at that moment."""
        self.seen.append(("activate", partition_id, self._drivers()))
        super().activate(partition_id)

    def deactivate(self, partition_id: int) -> None:
        """Deactivate, noting the GPUs' drivers at that moment."""
        self.seen.append(("deactivate", partition_id, self._drivers()))
        super().deactivate(partition_id)


class VmNode:
    """A simulated dgx-h100 with passthrough and fabric on: node state, sysfs tree, publications."""

    def __init__(self, node: DriverNode, tmp_path: Path) -> None:
        self.node = node
        self.host = make_simulated_sysfs(tmp_path / "host", node.inventory)
        ensure_vfio_ready(self.host)  # the plugin's start check: loads vfio_pci
        self.addresses = [g.pci_bus_id for g in node.inventory.gpus]
        self.published: list[DriverResources] = []

    def fm(self) -> WatchedFm:
        """A fresh Shared NVSwitch Fabric Manager on this board (nothing active)."""
        return WatchedFm(self.host.root, self.addresses)

    def drivers(self, gpus: Sequence[int] = range(8)) -> list[str | None]:
        """The driver each GPU is bound to now."""
        return [self.host.driver_of(self.addresses[i]) for i in gpus]

    def driver(
        self,
        fm: SimulatedFabricManager | None,
        *,
        gates: str = GATES,
        wrap: Callable[[EffectExecutor], EffectExecutor] = lambda e: e,
    ) -> GpuDriver:
        """A started driver (as after a process start): fabric then vfio effects, as ``serve`` wires them."""
        parsed = parse_feature_gates(gates)
        host = SimulatedSysfs(self.host.root)  # a restarted plugin opens the same tree
        planners, executors = fabric_effects(
            parsed, self.node.inventory, fm=fm, checkpoint=on_disk(self.node)
        )
        passthrough = parsed.enabled("PassthroughSupport")
        driver = GpuDriver(
            node_name=self.node.node_name,
            inventory=self.node.inventory,
            gates=parsed,
            store=self.node.store(),
            specs=self.node.specs(),
            effects=Effects(
                [*planners, *([VfioPlanner()] if passthrough else [])],
                [*executors, *([wrap(VfioExecutor(host))] if passthrough else [])],
            ),
            views=[PassthroughView(host, self.node.inventory)] if passthrough else [],
        )
        self.node._drivers.append(driver)
        driver.on_resources_changed = self.published.append
        driver.start()
        return driver

    def switch_drivers(self) -> list[str | None]:
        """The driver each of the board's four NVSwitch functions is bound to now."""
        return [self.host.driver_of(a) for a in nvswitch_functions(self.node.inventory.gpus)]

    def untouched(self) -> None:
        """Every GPU and NVSwitch on nvidia, no spec, no checkpoint entry."""
        assert self.drivers() == [NVIDIA] * 8
        assert self.switch_drivers() == [NVIDIA] * 4
        assert spec_files(self.node.cdi_root) == []
        assert on_disk(self.node).claims == {}


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VmNode]:
    """A fresh simulated dgx-h100 node with a simulated sysfs tree."""
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "driver-root")
    node = DriverNode(tmp_path / "node", profile_inventory("dgx-h100"), root)
    yield VmNode(node, tmp_path)
    node.close()


def vfio_claim(gpus: Sequence[int], **fabric: Any) -> JsonObject:
    """A claim for gpu-vfio-<i> with a VfioDeviceConfig carrying ``fabric`` as its fabricTopologyConfig."""
    config = {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "VfioDeviceConfig"}
    return allocated_claim(
        [result(f"gpu-vfio-{i}", request="vm") for i in gpus],
        config=[opaque({**config, "fabricTopologyConfig": fabric}, requests=["vm"])],
    )


def names(resources: DriverResources) -> set[str]:
    return {d["name"] for p in resources.pools.values() for s in p.slices for d in s.devices}


def kinds(node: DriverNode, claim: JsonObject) -> list[str]:
    return [r["kind"] for r in on_disk(node).claims[uid_of(claim)].applied]


# -- SharedNVSwitch with vfio -----------------------------------------------------------------------


def test_shared_nvswitch_vfio_round_trip(vm: VmNode, cdi_schema: Callable[[Path], JsonObject]) -> None:
    """Prepare binds the partition's four GPUs to vfio-pci and then activates FM partition 2 (modules
    5-8); the spec is a VM spec with the partition's env; unprepare deactivates first, then binds back."""
    fm = vm.fm()
    driver = vm.driver(fm)
    claim = vfio_claim([4, 5, 6, 7], virtualizationModel="SharedNVSwitch", partitionSize=4)

    assert prepare_one(driver, claim).error == ""
    assert vm.drivers() == [NVIDIA] * 4 + [VFIO] * 4
    assert fm.active_ids() == {2}
    assert fm.seen == [("activate", 2, (NVIDIA,) * 4 + (VFIO,) * 4)]  # bound before FM resets them
    assert kinds(vm.node, claim) == [VFIO_KIND] * 4 + [ACTIVATE_KIND]
    assert names(vm.published[-1]).isdisjoint({"gpu-4", "gpu-5", "gpu-6", "gpu-7"})
    doc = cdi_schema(vm.node.spec_path(uid_of(claim)))
    env = doc["containerEdits"]["env"]
    assert "NVIDIA_VISIBLE_DEVICES=void" in env and "NVDRA_FABRIC_PARTITION_ID=2" in env
    assert set(doc["containerEdits"]) == {"env"}  # no driver mounts, hooks or /dev/nvidiactl
    groups = [vm.host.iommu_group(vm.addresses[i]) for i in (4, 5, 6, 7)]
    assert [d["containerEdits"]["deviceNodes"][0]["path"] for d in doc["devices"]] == [
        f"/dev/vfio/{g}" for g in groups
    ]

    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert fm.active_ids() == frozenset()
    assert fm.seen[-1] == ("deactivate", 2, (NVIDIA,) * 4 + (VFIO,) * 4)  # still on vfio-pci then
    vm.untouched()
    assert {"gpu-4", "gpu-7"} <= names(vm.published[-1])


def test_vfio_devices_carry_their_boards_partition_attributes(vm: VmNode) -> None:
    """gpu-vfio-<i> publishes gpu-<i>'s gpuModuleID/partition<N>/nvlinkBandwidth, so matchAttribute on
    gpu.nvidia.com/partition4 groups VFIO devices by FM partition too."""
    devices = {
        d["name"]: d["attributes"]
        for p in vm.driver(None).resources().pools.values()
        for s in p.slices
        for d in s.devices
    }
    for i in range(8):
        board = {
            k: v for k, v in devices[f"gpu-{i}"].items() if k.startswith(("partition", "gpuModule", "nvlink"))
        }
        assert board and all(devices[f"gpu-vfio-{i}"][k] == v for k, v in board.items())
    groups = {devices[f"gpu-vfio-{i}"]["partition4"]["int"] for i in range(8)}
    assert len(groups) == 2


def test_overlapping_activation_fails_cleanly_and_unbinds(vm: VmNode) -> None:
    """With FM partition 0 (all eight GPUs) active, a SharedNVSwitch vfio claim for partition 1 fails
    with IN_USE; its GPUs are bound back to nvidia and nothing is recorded."""
    fm = vm.fm()
    fm.activate(0)
    answer = prepare_one(vm.driver(fm), vfio_claim([0, 1, 2, 3], virtualizationModel="SharedNVSwitch"))
    assert "FM_ST_IN_USE" in answer.error
    assert fm.active_ids() == {0}
    vm.untouched()


def test_gpu_view_in_use_refuses_the_partition(vm: VmNode) -> None:
    """A container holding gpu-2 keeps partition 1 from going to a VM: refused before anything binds."""
    fm = vm.fm()
    driver = vm.driver(fm)
    assert prepare_one(driver, allocated_claim([result("gpu-2")])).error == ""
    answer = prepare_one(driver, vfio_claim([0, 1, 2, 3], virtualizationModel="SharedNVSwitch"))
    assert "unavailable while 'gpu-2'" in answer.error
    assert vm.drivers() == [NVIDIA] * 8 and fm.active_ids() == frozenset()


def test_devices_that_are_no_partition_are_refused_unbound(vm: VmNode) -> None:
    """gpu-vfio-0, 1, 4, 5 form no FM partition: the error names them; nothing binds or activates."""
    fm = vm.fm()
    answer = prepare_one(vm.driver(fm), vfio_claim([0, 1, 4, 5], virtualizationModel="SharedNVSwitch"))
    assert "gpu-vfio-0 (module 1), gpu-vfio-1 (module 2), gpu-vfio-4 (module 5)" in answer.error
    assert fm.seen == []
    vm.untouched()


# -- FullPassthrough --------------------------------------------------------------------------------


def test_full_passthrough_vfio_binds_the_whole_board(vm: VmNode) -> None:
    """With no FM on the host (it runs in the guest), an 8-GPU FullPassthrough VM binds all eight GPUs
    and the board's four NVSwitch functions and activates nothing; the spec tells the VM its partition
    and model and carries the NVSwitches' VFIO nodes; unprepare returns all twelve to nvidia."""
    driver = vm.driver(None)
    claim = vfio_claim(range(8), virtualizationModel="FullPassthrough", minBandwidth=900)
    assert prepare_one(driver, claim).error == ""
    assert vm.drivers() == [VFIO] * 8 and vm.switch_drivers() == [VFIO] * 4
    records = on_disk(vm.node).claims[uid_of(claim)].applied
    assert [r["kind"] for r in records] == [VFIO_KIND] * 12 + [ACTIVATE_KIND]
    assert [r["address"] for r in records if r.get("nvswitch")] == [f"0000:0{b}:00.0" for b in "789a"]
    assert (records[-1]["partitionId"], records[-1]["activate"]) == (0, False)
    spec = vm.node.spec_path(uid_of(claim)).read_text()
    assert "NVDRA_FABRIC_VIRTUALIZATION_MODEL=FullPassthrough" in spec and "nvidia-cdi-hook" not in spec
    for address in nvswitch_functions(vm.node.inventory.gpus):
        assert f"/dev/vfio/{vm.host.iommu_group(address)}" in spec
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    vm.untouched()


def test_full_passthrough_bandwidth_bound_uses_the_vm_figure(vm: VmNode) -> None:
    """NVIDIA tabulates no 4-GPU H100 passthrough VM: its NVLink counts as 0 GB/s, so a bound refuses it."""
    answer = prepare_one(
        vm.driver(None), vfio_claim([0, 1, 2, 3], virtualizationModel="FullPassthrough", minBandwidth=1)
    )
    assert "0 GB/s per GPU under FullPassthrough" in answer.error
    vm.untouched()


def test_full_passthrough_gpu_config_sends_the_partitions_gpus_to_vfio(vm: VmNode) -> None:
    """FullPassthrough in a GpuConfig binds the allocated GPUs (the whole partition) to vfio-pci; their
    VFIO views are withdrawn while they are held; unprepare brings them back."""
    driver = vm.driver(None)
    claim = allocated_claim(
        [result(f"gpu-{i}", request="gpus") for i in range(8)],
        config=[
            opaque(
                gpu_config(fabricTopologyConfig={"virtualizationModel": "FullPassthrough"}), requests=["gpus"]
            )
        ],
    )
    assert prepare_one(driver, claim).error == ""
    assert vm.drivers() == [VFIO] * 8
    assert not any(n.startswith("gpu-vfio-") for n in names(vm.published[-1]))
    assert "NVIDIA_VISIBLE_DEVICES=void" in vm.node.spec_path(uid_of(claim)).read_text()
    assert driver.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    vm.untouched()


def test_full_passthrough_without_passthrough_gate_is_refused(vm: VmNode) -> None:
    """Without PassthroughSupport, FullPassthrough is refused naming the field and the gate."""
    claim = allocated_claim(
        [result(f"gpu-{i}", request="gpus") for i in range(8)],
        config=[
            opaque(
                gpu_config(fabricTopologyConfig={"virtualizationModel": "FullPassthrough"}), requests=["gpus"]
            )
        ],
    )
    answer = prepare_one(vm.driver(None, gates="FabricTopologySupport=true"), claim)
    assert "fabricTopologyConfig.virtualizationModel" in answer.error and "PassthroughSupport" in answer.error
    vm.untouched()


def test_full_passthrough_needs_a_host_without_fabric_manager(vm: VmNode) -> None:
    """On a host whose FM runs in Shared NVSwitch mode, FullPassthrough does not match the node."""
    answer = prepare_one(vm.driver(vm.fm()), vfio_claim(range(8), virtualizationModel="FullPassthrough"))
    assert "virtualizationModel does not match the node" in answer.error
    vm.untouched()


# -- kill and restart -------------------------------------------------------------------------------


class KillOnApply:
    """A vfio executor whose process dies when it is about to apply its ``n``-th record."""

    def __init__(self, inner: EffectExecutor, n: int) -> None:
        self.inner, self.n, self.records = inner, n, inner.records

    def apply(self, record: EffectRecord) -> Applied:
        self.n -= 1
        if self.n == 0:
            raise Killed
        return self.inner.apply(record)

    def undo(self, record: EffectRecord) -> None:
        self.inner.undo(record)


def test_killed_mid_bind_is_rolled_back_at_start(vm: VmNode) -> None:
    """Killed after binding two of four GPUs: the restarted plugin binds them back, activates nothing."""
    fm = vm.fm()
    claim = vfio_claim([0, 1, 2, 3], virtualizationModel="SharedNVSwitch")
    with pytest.raises(Killed):
        prepare_one(vm.driver(fm, wrap=lambda e: KillOnApply(e, 3)), claim)
    assert vm.drivers([0, 1, 2]) == [VFIO, VFIO, NVIDIA]
    assert on_disk(vm.node).claims[uid_of(claim)].state == "PrepareStarted"

    restarted = vm.driver(fm)
    assert restarted.checkpoint().claims == {}
    assert fm.active_ids() == frozenset()
    vm.untouched()


def test_killed_after_activation_is_rolled_back_in_reverse(vm: VmNode) -> None:
    """Killed after binding and activating, before PrepareCompleted: the restart deactivates partition 1
    while its GPUs are still on vfio-pci, then binds them back."""
    fm = vm.fm()
    claim = vfio_claim([0, 1, 2, 3], virtualizationModel="SharedNVSwitch")
    doomed = vm.driver(fm)
    doomed._specs = KilledAtSpecWrite(doomed._specs, Killed)
    with pytest.raises(Killed):
        prepare_one(doomed, claim)
    assert fm.active_ids() == {1} and vm.drivers([0, 1, 2, 3]) == [VFIO] * 4

    vm.driver(fm)
    assert fm.seen[-1] == ("deactivate", 1, (VFIO,) * 4 + (NVIDIA,) * 4)
    assert fm.active_ids() == frozenset()
    vm.untouched()


def test_completed_claim_survives_plugin_and_fm_restarts(vm: VmNode) -> None:
    """A prepared VM partition survives a plugin restart and an FM --restart (the new plugin hands FM the
    live list); the new plugin's unprepare deactivates it and binds the GPUs back."""
    fm = vm.fm()
    claim = vfio_claim([4, 6], virtualizationModel="SharedNVSwitch")
    assert prepare_one(vm.driver(fm), claim).error == ""
    fm.restart(resilient=True)
    restarted = vm.driver(fm)
    assert fm.active_ids() == {5}  # modules 5 and 7: FM's pair partition 5
    assert vm.drivers([4, 6]) == [VFIO, VFIO]
    assert on_disk(vm.node).claims[uid_of(claim)].state == "PrepareCompleted"
    assert restarted.unprepare_resource_claims([ref_of(claim)]) == {uid_of(claim): ""}
    assert fm.active_ids() == frozenset()
    vm.untouched()


def test_full_passthrough_metadata_lists_the_nvswitches() -> None:
    """KEP-5304 device metadata of a FullPassthrough claim names the NVSwitch functions beside each GPU."""
    claim = readme_claim(8, partitionSize=8, virtualizationModel="FullPassthrough")
    ctx = claim_context("dgx-h100", claim, [f"gpu-{i}" for i in range(8)])
    (record,) = MetadataPlanner().plan(ctx)
    switches = ",".join(f"0000:0{b}:00.0" for b in "789a")
    assert all(d.attributes["nvswitchPciBusIDs"] == switches for d in record.devices)
    plain = claim_context("dgx-h100", readme_claim(8, partitionSize=8), [f"gpu-{i}" for i in range(8)])
    (record,) = MetadataPlanner().plan(plain)
    assert not any("nvswitchPciBusIDs" in d.attributes for d in record.devices)
