"""Virtualization-model policies: what each ``virtualizationModel`` means for partitions on a node.

=================  ===========  ======================  ===========  =====================================
model              fabric logic node Fabric Manager      activation   NVLink bandwidth of a partition
=================  ===========  ======================  ===========  =====================================
BareMetal          on           none, or mode 0         none         all links (FM's tables)
FullPassthrough    on           none on the host        in the guest reduced: A100 8/4/2-GPU VMs get 12/6/2
                                (FM runs in the guest)               of 12 links, HGX-2 6/3/1 of 6; H100
                                                                     and B200 tabulate only 8-GPU VMs
SharedNVSwitch     on           mode 1 (Shared NVSwitch) the driver  all links
VGPU               off          mode 2 (vGPU)           hypervisor   not checked (fabric logic off)
=================  ===========  ======================  ===========  =====================================

Facts from the Fabric Manager user guide (virtualization models); sizes NVIDIA does not tabulate for
full passthrough count as 0 GB/s, so a bandwidth bound refuses them rather than guessing.
"""

from __future__ import annotations

__all__ = ["POLICIES", "FabricMode", "ModelPolicy", "policy_for"]

import enum
from collections.abc import Mapping

import attrs

from nvdra.core.config.fabric import VirtualizationModel
from nvdra.fabric.catalog import Partition
from nvdra.fabric.topology import Topology


class FabricMode(enum.IntEnum):
    """Fabric Manager's ``FABRIC_MODE``."""

    BARE_METAL = 0
    SHARED_NVSWITCH = 1
    VGPU = 2


def describe_mode(mode: FabricMode | None) -> str:
    """A human phrase for a node's Fabric Manager mode."""
    if mode is None:
        return "no Fabric Manager"
    return f"Fabric Manager FABRIC_MODE={int(mode)} ({mode.name.replace('_', ' ').lower()})"


# (architecture, partition size) -> NVLinks per GPU a fully passed-through VM of that size gets.
_PASSTHROUGH_LINKS: Mapping[tuple[str, int], int] = {
    ("Ampere", 16): 12,
    ("Ampere", 8): 12,
    ("Ampere", 4): 6,
    ("Ampere", 2): 2,
    ("Volta", 16): 6,
    ("Volta", 8): 3,
    ("Volta", 2): 1,
    ("Hopper", 8): 18,
    ("Blackwell", 8): 18,
}


@attrs.frozen(kw_only=True)
class ModelPolicy:
    """How one virtualization model treats partitions."""

    model: VirtualizationModel
    fabric_logic: bool
    node_modes: frozenset[FabricMode | None]
    activates: bool  # the driver activates the FM partition (acting as the service VM)
    whole_partition: bool  # the tenant gets the whole partition, so all its GPUs must be free
    needs_vfio: bool  # GPUs leave the host through vfio-pci

    def allows(self, mode: FabricMode | None) -> bool:
        """Whether this model can run on a node whose Fabric Manager is in ``mode``."""
        return mode in self.node_modes

    def bandwidth_gbps(self, partition: Partition, topology: Topology) -> int:
        """The NVLink bandwidth per GPU a tenant of ``partition`` gets under this model."""
        if self.model is not VirtualizationModel.FULL_PASSTHROUGH or partition.size < 2:
            return partition.bandwidth_gbps
        arch = topology.gpu(partition.gpus[0]).architecture
        links = _PASSTHROUGH_LINKS.get((arch, partition.size), 0)
        if not partition.links_per_gpu:
            return 0
        return partition.bandwidth_gbps * min(links, partition.links_per_gpu) // partition.links_per_gpu


_POLICY_ROWS: tuple[tuple[VirtualizationModel, bool, frozenset[FabricMode | None], bool, bool, bool], ...] = (
    # model, fabric logic, node Fabric Manager modes, activates, whole partition, needs vfio
    (VirtualizationModel.BARE_METAL, True, frozenset({None, FabricMode.BARE_METAL}), False, False, False),
    (VirtualizationModel.FULL_PASSTHROUGH, True, frozenset({None}), False, True, True),
    (VirtualizationModel.SHARED_NVSWITCH, True, frozenset({FabricMode.SHARED_NVSWITCH}), True, True, False),
    (VirtualizationModel.VGPU, False, frozenset({FabricMode.VGPU}), False, True, False),
)
POLICIES: Mapping[VirtualizationModel, ModelPolicy] = {
    model: ModelPolicy(
        model=model,
        fabric_logic=logic,
        node_modes=modes,
        activates=activates,
        whole_partition=whole,
        needs_vfio=vfio,
    )
    for model, logic, modes, activates, whole, vfio in _POLICY_ROWS
}
"""The policy of every virtualization model."""


def policy_for(model: VirtualizationModel | str) -> ModelPolicy:
    """The policy of ``model`` (a :class:`VirtualizationModel` or its JSON spelling)."""
    return POLICIES[VirtualizationModel(model)]
