"""What the GPU driver can hand out on this node: the devices it publishes, keyed by name."""

from __future__ import annotations

from typing import Literal

import attrs

from nvdra.core.devices import Gpu, Inventory, MigDevice

__all__ = ["AllocatableDevice", "allocatable_devices"]

DeviceType = Literal["gpu", "mig"]


@attrs.frozen(kw_only=True)
class AllocatableDevice:
    """A published device: a full GPU, or an existing (static) MIG device of ``gpu``."""

    name: str
    type: DeviceType
    gpu: Gpu
    mig: MigDevice | None = None

    @property
    def uuid(self) -> str:
        """The UUID a container sees (GPU-… or MIG-…)."""
        return self.mig.uuid if self.mig is not None else self.gpu.uuid


def allocatable_devices(inventory: Inventory) -> dict[str, AllocatableDevice]:
    """Every device the driver publishes, by name (the same set ``render_gpu_devices`` renders)."""
    out: dict[str, AllocatableDevice] = {}
    for gpu in inventory.gpus:
        if gpu.mig_enabled:
            for mig in gpu.mig_devices:
                out[mig.name] = AllocatableDevice(name=mig.name, type="mig", gpu=gpu, mig=mig)
        else:
            out[gpu.name] = AllocatableDevice(name=gpu.name, type="gpu", gpu=gpu)
    return out
