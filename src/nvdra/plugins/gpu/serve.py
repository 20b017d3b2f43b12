"""Wire the GPU driver into a running kubelet plugin: sockets → backend → inventory → driver → slices.

:func:`serve` is the whole process minus signal handling, so that ``nvdra demo``, the benchmarks and
the integration tests run exactly the code ``nvdra-gpu-plugin`` runs. It serves the registration and
DRA sockets first, so the kubelet registers the plugin while its driver is still being built
(:mod:`nvdra.plugins.gpu.assembly`, imported only then); DRA calls that arrive meanwhile wait for it.
This module imports no more than serving the sockets needs (tests/test_imports.py).
"""

from __future__ import annotations

__all__ = ["RunningPlugin", "serve", "serve_until_signalled", "serve_while"]

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from nvdra.core.featuregates import FeatureGates, parse_feature_gates
from nvdra.plugins.flags import fields, stop_on_signals, wait_for_signal
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.running import RunningPlugin
from nvdra.plugins.runner import serve_pending

if TYPE_CHECKING:
    from nvdra.kubeletplugin import KubeApi

log = logging.getLogger(__name__)


@contextmanager
def serve(
    config: PluginConfig, *, kube: KubeApi | None = None, on_node_change: Callable[[], None] | None = None
) -> Iterator[RunningPlugin]:
    """Start the plugin; stop it cleanly when the context exits (or when starting fails half-way).

    The sockets are served first; when a later step fails, DRA calls waiting for the driver fail with
    the cause (gRPC UNAVAILABLE), the sockets close and the exception leaves this function.

    Args:
        config: the parsed flags.
        kube: an API client to use instead of one built from ``config.kubeconfig`` (tests, demo).
        on_node_change: when given, this node's FabricTopologySupport label is watched while serving and
            this is called once the label changes the gate (:mod:`nvdra.plugins.gpu.nodewatch`).
    """
    gates = parse_feature_gates(config.feature_gates, env=os.environ)  # a bad flag fails before serving
    log.info("nvdra-gpu-plugin starting", extra=fields(**config.describe()))
    log.info("feature gates: %s", _describe_gates(gates))
    with ExitStack() as stack:
        # First, so the simulated driver root inside it cannot create it with the umask's mode.
        config.plugin_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        helper = serve_pending(config, stack)  # the kubelet may register the plugin from here on
        from nvdra.plugins.gpu.assembly import assemble  # what only the driver needs, loaded now

        yield assemble(config, helper, stack, kube=kube, on_node_change=on_node_change)


def _describe_gates(gates: FeatureGates) -> str:
    """``Name=value (source)`` for every gate, one line."""
    return ", ".join(
        f"{name}={info['enabled']} ({info['source']})" for name, info in sorted(gates.describe().items())
    )


def serve_until_signalled(config: PluginConfig) -> None:
    """Run :func:`serve_while` until SIGTERM or SIGINT (then stop cleanly, within a deadline)."""
    stop = stop_on_signals()
    serve_while(config, stop, on_stopping=lambda: wait_for_signal(stop, __name__))


def serve_while(
    config: PluginConfig,
    stop: threading.Event,
    *,
    kube: KubeApi | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (``on_stopping`` runs then, before the plugin stops).

    When this node's label changes FabricTopologySupport, the plugin stops serving and serves again
    with the new gates — a fresh start republishes the slices and builds or drops the fabric effects —
    without leaving the process.
    """
    while True:
        relabeled = threading.Event()
        with serve(config, kube=kube, on_node_change=relabeled.set) as running:
            # The sockets are served before the driver is built: the kubelet may have registered us already.
            if running.helper.wait_registered(0):
                log.info("nvdra-gpu-plugin running; registered with the kubelet")
            else:
                log.info("nvdra-gpu-plugin running; waiting for the kubelet to register it")
            while not stop.wait(0.2) and not relabeled.is_set():
                continue  # short slices, so the main thread runs the signal handlers
            if stop.is_set():
                if on_stopping is not None:
                    on_stopping()
                return
        log.info("serving again with this node's new FabricTopologySupport")
