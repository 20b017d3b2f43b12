"""The GPU plugin's driver and everything around it, built while its sockets are already served.

:func:`assemble` is the part of :func:`nvdra.plugins.gpu.serve.serve` after the sockets: backend →
inventory → gates of this node → state repaired → driver → the driver handed to the sockets →
slices → binders, health, liveness, metrics. It is imported only once the sockets are served, so
the kubelet can register the plugin without waiting for any of these modules to load.
"""

from __future__ import annotations

__all__ = ["assemble", "build_effects"]

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, NamedTuple, cast

from nvdra.core.devices import Inventory
from nvdra.core.featuregates import FeatureGates, Gate, parse_feature_gates
from nvdra.kubeletplugin import Helper, KubeApi
from nvdra.kubeletplugin.health import HealthReporter
from nvdra.kubeletplugin.objects import ObjectApi
from nvdra.kubeletplugin.serialize import SERIALIZE_LOCK_NAME, RequestSerializer
from nvdra.nvml import (
    NvmlBackend,
    SimulatedNvml,
    discover_inventory,
    load_profile,
)
from nvdra.plugins.cdihook import install_cdi_hook
from nvdra.plugins.devicestatus import ClaimStatusReporter
from nvdra.plugins.gpu.cdi import GpuClaimSpecs
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.driver import DeviceView, GpuDriver
from nvdra.plugins.gpu.effects import EffectExecutor, EffectPlanner, Effects
from nvdra.plugins.gpu.listattrs import list_attribute_views
from nvdra.plugins.gpu.nodewatch import FabricLabelWatch
from nvdra.plugins.gpu.publication import node_gates
from nvdra.plugins.gpu.running import RunningPlugin
from nvdra.plugins.gpu.shares import shares_option, shares_views
from nvdra.plugins.gpu.sharing import sharing_effects
from nvdra.plugins.gpu.simnode import node_boot_id, simulated_nvml_state
from nvdra.plugins.gpu.upstream import recover_plugin_dir
from nvdra.plugins.metrics import InstrumentedDriver, PluginMetrics
from nvdra.plugins.runner import api_client, driver_ready, open_backend, serve_endpoints
from nvdra.plugins.state import CheckpointStore

if TYPE_CHECKING:
    from nvdra.plugins.gpu.health import HealthTracker

# Feature modules (fabric, passthrough/VFIO, binding conditions, DynamicMIG, health) are imported where
# their gate or flag is on, not here: a plugin with the default gates starts without loading them
# (docs/performance.md, tests/test_imports.py). Each feature function still checks its own gate.

log = logging.getLogger(__name__)


def _simulated(config: PluginConfig) -> SimulatedNvml:
    """The ``--simulate`` profile's node, its state kept across restarts."""
    return SimulatedNvml(load_profile(config.simulate), state_path=simulated_nvml_state(config))


def assemble(
    config: PluginConfig,
    helper: Helper,
    stack: ExitStack,
    *,
    kube: KubeApi | None = None,
    on_node_change: Callable[[], None] | None = None,
) -> RunningPlugin:
    """Build the driver behind the served ``helper`` and hand it over; every undo step on ``stack``.

    Args are :func:`~nvdra.plugins.gpu.serve.serve`'s. The order of the steps is the design: state
    repaired under the start-up lock before the driver takes calls, slices published only once the
    driver is ready (and the kubelet registered the plugin).
    """
    built = _build_driver(config, stack, kube=kube, on_node_change=on_node_change)
    return _go_live(config, helper, stack, built, on_node_change=on_node_change)


class _Built(NamedTuple):
    """What :func:`_build_driver` made, for :func:`_go_live`."""

    backend: NvmlBackend
    inventory: Inventory
    api: KubeApi
    gates: FeatureGates
    effects: Effects
    driver: GpuDriver


def _build_driver(
    config: PluginConfig,
    stack: ExitStack,
    *,
    kube: KubeApi | None,
    on_node_change: Callable[[], None] | None,
) -> _Built:
    """Discovery, the node's gates, and the driver with its state repaired under the start-up lock."""
    backend, host_root, container_root = open_backend(config, stack, lambda: _simulated(config))
    inventory = discover_inventory(backend)
    log.info("discovered %d GPUs (driver %s)", len(inventory.gpus), inventory.driver_version)
    api = kube or api_client(config)
    gates = node_gates(config, api, os.environ)  # with the per-node rollout label
    if config.publish_fabric_partitions:
        from nvdra.plugins.gpu.fabric.partitions import partitions_enabled

        published = partitions_enabled(True, gates)
        log.info(
            "--publish-fabric-partitions: partition devices %s",
            "published" if published else "not published (FabricTopologySupport is off on this node)",
        )
    startup = _startup_lock(config)
    stack.callback(startup.close)
    specs = GpuClaimSpecs(
        cdi_root=config.cdi_root,
        host_driver_root=host_root,
        container_driver_root=container_root,
        driver_version=inventory.driver_version,
        hook_path=install_cdi_hook(config),  # the image's hook, copied into the plugin dir
    )
    recover_plugin_dir(config, inventory, gates)  # temp files a crash left; an upstream checkpoint
    store = CheckpointStore(config.checkpoint_path, boot_id=node_boot_id(config))
    views = _feature_views(config, gates, inventory)
    effects = build_effects(config, gates, backend, api, stack=stack, on_fm_answer=on_node_change)
    if gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
        from nvdra.plugins.gpu.fabric.activation import partition_binding_views

        views += partition_binding_views(gates, effects.planners, config.publish_fabric_partitions)
    driver = GpuDriver(
        node_name=config.node_name,
        inventory=inventory,
        gates=gates,
        store=store,
        specs=specs,
        effects=effects,
        views=views,
        fabric_partitions=config.publish_fabric_partitions,
        shares=shares_option(config.consumable_shares, gates).enabled,
    )
    stack.callback(driver.close)
    driver.start()
    if gates.enabled(Gate.DYNAMIC_MIG):
        from nvdra.plugins.gpu.mig import sweep_unknown_mig

        sweep_unknown_mig(backend, gates, driver.checkpoint())
    startup.close()
    return _Built(backend=backend, inventory=inventory, api=api, gates=gates, effects=effects, driver=driver)


def _go_live(
    config: PluginConfig,
    helper: Helper,
    stack: ExitStack,
    built: _Built,
    *,
    on_node_change: Callable[[], None] | None,
) -> RunningPlugin:
    """Hand the driver to the served ``helper`` (waiting DRA calls go on), publish, and start the loops
    around it: status reports, binders, health, endpoints, the node-label watch."""
    backend, inventory, api, gates, effects, driver = built
    health = _health_view(config, gates, driver, helper.health)
    metrics = PluginMetrics(
        driver=config.driver_name, node=config.node_name, prepared_devices=driver.prepared_device_counts
    )
    # KEP-4817: each prepared claim's devices are reported in its status.devices (cleared on unprepare)
    reporter = ClaimStatusReporter(
        InstrumentedDriver(driver, metrics),
        cast(ObjectApi, api),
        driver_name=config.driver_name,
        describe=driver.device_status,
        background=True,  # off the kubelet's critical path (docs/performance.md)
    )
    stack.callback(reporter.close)  # after the sockets stop (the stack unwinds in reverse)
    driver_ready(config, helper, reporter, api)  # DRA calls waiting at the start gate go on now
    driver.on_resources_changed = helper.publish_resources
    helper.publish_resources(driver.resources())
    _start_binders(config, gates, cast(ObjectApi, api), driver, effects=effects, stack=stack)
    if health is not None:
        from nvdra.plugins.gpu.health import start_health_monitor

        monitor = start_health_monitor(backend, inventory, health)
        stack.callback(health.stop)
        stack.callback(monitor.stop)
    port, metrics_port = serve_endpoints(config, stack, helper, metrics)
    if on_node_change is not None and hasattr(api, "watch_objects"):
        label_watch = FabricLabelWatch(
            cast(ObjectApi, api),
            config.node_name,
            base=parse_feature_gates(config.feature_gates, env=os.environ),
            current=gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT),
            on_change=on_node_change,
        )
        stack.callback(label_watch.start().stop)
    return RunningPlugin(
        config=config,
        gates=gates,
        backend=backend,
        inventory=inventory,
        driver=driver,
        helper=helper,
        liveness_port=port,
        metrics_port=metrics_port,
        effects=effects,
        status=reporter,
    )


def _startup_lock(config: PluginConfig) -> ExitStack:
    """The serialization flock, held while state is repaired when another instance may share the dir.

    During a rolling update (a pod UID) the old instance may be in the middle of a call: the new one's
    temp-file sweep, roll-back of ``PrepareStarted`` entries, orphaned-spec sweep and unknown-MIG sweep
    would undo its work in progress. Close the returned stack to release the lock.
    """
    held = ExitStack()
    if config.pod_uid:
        serializer = RequestSerializer(lock_file=config.plugin_dir / SERIALIZE_LOCK_NAME)
        held.callback(serializer.close)
        held.enter_context(serializer.hold())
    return held


def build_effects(
    config: PluginConfig,
    gates: FeatureGates,
    backend: NvmlBackend,
    api: KubeApi,
    *,
    stack: ExitStack,
    on_fm_answer: Callable[[], None] | None,
) -> Effects:
    """The effect planners (in order) and executors of this node's enabled features.

    Each feature (sharing, MIG, fabric, passthrough) adds its planners and executors here. While the
    fabric publishes the board table because Fabric Manager was down, FM is retried and
    ``on_fm_answer`` called once it answers (the watch stops with ``stack``).
    """
    features: list[tuple[Sequence[EffectPlanner], Sequence[EffectExecutor]]]
    features = [sharing_effects(config, gates, backend, api)]
    if gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):  # without it: no fabric planner, nothing to watch
        from nvdra.plugins.gpu.fabric import build_fabric_effects, planned_node_fabric, watch_fabric_manager

        fabric_planners, fabric_executors = build_fabric_effects(config, gates, backend)
        node = planned_node_fabric(fabric_planners)
        stack.callback(watch_fabric_manager(node, config, os.environ, on_fm_answer))
        features.append((fabric_planners, fabric_executors))
    if gates.enabled(Gate.PASSTHROUGH_SUPPORT) or gates.enabled(Gate.DEVICE_METADATA):
        from nvdra.plugins.gpu.vfio import passthrough_effects

        features.append(passthrough_effects(config, gates))
    return Effects(
        [planner for planners, _ in features for planner in planners],
        [executor for _, executors in features for executor in executors],
    )


def _feature_views(config: PluginConfig, gates: FeatureGates, inventory: Inventory) -> list[DeviceView]:
    """The device views of the enabled features, in the order they decorate the published devices."""
    views: list[DeviceView] = []
    if gates.enabled(Gate.PASSTHROUGH_SUPPORT):
        from nvdra.plugins.gpu.vfio import passthrough_views

        views += passthrough_views(config, gates, inventory)
    views += shares_views(config.consumable_shares, gates)
    views += list_attribute_views(gates, inventory)
    if gates.enabled(Gate.DEVICE_BINDING_CONDITIONS):
        from nvdra.plugins.gpu.binding import binding_views

        views += binding_views(gates)
    return views


def _start_binders(
    config: PluginConfig,
    gates: FeatureGates,
    api: ObjectApi,
    driver: GpuDriver,
    *,
    effects: Effects,
    stack: ExitStack,
) -> None:
    """The binding-conditions binders of passthrough and fabric partitions, where their gates are on;
    each stops with ``stack``."""
    if gates.enabled(Gate.DEVICE_BINDING_CONDITIONS):
        from nvdra.plugins.gpu.binding import start_binder

        binder = start_binder(config, gates, api, driver.views, lambda: set(driver.checkpoint().claims))
        stack.callback(binder.stop if binder is not None else lambda: None)
    if gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
        from nvdra.plugins.gpu.fabric.activation import start_partition_binder

        fabric_binder = start_partition_binder(
            config,
            gates,
            api,
            inventory=driver.inventory,
            effects=effects,
            checkpoint=driver.checkpoint,
        )
        stack.callback(fabric_binder.stop if fabric_binder is not None else lambda: None)


def _health_view(
    config: PluginConfig, gates: FeatureGates, driver: GpuDriver, reporter: HealthReporter
) -> HealthTracker | None:
    """:func:`~nvdra.plugins.gpu.health.health_view` reporting into the served stream's ``reporter``:
    None, without loading it, while the gate is off."""
    if not gates.enabled(Gate.NVML_DEVICE_HEALTH_CHECK):
        return None
    from nvdra.plugins.gpu.health import health_view

    return health_view(config, gates, driver, reporter=reporter)
