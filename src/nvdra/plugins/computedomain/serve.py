"""Wire the ComputeDomain driver into a running kubelet plugin (the whole ``nvdra-cd-plugin`` minus signals).

Start order: sockets (not serialized: see the driver; DRA calls wait until the driver is ready) →
NVML (or the simulated node) → clique id from fabric info (strict or legacy per
``CrashOnNVLinkFabricErrors``) → checkpoint → driver handed to the sockets → slices once the kubelet
registered the plugin → liveness → metrics on ``--http-endpoint`` (the GPU plugin's
``nvidia_dra`` series, ``device_type`` daemon|channel).
"""

from __future__ import annotations

__all__ = ["CdPluginConfig", "RunningCdPlugin", "prepared_device_counts", "serve", "serve_until_signalled"]

import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs

from nvdra.cdi import DriverRoot
from nvdra.core.featuregates import FeatureGates, Gate, parse_feature_gates
from nvdra.imex import CD_DRIVER_NAME, clique_id_of
from nvdra.imex.hostmode import DEFAULT_HOST_SOCKET_PATH, ImexDeployment
from nvdra.kubeletplugin import Helper
from nvdra.nvml import (
    NodeProfile,
    SimulatedNvml,
    discover_inventory,
    load_profile,
)
from nvdra.plugins.cdihook import install_cdi_hook
from nvdra.plugins.computedomain.cdi import CdClaimSpecs
from nvdra.plugins.computedomain.driver import ComputeDomainDriver
from nvdra.plugins.computedomain.hostimex import HostImexCheck
from nvdra.plugins.computedomain.kube import CdKube
from nvdra.plugins.flags import stop_on_signals, wait_for_signal
from nvdra.plugins.metrics import InstrumentedDriver, PluginMetrics
from nvdra.plugins.pluginconfig import KubeletPluginConfig
from nvdra.plugins.runner import api_client, driver_ready, open_backend, serve_endpoints, serve_pending
from nvdra.plugins.state import CheckpointStore, read_boot_id

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class CdPluginConfig(KubeletPluginConfig):
    """``nvdra-cd-plugin`` flags (upstream's CD plugin set plus ``--simulate`` and ``--pod-uid``)."""

    driver_name: str = CD_DRIVER_NAME
    imex_mode: str = "driverManaged"  # upstream's --imex-mode: driverManaged | hostManaged
    imex_isolation: str = "domain"  # upstream's --imex-isolation (channel: not supported yet)
    imex_host_socket_path: str = DEFAULT_HOST_SOCKET_PATH  # under the driver root; hostManaged only


@attrs.frozen(kw_only=True)
class RunningCdPlugin:
    """Handles to a plugin started by :func:`serve`."""

    config: CdPluginConfig
    gates: FeatureGates
    clique_id: str
    driver: ComputeDomainDriver
    helper: Helper | None
    liveness_port: int | None
    metrics_port: int | None = None


@functools.lru_cache(maxsize=64)
def _profile(name: str, overrides_json: str) -> NodeProfile:
    # Profiles are immutable; a simulated rack of many nodes parses each distinct one once.
    return load_profile(name, overrides=json.loads(overrides_json) or None)


def _simulated(config: CdPluginConfig, overrides: Mapping[str, Any] | None) -> SimulatedNvml:
    """The ``--simulate`` profile's node (its generated driver root has the fabric-imex-mgmt capability
    when the profile has a fabric)."""
    return SimulatedNvml(_profile(config.simulate, json.dumps(overrides or {}, sort_keys=True)))


@contextmanager
def serve(
    config: CdPluginConfig,
    *,
    kube: CdKube | None = None,
    profile_overrides: Mapping[str, Any] | None = None,
    ready_timeout_s: float = 45.0,
    sockets: bool = True,
) -> Iterator[RunningCdPlugin]:
    """Start the CD plugin; stop it when the context exits.

    Args:
        config: the parsed flags.
        kube: an API client instead of one built from ``config.kubeconfig`` (tests, demo).
        profile_overrides: deep-merged into the simulated profile (e.g. another clique id per node).
        ready_timeout_s: how long one channel prepare waits for the local daemon (upstream: 45 s).
        sockets: False builds the driver without serving it (benchmarks drive it directly).
    """
    # The step order is the design (sockets, driver, hand-over, endpoints), and every step's undo sits on
    # the ExitStack right after it.
    gates = parse_feature_gates(config.feature_gates, env=os.environ)
    imex = ImexDeployment(
        mode=config.imex_mode, isolation=config.imex_isolation, host_socket_path=config.imex_host_socket_path
    ).check(gate_enabled=gates.enabled(Gate.HOST_MANAGED_IMEX_DAEMON))
    log.info("nvdra-cd-plugin starting; flags: %s", config.describe())
    with ExitStack() as stack:
        # The kubelet may register the plugin from here on; DRA calls wait for driver_ready below.
        helper = serve_pending(config, stack, serialize=False) if sockets else None
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
        yield RunningCdPlugin(
            config=config,
            gates=gates,
            clique_id=driver.clique_id,
            driver=driver,
            helper=helper,
            liveness_port=port,
            metrics_port=metrics_port,
        )


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


def serve_until_signalled(config: CdPluginConfig) -> None:
    """Run :func:`serve` until SIGTERM or SIGINT (then stop cleanly, within a deadline)."""
    stop = stop_on_signals()
    with serve(config):
        wait_for_signal(stop, __name__)
