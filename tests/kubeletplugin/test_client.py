"""The kubelet test client: discovery, version choice, rejection, channel reuse, health stream."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from nvdra.kubeletplugin import helper as helper_mod
from nvdra.kubeletplugin.client import KubeletClient, RegistrationRejected
from nvdra.kubeletplugin.health import DeviceHealth, HealthReporter, HealthStatus
from nvdra.kubeletplugin.helper import Helper, PluginOptions
from nvdra.kubeletplugin.registration import RegistrationServicer
from nvdra.kubeletplugin.sockets import UnixSocketServer
from tests.kubeletplugin.conftest import DRIVER, ClaimStore, TinyDriver


def _start(dirs: tuple[Path, Path], **kwargs: Any) -> Helper:
    data, reg = dirs
    options = PluginOptions(
        driver_name=DRIVER, node_name="n", plugin_data_dir=data, registrar_dir=reg, **kwargs
    )
    return helper_mod.start(TinyDriver(), ClaimStore(), options)


def _fake_registrar(
    path: Path, versions: list[str], type_: str = "DRAPlugin"
) -> tuple[UnixSocketServer, RegistrationServicer]:
    servicer = RegistrationServicer(
        driver_name="odd.example.com", endpoint="/nowhere", supported_versions=versions
    )
    server = UnixSocketServer(path, name="fake-reg")
    if type_ != "DRAPlugin":
        original = servicer.GetInfo

        def get_info(request: Any, context: Any) -> Any:  # the generated messages are untyped
            info = original(request, context)
            info.type = type_
            return info

        servicer.GetInfo = get_info  # type: ignore[method-assign]  # a registrar that misreports its type
    servicer.add_to_server(server.server)
    server.start()
    return server, servicer


def test_discover_ignores_dot_files_and_non_sockets(dirs: tuple[Path, Path]) -> None:
    """Only `*-reg.sock` sockets not starting with a dot are found."""
    _, reg = dirs
    with _start(dirs) as h:
        hidden = reg / ".hidden-reg.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(hidden))
        s.close()
        (reg / "plain-reg.sock").write_text("not a socket")
        assert KubeletClient(reg).discover() == [h.registration_socket]


def test_first_known_version_wins(dirs: tuple[Path, Path]) -> None:
    """A plugin announcing v1 then v1beta1 is spoken to over v1; v1beta1 can be forced."""
    with _start(dirs) as h, KubeletClient(dirs[1]) as kubelet:
        assert kubelet.register(h.registration_socket).api_version == "v1"
        assert kubelet.register(h.registration_socket, api="v1beta1").api_version == "v1beta1"
        assert [p.info.name for p in kubelet.register_all()] == [DRIVER]


def test_v1beta1_only_plugin_is_used_over_v1beta1(dirs: tuple[Path, Path]) -> None:
    """A plugin serving only v1beta1 announces only it and is registered on it."""
    with _start(dirs, api_versions=("v1beta1",)) as h, KubeletClient(dirs[1]) as kubelet:
        plugin = kubelet.register(h.registration_socket)
        assert plugin.api_version == "v1beta1"
        assert plugin.prepare([]) == {}


@pytest.mark.parametrize(
    ("versions", "type_", "match"),
    [
        (["v1alpha3.NodeService", "v9.Other"], "DRAPlugin", "none of which"),
        (["v1.DRAPlugin"], "CSIPlugin", "not 'DRAPlugin'"),
    ],
)
def test_unacceptable_plugins_are_rejected_and_told(
    sockdir: Path, versions: list[str], type_: str, match: str
) -> None:
    """Unknown services or a wrong type raise, and the plugin hears plugin_registered=false."""
    path = sockdir / "odd-reg.sock"
    server, servicer = _fake_registrar(path, versions, type_)
    try:
        with KubeletClient(sockdir) as kubelet, pytest.raises(RegistrationRejected, match=match):
            kubelet.register(path)
        status = servicer.status()
        assert status is not None and not status.registered and match.split(maxsplit=1)[0] in status.error
    finally:
        server.stop(0)


def test_channels_are_reused(dirs: tuple[Path, Path]) -> None:
    """One channel per socket path, however many calls and registrations."""
    with _start(dirs) as h, KubeletClient(dirs[1]) as kubelet:
        first = kubelet.register(h.registration_socket)
        second = kubelet.register(h.registration_socket)
        assert kubelet.channel(h.dra_socket) is kubelet.channel(str(h.dra_socket))
        assert first._stub is not second._stub and len(kubelet._channels) == 2


def test_health_stream_delivers_reports_and_resends(dirs: tuple[Path, Path]) -> None:
    """The stream carries each complete list, truncates long messages, and re-sends unchanged lists."""
    reporter = HealthReporter(resend_interval=0.05)
    healthy = DeviceHealth(
        pool_name="n", device_name="gpu-0", health=HealthStatus.HEALTHY, last_updated=int(time.time())
    )
    with _start(dirs, health=reporter) as h, KubeletClient(dirs[1]) as kubelet:
        plugin = kubelet.register(h.registration_socket)
        assert plugin.offers_health
        reporter.report([healthy])
        with plugin.watch_health() as watch:
            stream = iter(watch)
            assert next(stream) == [healthy]
            assert next(stream) == [healthy]  # resent without a change
            sick = DeviceHealth(
                pool_name="n",
                device_name="gpu-0",
                health=HealthStatus.UNHEALTHY,
                last_updated=1,
                timeout_seconds=60,
                message="x" * 2000,
            )
            reporter.report([sick])
            got = next(stream)
            while got == [healthy]:
                got = next(stream)
            assert got[0].health is HealthStatus.UNHEALTHY and got[0].timeout_seconds == 60
            assert len(got[0].message) == 1024 and got[0].message.endswith("...")


def test_health_stream_ends_when_plugin_stops(dirs: tuple[Path, Path]) -> None:
    """Stopping the helper closes the stream instead of leaving the kubelet hanging."""
    reporter = HealthReporter(resend_interval=30)
    h = _start(dirs, health=reporter)
    with KubeletClient(dirs[1]) as kubelet:
        plugin = kubelet.register(h.registration_socket)
        reporter.report([])
        watch = plugin.watch_health()
        stream = iter(watch)
        assert next(stream) == []
        h.stop()
        assert list(stream) == []
