"""The start-up steps every kubelet plugin process shares, said once.

Both plugins' ``serve`` (GPU and ComputeDomain) run one linear start sequence whose undo steps sit on an
``ExitStack``. The steps they share live here: serve the gRPC sockets before the driver is built
(:func:`serve_pending`: the kubelet registers the plugin while it starts, DRA calls wait), open NVML
(or the simulated node) with its driver roots, build the API client from the flags, hand the built
driver to the sockets with a ResourceSlice publisher (:func:`driver_ready`), and serve the liveness
probe and the metrics endpoint. What each plugin builds between them (its driver, its specs, its
effects) stays in its own ``serve``.

Only what serving the sockets needs is imported here at module level: NVML, the API client, the
publisher and the metrics are imported by the steps that use them, after the sockets are served
(docs/performance.md, start-up).
"""

from __future__ import annotations

__all__ = [
    "api_client",
    "driver_ready",
    "open_backend",
    "run_plugin_process",
    "serve_endpoints",
    "serve_pending",
]

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from nvdra.kubeletplugin.health import HealthReporter
from nvdra.kubeletplugin.helper import Helper, PluginOptions, start_pending
from nvdra.kubeletplugin.types import DraDriver, KubeApi
from nvdra.plugins.faults import arm_from_environment
from nvdra.plugins.flags import process_main
from nvdra.plugins.pluginconfig import KubeletPluginConfig

if TYPE_CHECKING:
    from nvdra.kubeletplugin import KubernetesKubeApi
    from nvdra.nvml import NvmlBackend
    from nvdra.plugins.metrics import PluginMetrics


def run_plugin_process(program: str, verbosity: int, serve: Callable[[], None]) -> None:
    """A kubelet plugin process's ``main`` once its flags are parsed: log as ``-v`` and
    ``--logging-format`` say, arm the fault point ``NVDRA_FAULT_POINT`` names, then ``serve`` (its
    config built from the flags, until a signal); a library error ends the process in one line."""
    with process_main(program, verbosity):
        arm_from_environment()
        serve()


def open_backend(
    config: KubeletPluginConfig, stack: ExitStack, simulated: Callable[[], NvmlBackend]
) -> tuple[NvmlBackend, Path, Path]:
    """The NVML backend, initialised (its shutdown on ``stack``), and the (host, container) driver roots.

    ``simulated`` builds the backend of ``--simulate``'s profile; otherwise the real library is opened
    from the container's driver root. Both are opened the same way (:func:`~nvdra.nvml.nvml_session`),
    so an init failure names its first cause: no ``libnvidia-ml.so.1`` under the root, or NVML's own
    error. A simulated node gets a generated driver root, the same path from the host and the container.
    """
    from nvdra.nvml import PynvmlBackend, make_simulated_driver_root, nvml_session

    backend = simulated() if config.simulate else PynvmlBackend(driver_root=config.container_driver_root)
    stack.enter_context(nvml_session(backend))
    if config.simulate:
        root = make_simulated_driver_root(backend, config.simulated_tree("driver-root", create=True))
        return backend, root, root
    return backend, config.nvidia_driver_root, config.container_driver_root


def api_client(config: KubeletPluginConfig) -> KubernetesKubeApi:
    """The API client of ``--kubeconfig`` (in-cluster when empty), rate-limited by the QPS flags."""
    from nvdra.kubeletplugin import KubernetesKubeApi

    return KubernetesKubeApi.from_kubeconfig(
        config.kubeconfig or None, qps=config.kube_api_qps, burst=config.kube_api_burst
    )


def serve_pending(
    config: KubeletPluginConfig,
    stack: ExitStack,
    *,
    serialize: bool = True,
    health: HealthReporter | None = None,
) -> Helper:
    """Serve the DRA and registration sockets before the driver is built (stopped with ``stack``).

    The kubelet can register the plugin from here on; DRA calls wait until :func:`driver_ready`. When
    start-up fails (an exception leaves ``stack``), the waiting calls fail with it at once, before the
    sockets close; the process then exits non-zero, and the kubelet sees the sockets go away.
    """
    helper = start_pending(
        PluginOptions(
            driver_name=config.driver_name,
            node_name=config.node_name,
            plugin_data_dir=config.plugin_dir,
            registrar_dir=config.kubelet_registrar_directory_path,
            rolling_update_uid=config.pod_uid or None,
            serialize=serialize,
            health=health,
        )
    )
    stack.callback(helper.stop)

    def fail_start(
        exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is not None:
            helper.fail_start(exc)
        return False  # the exception goes on

    stack.push(fail_start)  # unwinds before helper.stop
    return helper


def driver_ready(config: KubeletPluginConfig, helper: Helper, driver: DraDriver, api: KubeApi) -> None:
    """Hand the built driver to the served sockets, with a ResourceSlice publisher that starts once the
    kubelet confirms the registration, its errors going to the driver."""
    from nvdra.kubeletplugin.publisher import ResourceSlicePublisher

    publisher = ResourceSlicePublisher(
        api, driver_name=config.driver_name, node_name=config.node_name, on_error=driver.handle_error
    )
    helper.ready(driver, api, publisher=publisher)


def serve_endpoints(
    config: KubeletPluginConfig, stack: ExitStack, helper: Helper | None, metrics: PluginMetrics
) -> tuple[int | None, int | None]:
    """The liveness probe (``--healthcheck-port`` >= 0, when the sockets are served) and the metrics
    endpoint (``--http-endpoint``), both stopped with ``stack``; their ports (None: not served)."""
    from nvdra.kubeletplugin.liveness import start_liveness_server
    from nvdra.plugins.metrics import start_metrics_server

    metrics_port: int | None = None
    if config.http_endpoint:
        server, metrics_port = start_metrics_server(config.http_endpoint, config.metrics_path, metrics)
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
    liveness_port: int | None = None
    if helper is not None and config.healthcheck_port >= 0:
        liveness, liveness_port = start_liveness_server(
            config.healthcheck_port, helper.registration_socket, helper.dra_socket
        )
        stack.callback(liveness.stop, 0)
    return liveness_port, metrics_port
