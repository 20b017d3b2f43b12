"""What the ComputeDomain plugin builds once its sockets are served (:func:`assemble`): the node's
discovery (NVML or the simulated profile), its NVLink clique, the checkpoint, the driver handed to the
sockets, the slices, liveness and metrics.

Imported by :mod:`nvdra.plugins.computedomain.serve` only after the sockets are served, so that NVML,
the CDI writer, the API client and prometheus-client do not delay the kubelet's registration
(``tests/test_imports.py``; docs/performance.md, start-up).
"""

from __future__ import annotations

__all__ = ["assemble", "prepared_device_counts"]

import functools
import json
import logging
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from nvdra.cdi import DriverRoot
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.imex import clique_id_of
from nvdra.imex.hostmode import ImexDeployment
from nvdra.kubeletplugin import Helper
from nvdra.nvml import NodeProfile, SimulatedNvml, discover_inventory, load_profile
from nvdra.plugins.cdihook import install_cdi_hook
from nvdra.plugins.computedomain.cdi import CdClaimSpecs
from nvdra.plugins.computedomain.driver import ComputeDomainDriver
from nvdra.plugins.computedomain.hostimex import HostImexCheck
from nvdra.plugins.computedomain.kube import CdKube
from nvdra.plugins.computedomain.running import CdPluginConfig, RunningCdPlugin
from nvdra.plugins.metrics import InstrumentedDriver, PluginMetrics
from nvdra.plugins.runner import api_client, driver_ready, open_backend, serve_endpoints
from nvdra.plugins.state import CheckpointStore, read_boot_id

log = logging.getLogger(__name__)


def assemble(
    config: CdPluginConfig,
    stack: ExitStack,
    helper: Helper | None,
    *,
    kube: CdKube | None,
    gates: FeatureGates,
    imex: ImexDeployment,
    profile_overrides: Mapping[str, Any] | None,
    ready_timeout_s: float,
) -> RunningCdPlugin:
    """Build the driver, hand it to ``helper``'s sockets (None: not served), publish, and serve the
    liveness and metrics endpoints; every step's undo goes on ``stack`` right after it."""
    api: CdKube = kube or api_client(config)
    driver = _build_driver(
        config,
        stack,
        api,
        gates=gates,
        imex=imex,
        profile_overrides=profile_overrides,
        ready_timeout_s=ready_timeout_s,
    )
    metrics = PluginMetrics(
        driver=config.driver_name,
        node=config.node_name,
        device_types=("daemon", "channel", "unknown"),
        prepared_devices=functools.partial(prepared_device_counts, driver),
    )
    if helper is not None:
        stack.callback(driver.stop)  # runs before the sockets close: no call drains for 45 s
        driver_ready(config, helper, InstrumentedDriver(driver, metrics), api)
        helper.publish_resources(driver.resources())
    port, metrics_port = serve_endpoints(config, stack, helper, metrics)
    return RunningCdPlugin(
        config=config,
        gates=gates,
        clique_id=driver.clique_id,
        driver=driver,
        helper=helper,
        liveness_port=port,
        metrics_port=metrics_port,
    )


@functools.lru_cache(maxsize=64)
def _profile(name: str, overrides_json: str) -> NodeProfile:
    # Profiles are immutable; a simulated rack of many nodes parses each distinct one once.
    return load_profile(name, overrides=json.loads(overrides_json) or None)


def _simulated(config: CdPluginConfig, overrides: Mapping[str, Any] | None) -> SimulatedNvml:
    """The ``--simulate`` profile's node (its generated driver root has the fabric-imex-mgmt capability
    when the profile has a fabric)."""
    return SimulatedNvml(_profile(config.simulate, json.dumps(overrides or {}, sort_keys=True)))


def _build_driver(
    config: CdPluginConfig,
    stack: ExitStack,
    api: CdKube,
    *,
    gates: FeatureGates,
    imex: ImexDeployment,
    profile_overrides: Mapping[str, Any] | None,
    ready_timeout_s: float,
) -> ComputeDomainDriver:
    """Discovery, this node's NVLink clique, and the driver with its checkpoint repaired (started)."""
    backend, host_root, container_root = open_backend(
        config, stack, lambda: _simulated(config, profile_overrides)
    )
    inventory = discover_inventory(backend)
    strict = gates.enabled(Gate.CRASH_ON_NVLINK_FABRIC_ERRORS)
    clique = clique_id_of(((g.uuid, g.fabric) for g in inventory.gpus), strict=strict)
    log.info(
        "node %s: NVLink clique %r (%s mode)", config.node_name, clique, "strict" if strict else "legacy"
    )
    config.plugin_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    root = DriverRoot(str(host_root), str(container_root), driver_version=inventory.driver_version)
    specs = CdClaimSpecs(
        cdi_root=config.cdi_root,
        driver_root=root,
        # A generated root carries its own proc/; a real driver root does not: the kernel's /proc.
        proc_root=container_root if (container_root / "proc/devices").exists() else Path("/"),
        hook_path=install_cdi_hook(config),  # the image's hook, copied into the plugin dir
    )
    store = CheckpointStore(config.checkpoint_path, boot_id=read_boot_id())
    driver = ComputeDomainDriver(
        node_name=config.node_name,
        clique_id=clique,
        gates=gates,
        store=store,
        specs=specs,
        kube=api,
        namespace=config.namespace,
        domains_dir=config.plugin_dir / "domains",
        ready_timeout_s=ready_timeout_s,
        host_imex=HostImexCheck(container_root, imex.host_socket_path) if imex.host_managed else None,
    )
    driver.start()
    return driver


def prepared_device_counts(driver: ComputeDomainDriver) -> dict[str, int]:
    """Devices held by checkpointed claims, per type (``daemon-0`` → daemon): the metrics gauge."""
    counts: dict[str, int] = {}
    for claim in driver.checkpoint().claims.values():
        for device in claim.devices:
            kind = device.device_name.split("-", 1)[0]
            kind = kind if kind in ("daemon", "channel") else "unknown"
            counts[kind] = counts.get(kind, 0) + 1
    return counts
