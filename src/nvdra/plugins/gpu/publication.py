"""What a GPU node publishes: the one computation the plugin and the operator tool share.

The plugin (:func:`nvdra.plugins.gpu.serve.serve`) and ``nvdra devices`` / ``explain`` / ``demo`` all
go through these functions, so what the tool shows is what the plugin writes:

- :func:`node_gates`: the feature gates from ``--feature-gates`` *and* the environment
  (``FEATURE_GATES``, ``FABRIC_TOPOLOGY_SUPPORT=true``, …), then the node's
  ``resource.nvidia.com/fabric-topology-support`` label, then the partition-flag check;
- :func:`node_resources`: the inventory's devices (full GPUs, MIG, DynamicMIG placements, fabric
  attributes, partition devices) decorated by every device view (VFIO devices, health taints); it is
  defined beside the driver (:mod:`nvdra.plugins.gpu.driver`), whose ``resources()`` it computes;
- :func:`offline_publication`: the two above for a simulated node without sockets or a cluster — the
  views and gates are built by the very functions ``serve`` calls, from a :class:`PluginConfig`.
"""

from __future__ import annotations

__all__ = ["Publication", "node_gates", "node_resources", "offline_publication"]

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from nvdra.core.devices import Inventory
from nvdra.core.featuregates import FeatureGates, parse_feature_gates
from nvdra.kubeletplugin import KubeApi
from nvdra.kubeletplugin.types import DriverResources
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.driver import DeviceView, node_resources
from nvdra.plugins.gpu.listattrs import check_list_attributes
from nvdra.plugins.gpu.nodewatch import fabric_gate_for_node
from nvdra.plugins.gpu.shares import shares_option
from nvdra.plugins.gpu.simnode import simulated_nvml_state

if TYPE_CHECKING:
    pass


def node_gates(config: PluginConfig, api: KubeApi, env: Mapping[str, str]) -> FeatureGates:
    """The gates this node's plugin runs with: flags, environment, the node's fabric label.

    Raises:
        ConfigError: an unknown gate, a bad value, or a combination the gates' rules forbid
            (including ``--publish-fabric-partitions`` with DynamicMIG).
    """
    gates = parse_feature_gates(config.feature_gates, env=env)
    gates = fabric_gate_for_node(gates, api, config.node_name)  # per-node rollout label
    if config.publish_fabric_partitions:  # the fabric modules load only with the flag
        from nvdra.plugins.gpu.fabric.partitions import check_partition_flag

        check_partition_flag(config.publish_fabric_partitions, gates)
    shares_option(config.consumable_shares, gates)  # upstream refuses to start on a bad value
    check_list_attributes(gates, api.server_version())
    return gates


@attrs.frozen(kw_only=True)
class Publication:
    """A simulated node's publication, computed offline (see :func:`offline_publication`)."""

    inventory: Inventory
    gates: FeatureGates
    resources: DriverResources


def offline_publication(
    config: PluginConfig, *, env: Mapping[str, str], node_labels: Mapping[str, str] | None = None
) -> Publication:
    """What ``nvdra-gpu-plugin`` started with ``config`` (``--simulate`` required) publishes at start.

    The node's labels (``node_labels``) stand in for the Node object the plugin reads; the simulated
    host (sysfs for VFIO) is laid out in a temporary plugin directory. Nothing is prepared, so no
    device is held; no health event has arrived, so no device is tainted (the health view only adds
    taints after events: ``nvdra devices --kubeconfig`` shows a live node's).

    Raises:
        ConfigError: as :func:`node_gates`; a simulated profile that does not load.
        UserError: ``config.simulate`` is empty.
    """
    from nvdra.core.errors import UserError
    from nvdra.kubeletplugin import FakeKube  # the in-memory store: never loaded by the plugin itself
    from nvdra.plugins.gpu.binding import binding_views
    from nvdra.plugins.gpu.fabric import build_fabric_effects, planned_node_fabric
    from nvdra.plugins.gpu.fabric.activation import partition_binding_views
    from nvdra.plugins.gpu.listattrs import list_attribute_views
    from nvdra.plugins.gpu.shares import shares_views
    from nvdra.plugins.gpu.vfio import passthrough_views

    if not config.simulate:
        raise UserError("an offline publication needs a simulated node (--simulate PROFILE)")
    api = FakeKube()
    api.add_node(config.node_name, labels=dict(node_labels or {}))
    gates = node_gates(config, api, env)
    with tempfile.TemporaryDirectory(prefix="nvdra-publication-") as tmp:
        config = attrs.evolve(config, kubelet_plugins_directory_path=Path(tmp))
        backend = SimulatedNvml(load_profile(config.simulate), state_path=simulated_nvml_state(config))
        backend.init()
        try:
            inventory = discover_inventory(backend)
            # The fabric planner the plugin builds: Fabric Manager's mode and partitions name attributes.
            planners, _ = build_fabric_effects(config, gates, backend, env)
        finally:
            backend.shutdown()
        views: list[DeviceView] = list(passthrough_views(config, gates, inventory))
        views += shares_views(config.consumable_shares, gates)
        views += list_attribute_views(gates, inventory)
        views += binding_views(gates)
        views += partition_binding_views(gates, planners, config.publish_fabric_partitions)
        resources = node_resources(
            inventory,
            node_name=config.node_name,
            gates=gates,
            fabric_partitions=config.publish_fabric_partitions,
            views=views,
            fabric=planned_node_fabric(planners),
        )
    return Publication(inventory=inventory, gates=gates, resources=resources)
