"""Wire the ComputeDomain driver into a running kubelet plugin (the whole ``nvdra-cd-plugin`` minus signals).

Start order: flags checked (feature gates, the IMEX deployment) → sockets (not serialized: see the
driver; DRA calls wait until the driver is ready) → :mod:`~nvdra.plugins.computedomain.assembly`, loaded
only now: NVML (or the simulated node) → clique id from fabric info (strict or legacy per
``CrashOnNVLinkFabricErrors``) → checkpoint → driver handed to the sockets → slices once the kubelet
registered the plugin → liveness → metrics on ``--http-endpoint`` (the GPU plugin's
``nvidia_dra`` series, ``device_type`` daemon|channel).
"""

from __future__ import annotations

__all__ = ["CdPluginConfig", "RunningCdPlugin", "serve", "serve_until_signalled"]

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from nvdra.core.featuregates import Gate, parse_feature_gates
from nvdra.imex.hostmode import ImexDeployment
from nvdra.plugins.computedomain.running import CdPluginConfig, RunningCdPlugin
from nvdra.plugins.flags import stop_on_signals, wait_for_signal
from nvdra.plugins.runner import serve_pending

if TYPE_CHECKING:
    from nvdra.plugins.computedomain.kube import CdKube

log = logging.getLogger(__name__)


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
        # The kubelet may register the plugin from here on; DRA calls wait for the driver (assembly).
        helper = serve_pending(config, stack, serialize=False) if sockets else None
        from nvdra.plugins.computedomain.assembly import assemble  # what only the driver needs, loaded now

        yield assemble(
            config,
            stack,
            helper,
            kube=kube,
            gates=gates,
            imex=imex,
            profile_overrides=profile_overrides,
            ready_timeout_s=ready_timeout_s,
        )


def serve_until_signalled(config: CdPluginConfig) -> None:
    """Run :func:`serve` until SIGTERM or SIGINT (then stop cleanly, within a deadline)."""
    stop = stop_on_signals()
    with serve(config):
        wait_for_signal(stop, __name__)
