"""Liveness probe service: ``grpc.health.v1.Health`` on TCP (the upstream ``--healthcheck-port``).

``Check`` with service ``""`` or ``"liveness"`` exercises the plugin the way the kubelet would: a
``GetInfo`` on the plugin's own registration socket and an empty ``NodePrepareResources`` (the
no-op probe call) on its DRA socket. SERVING only if both answer within the timeout; NOT_SERVING
otherwise; any other service name is NOT_FOUND. A fresh unix-socket channel per check keeps a dead
socket from poisoning later checks (probes run every 10 to 30 s, so channel setup cost is irrelevant).
"""

from __future__ import annotations

__all__ = ["LIVENESS_SERVICES", "LivenessServicer", "start_liveness_server"]

import logging
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from nvdra.core import errors
from nvdra.kubeletplugin import _grpc
from nvdra.kubeletplugin._proto import (
    grpc_health_v1_pb2,
    grpc_health_v1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

LIVENESS_SERVICES = frozenset({"", "liveness"})

_log = logging.getLogger(__name__)


class LivenessServicer:
    """Answers ``Check`` by probing the plugin's registration and DRA sockets.

    Args:
        reg_socket: the plugin's registration socket.
        dra_socket: the plugin's DRA socket.
        timeout: seconds allowed for each of the two probe calls.
    """

    def __init__(self, reg_socket: Path, dra_socket: Path, *, timeout: float = 5.0) -> None:
        self.reg_socket = reg_socket
        self.dra_socket = dra_socket
        self.timeout = timeout

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        """gRPC Health.Check."""
        service = str(request.service)
        if service not in LIVENESS_SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        status = grpc_health_v1_pb2.HealthCheckResponse.NOT_SERVING
        if self._probe():
            status = grpc_health_v1_pb2.HealthCheckResponse.SERVING
        return grpc_health_v1_pb2.HealthCheckResponse(status=status)

    def _probe(self) -> bool:
        try:
            with grpc.insecure_channel(f"unix:{self.reg_socket}") as channel:
                stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
                stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=self.timeout)
            with grpc.insecure_channel(f"unix:{self.dra_socket}") as channel:
                api = _grpc.DRA_APIS["v1"]
                api.stub(channel).NodePrepareResources(
                    api.pb2.NodePrepareResourcesRequest(), timeout=self.timeout
                )
        except grpc.RpcError as exc:
            _log.warning("liveness check failed: %s", exc)
            return False
        return True


def start_liveness_server(
    port: int, reg_socket: Path | str, dra_socket: Path | str, *, host: str = "[::]", timeout: float = 5.0
) -> tuple[grpc.Server, int]:
    """Serve the liveness Health service on TCP ``host:port`` (port 0 picks a free port).

    Returns:
        The started server (stop it with ``server.stop(grace)``) and the bound port.

    Raises:
        HostError: the port cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="nvdra-liveness"),
        options=[("grpc.so_reuseport", 0)],
    )
    grpc_health_v1_pb2_grpc.add_HealthServicer_to_server(
        LivenessServicer(Path(reg_socket), Path(dra_socket), timeout=timeout), server
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise errors.HostError(f"liveness server: cannot bind {host}:{port}: {exc}") from exc
    server.start()
    _log.info("liveness server listening on %s:%d", host, bound)
    return server, bound
