"""The sysfs host over a simulated tree: enumeration, binding, the fuser and nvidia-smi stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvdra.core.devices import Inventory
from nvdra.core.errors import HostError
from nvdra.core.passthrough import VFIO_DRIVER, enumerate_vfio_devices, render_vfio_device, vfio_uuid
from nvdra.fabric import nvswitch_functions
from nvdra.plugins.gpu.vfio import ensure_vfio_ready
from nvdra.plugins.gpu.vfio_host import SimulatedSysfs, make_simulated_sysfs


@pytest.fixture
def host(tmp_path: Path, inventory: Inventory) -> SimulatedSysfs:
    return make_simulated_sysfs(tmp_path / "host", inventory)


def test_enumeration_reads_the_tree_like_sysfs(host: SimulatedSysfs, inventory: Inventory) -> None:
    """Every GPU is an NVIDIA 3D controller on nvidia with an IOMMU group, NUMA node and a BAR1 ≥ its memory;
    the NIC and the four NVSwitches (bridges on nvidia) are listed but are no GPUs."""
    functions = {f.address: f for f in host.pci_functions()}
    switches = nvswitch_functions(inventory.gpus)
    assert len(functions) == len(inventory.gpus) + len(switches) + 1 and len(switches) == 4
    for address in switches:
        assert functions[address].driver == "nvidia" and not functions[address].is_nvidia_gpu
    for gpu in inventory.gpus:
        f = functions[gpu.pci_bus_id]
        assert f.is_nvidia_gpu and f.driver == "nvidia" and f.device_id == gpu.pci_device_id >> 16
        assert f.iommu_group is not None and f.numa_node == gpu.numa_node
        assert f.bar_bytes >= (gpu.memory_bytes or 0)
        assert f.pcie_root == (gpu.pcie_root or "pci0000:00")
    assert not functions["0000:00:1f.0"].is_nvidia_gpu


def test_vfio_devices_are_indexed_in_pci_order_and_rendered_as_upstream(
    host: SimulatedSysfs, inventory: Inventory
) -> None:
    """gpu-vfio-<i> follows PCI address order; attributes and capacity have upstream's names and types."""
    names: dict[str, str] = {g.pci_bus_id: g.name for g in inventory.gpus}
    devices = enumerate_vfio_devices(host.pci_functions(), names)
    assert [d.name for d in devices] == [f"gpu-vfio-{i}" for i in range(8)]
    assert [d.address for d in devices] == sorted(d.address for d in devices)
    rendered = render_vfio_device(devices[0], iommufd=True)
    attributes = rendered["attributes"]
    assert attributes["type"] == {"string": "vfio"}
    assert attributes["uuid"] == {"string": vfio_uuid(devices[0].address)}
    assert attributes["vendorID"] == {"string": "0x10de"}
    assert attributes["iommuFDEnabled"] == {"bool": True}
    assert set(attributes) >= {"deviceID", "numa", "productName", "resource.kubernetes.io/pciBusID"}
    assert "addressableMemory" in rendered["capacity"]


def test_mig_gpus_get_no_vfio_device_but_keep_their_index(host: SimulatedSysfs, inventory: Inventory) -> None:
    """A GPU in MIG mode has no VFIO view; the others keep their PCI enumeration index."""
    first = sorted(g.pci_bus_id for g in inventory.gpus)[0]
    devices = enumerate_vfio_devices(host.pci_functions(), {}, {first})
    assert [d.index for d in devices] == list(range(1, 8))


def test_bind_moves_the_driver_and_makes_the_vfio_nodes(host: SimulatedSysfs, inventory: Inventory) -> None:
    """Binding to vfio-pci creates /dev/vfio/<group> and the cdev; binding back removes them."""
    address = inventory.gpus[2].pci_bus_id
    ensure_vfio_ready(host)
    host.bind(address, VFIO_DRIVER)
    group = host.iommu_group(address)
    assert host.driver_of(address) == VFIO_DRIVER
    assert (host.dev_root / "vfio" / str(group)).exists()
    assert host.vfio_cdev(address) is not None
    host.bind(address, "nvidia")
    assert host.driver_of(address) == "nvidia"
    assert not (host.dev_root / "vfio" / str(group)).exists() and host.vfio_cdev(address) is None


def test_bind_to_vfio_needs_the_module(host: SimulatedSysfs, inventory: Inventory) -> None:
    """Without vfio_pci loaded no driver claims the GPU: the bind fails and says where it ended up."""
    with pytest.raises(HostError, match="after probing for 'vfio-pci'"):
        host.bind(inventory.gpus[0].pci_bus_id, VFIO_DRIVER)


def test_fuser_and_persistence_stand_ins(host: SimulatedSysfs, inventory: Inventory) -> None:
    """fuser reports holders until they go away; nvidia-smi -pm records the mode per GPU."""
    host.set_users("/dev/nvidia2", [41, 42], release_after=1)
    assert host.users_of("/dev/nvidia2") == (41, 42)
    assert host.users_of("/dev/nvidia2") == ()
    assert host.users_of("/dev/nvidia3") == ()
    host.set_persistence(inventory.gpus[2].pci_bus_id, False)
    assert host.persistence == {inventory.gpus[2].pci_bus_id: False}
