"""What the GPU driver can hand out on this node: the devices it publishes, keyed by name.

A ``partition`` device (``--publish-fabric-partitions``) is an NVLink partition handed out whole: its
``members`` are full GPUs that are also published on their own; ``gpu`` is its first member.
"""

from __future__ import annotations

__all__ = ["AllocatableDevice", "allocatable_devices"]

from typing import Literal

import attrs

from nvdra.core.devices import Gpu, Inventory, MigDevice, MigPlacement, MigProfile
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.passthrough import VfioDevice
from nvdra.core.sharing import mig_candidates, qualifies_for_dynamic_mig, resetless_toggle

DeviceType = Literal["gpu", "mig", "vfio", "partition"]


@attrs.frozen(kw_only=True)
class AllocatableDevice:
    """A published device: a full GPU, an existing (static) MIG device of ``gpu``, or (DynamicMIG) a MIG
    device that is created at prepare (``mig`` None, ``profile`` and ``placement`` set)."""

    name: str
    type: DeviceType
    gpu: Gpu
    mig: MigDevice | None = None
    profile: MigProfile | None = None
    placement: MigPlacement | None = None
    vfio: VfioDevice | None = None  # a GPU's passthrough view (``type`` vfio; see plugins.gpu.vfio)
    members: tuple[Gpu, ...] = ()  # a partition's GPUs (``type`` partition; see plugins.gpu.fabric)
    partition_id: int | None = None  # a partition's Fabric Manager (or derived) id

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        """The physical GPUs this device occupies (a partition's members, else its one GPU)."""
        return self.members or (self.gpu,)

    @property
    def config_type(self) -> str:
        """The device type opaque configs are matched against: a partition takes ``GpuConfig``."""
        return "gpu" if self.type == "partition" else self.type

    @property
    def uuid(self) -> str:
        """The UUID a container sees (GPU-…, MIG-…, or the VFIO device's)."""
        if self.vfio is not None:
            return self.vfio.uuid
        return self.mig.uuid if self.mig is not None else self.gpu.uuid


def allocatable_devices(
    inventory: Inventory, gates: FeatureGates | None = None
) -> dict[str, AllocatableDevice]:
    """Every device the driver publishes, by name (the same set ``GpuDriver.resources_for`` renders)."""
    out: dict[str, AllocatableDevice] = {}
    dynamic = gates is not None and gates.enabled(Gate.DYNAMIC_MIG)
    for gpu in inventory.gpus:
        if dynamic and qualifies_for_dynamic_mig(gpu):
            for c in mig_candidates(gpu):
                out[c.name] = AllocatableDevice(
                    name=c.name, type="mig", gpu=gpu, profile=c.profile, placement=c.placement
                )
            if resetless_toggle(gpu.architecture):
                out[gpu.name] = AllocatableDevice(name=gpu.name, type="gpu", gpu=gpu)
        elif gpu.mig_enabled:
            for mig in gpu.mig_devices:
                out[mig.name] = AllocatableDevice(name=mig.name, type="mig", gpu=gpu, mig=mig)
        else:
            out[gpu.name] = AllocatableDevice(name=gpu.name, type="gpu", gpu=gpu)
    return out
