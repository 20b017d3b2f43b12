"""List-valued attributes (upstream's ``DRAListTypeAttributes`` gate; KEP-6072, Kubernetes 1.36 alpha).

With the gate on, every GPU and MIG device carries ``resource.kubernetes.io/numaNode`` as a list
(``ints: [n]``, the GPU's NUMA node; upstream likewise publishes the one physical node until it computes
same-socket neighbours). Claims then select with ``….numaNode.includes(n)`` and constrain with
``matchAttribute: resource.kubernetes.io/numaNode`` under set semantics (the allocator's rules).

A server without the Kubernetes gate of the same name drops the list field and then refuses the slice
(an attribute without a value), so the plugin refuses to start against a server older than 1.36 with the
gate on (:func:`check_list_attributes`); on 1.36 the cluster's gate must be on too, as upstream says.
"""

from __future__ import annotations

__all__ = ["NUMA_NODE", "ListAttributesView", "check_list_attributes", "list_attribute_views"]

from collections.abc import Collection, Mapping
from typing import Any

import attrs

from nvdra.core.devices import Inventory
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.kubeletplugin.types import DriverResources
from nvdra.plugins.gpu.devices import AllocatableDevice

NUMA_NODE = "resource.kubernetes.io/numaNode"
LIST_ATTRIBUTES_SINCE = (1, 36)


def check_list_attributes(gates: FeatureGates, server: tuple[int, int]) -> None:
    """Refuse the gate against a server that cannot store list attributes.

    Raises:
        ConfigError: DRAListTypeAttributes is on and the server is older than Kubernetes 1.36.
    """
    if gates.enabled(Gate.DRA_LIST_TYPE_ATTRIBUTES) and server < LIST_ATTRIBUTES_SINCE:
        raise ConfigError(
            "--feature-gates DRAListTypeAttributes",
            f"true (server is Kubernetes {server[0]}.{server[1]})",
            "false below Kubernetes 1.36: the server has no list-valued attributes and would refuse "
            "every slice",
            reason="the server cannot accept list attributes:",
        )


@attrs.frozen
class ListAttributesView:
    """Adds ``resource.kubernetes.io/numaNode`` as a one-element list to GPUs and their MIG devices."""

    numa: Mapping[str, int]  # GPU UUID -> NUMA node (GPUs whose node NVML reports)

    def allocatable(self) -> Mapping[str, AllocatableDevice]:
        """No extra devices."""
        return {}

    def _decorated(self, device: Mapping[str, Any]) -> dict[str, Any]:
        attributes = device.get("attributes") or {}
        kind = (attributes.get("type") or {}).get("string")
        uuid_attr = "parentUUID" if kind == "mig" else "uuid"
        node = self.numa.get(str((attributes.get(uuid_attr) or {}).get("string", "")))
        if kind not in ("gpu", "mig") or node is None:
            return dict(device)
        return {**device, "attributes": dict(sorted({**attributes, NUMA_NODE: {"ints": [node]}}.items()))}

    def decorate(self, resources: DriverResources, held: Collection[str]) -> DriverResources:
        """Every slice's GPU and MIG devices with their NUMA node list."""
        return resources.with_devices(lambda devices: map(self._decorated, devices))

    def refuse(self, name: str, held: Collection[str]) -> str | None:
        """Never."""
        return None


def list_attribute_views(gates: FeatureGates, inventory: Inventory) -> list[ListAttributesView]:
    """The view when DRAListTypeAttributes is on (none otherwise)."""
    if not gates.enabled(Gate.DRA_LIST_TYPE_ATTRIBUTES):
        return []
    numa = {str(g.uuid): g.numa_node for g in inventory.gpus if g.numa_node is not None and g.numa_node >= 0}
    return [ListAttributesView(numa)]
