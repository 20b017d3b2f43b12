"""Claim specs with passthrough devices: an all-VFIO claim carries no driver edits (upstream's VM spec),
a mixed claim keeps them for its container GPU; every spec is valid against the CDI schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nvdra.cdi import ContainerEdits, DeviceNode
from nvdra.plugins.gpu.cdi import PASSTHROUGH_ENV, is_passthrough
from nvdra.plugins.gpu.devices import AllocatableDevice, allocatable_devices
from nvdra.plugins.gpu.effects import Applied
from tests.plugins.conftest import DriverNode

JsonObject = dict[str, Any]
UID = "0b4f7a0e-1111-4c4c-8d8d-000000000001"


def vfio_device(node: DriverNode, index: int) -> AllocatableDevice:
    """``gpu-vfio-<index>`` over the node's GPU ``index``."""
    return AllocatableDevice(name=f"gpu-vfio-{index}", type="vfio", gpu=node.inventory.gpus[index])


def bind_edits(group: int, *, api: bool) -> ContainerEdits:
    """What the vfio-pci executor returns for one device (its IOMMU group node, the API device)."""
    nodes = [DeviceNode(path=f"/dev/vfio/{group}")] + ([DeviceNode(path="/dev/vfio/vfio")] if api else [])
    return ContainerEdits(env=(PASSTHROUGH_ENV,), device_nodes=tuple(nodes))


def test_all_vfio_claim_has_no_driver_edits(
    node: DriverNode, cdi_schema: Callable[[Path], JsonObject]
) -> None:
    """Two VFIO devices: spec-level edits are the void env, the API device once and the other effects'
    env; each device keeps only its own vfio group node."""
    devices = [vfio_device(node, 1), vfio_device(node, 2)]
    applied = [
        Applied(device_edits={"gpu-vfio-1": bind_edits(11, api=True)}),
        Applied(device_edits={"gpu-vfio-2": bind_edits(12, api=True)}),
        Applied(claim_edits=ContainerEdits(env=("NVDRA_FABRIC_PARTITION_ID=3",))),
    ]
    specs = node.specs()
    specs.write(UID, devices, applied)
    doc = cdi_schema(specs.path(UID))
    assert doc["containerEdits"] == {
        "env": [PASSTHROUGH_ENV, "NVDRA_FABRIC_PARTITION_ID=3"],
        "deviceNodes": [{"path": "/dev/vfio/vfio"}],
    }
    assert [d["containerEdits"] for d in doc["devices"]] == [
        {"deviceNodes": [{"path": "/dev/vfio/11"}]},
        {"deviceNodes": [{"path": "/dev/vfio/12"}]},
    ]


def test_mixed_claim_keeps_the_driver_edits(
    node: DriverNode, cdi_schema: Callable[[Path], JsonObject]
) -> None:
    """A container GPU beside a VFIO device: the driver's common edits stay (the GPU needs them), the
    GPU device keeps its own edits, and the VFIO device keeps its nodes without the void env."""
    gpu = allocatable_devices(node.inventory)["gpu-0"]
    specs = node.specs()
    specs.write(
        UID, [gpu, vfio_device(node, 1)], [Applied(device_edits={"gpu-vfio-1": bind_edits(11, api=True)})]
    )
    doc = cdi_schema(specs.path(UID))
    common = doc["containerEdits"]
    assert common["hooks"] and common["mounts"] and common["env"].count(PASSTHROUGH_ENV) == 1
    gpu_edits, vfio_edits = (d["containerEdits"] for d in doc["devices"])
    assert gpu_edits == specs.edits(gpu).to_dict()
    assert vfio_edits == {"deviceNodes": [{"path": "/dev/vfio/11"}, {"path": "/dev/vfio/vfio"}]}


def test_claims_without_passthrough_are_unchanged(node: DriverNode) -> None:
    """No passthrough device: the spec has the driver's common edits and each GPU's own edits."""
    gpu = allocatable_devices(node.inventory)["gpu-3"]
    specs = node.specs()
    specs.write(UID, [gpu])
    text = specs.path(UID).read_text()
    assert text.count(PASSTHROUGH_ENV) == 1 and "nvidia-cdi-hook" in text  # void once, from the common edits
    assert not is_passthrough(specs.edits(gpu)) and is_passthrough(bind_edits(1, api=False))
