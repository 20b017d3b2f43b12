"""The liveness Health service probes the plugin's own sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from nvdra.kubeletplugin import helper as helper_mod
from nvdra.kubeletplugin._proto import grpc_health_v1_pb2, grpc_health_v1_pb2_grpc
from nvdra.kubeletplugin.helper import Helper, PluginOptions
from nvdra.kubeletplugin.liveness import start_liveness_server
from tests.kubeletplugin.conftest import DRIVER, ClaimStore, TinyDriver

Response = grpc_health_v1_pb2.HealthCheckResponse
Check = Callable[..., int]  # the probe: an optional service name -> its status


@pytest.fixture
def plugin(dirs: tuple[Path, Path]) -> Iterator[Helper]:
    data, reg = dirs
    options = PluginOptions(driver_name=DRIVER, node_name="n", plugin_data_dir=data, registrar_dir=reg)
    h = helper_mod.start(TinyDriver(), ClaimStore(), options)
    yield h
    h.stop(0)


@pytest.fixture
def check(plugin: Helper) -> Iterator[Check]:
    server, port = start_liveness_server(
        0, plugin.registration_socket, plugin.dra_socket, host="127.0.0.1", timeout=2
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = grpc_health_v1_pb2_grpc.HealthStub(channel)

    def call(service: str = "") -> int:
        status: int = stub.Check(grpc_health_v1_pb2.HealthCheckRequest(service=service), timeout=10).status
        return status

    yield call
    channel.close()
    server.stop(0)


@pytest.mark.parametrize("service", ["", "liveness"])
def test_serving_while_plugin_answers(check: Check, service: str) -> None:
    """Both probe calls succeed: SERVING."""
    assert check(service) == Response.SERVING


def test_not_serving_once_plugin_is_gone(check: Check, plugin: Helper) -> None:
    """With the plugin's sockets gone the probe reports NOT_SERVING."""
    plugin.stop(0)
    assert check() == Response.NOT_SERVING


def test_unknown_service_is_not_found(check: Check) -> None:
    """Any other service name is NOT_FOUND."""
    with pytest.raises(grpc.RpcError) as info:
        check("dra")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
