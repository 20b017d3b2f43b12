"""The helper: registration over a real socket, publishing only after registration, clean stop."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin import helper as helper_mod
from nvdra.kubeletplugin.client import KubeletClient, PluginRpcError
from nvdra.kubeletplugin.health import HealthReporter
from nvdra.kubeletplugin.helper import Helper, PluginOptions
from nvdra.kubeletplugin.types import ClaimRef, DriverResources, Pool, Slice
from tests.kubeletplugin.conftest import DRIVER, ClaimStore, RecordingPublisher, TinyDriver

RESOURCES = DriverResources(pools={"node-a": Pool(slices=(Slice(devices=({"name": "gpu-0"},)),))})


def _start(dirs: tuple[Path, Path], **kwargs: Any) -> Helper:
    data, reg = dirs
    driver = kwargs.pop("driver", TinyDriver())
    publisher = kwargs.pop("publisher", None)
    options = PluginOptions(
        driver_name=DRIVER, node_name="node-a", plugin_data_dir=data, registrar_dir=reg, **kwargs
    )
    return helper_mod.start(driver, ClaimStore(), options, publisher=publisher)


def test_get_info_describes_the_plugin(dirs: tuple[Path, Path]) -> None:
    """GetInfo answers DRAPlugin, the driver name, the DRA socket, v1 before v1beta1, and the health
    service, announced even without a health reporter (a 1.36 kubelet opens it regardless)."""
    with _start(dirs) as h, KubeletClient(dirs[1]) as kubelet:
        info = kubelet.get_info(h.registration_socket)
    assert (info.type, info.name, info.endpoint) == ("DRAPlugin", DRIVER, str(dirs[0] / "dra.sock"))
    assert info.supported_versions == ("v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth")


def test_health_token_announced_when_health_offered(dirs: tuple[Path, Path]) -> None:
    """With a health reporter the v1alpha1 health service is announced after the DRA versions."""
    with _start(dirs, health=HealthReporter()) as h, KubeletClient(dirs[1]) as kubelet:
        info = kubelet.get_info(h.registration_socket)
    assert info.supported_versions[-1] == "v1alpha1.DRAResourceHealth"


def test_sockets_and_data_dir_layout(dirs: tuple[Path, Path]) -> None:
    """DRA socket in the plugin dir (created 0750), registration socket `<driver>-reg.sock`."""
    data, reg = dirs
    with _start(dirs) as h:
        assert h.dra_socket == data / "dra.sock" and h.dra_socket.is_socket()
        assert h.registration_socket == reg / f"{DRIVER}-reg.sock" and h.registration_socket.is_socket()
        assert stat.S_IMODE(data.stat().st_mode) == 0o750


def test_publisher_starts_only_after_registration(dirs: tuple[Path, Path]) -> None:
    """publish_resources before registration records only; registration starts and feeds the publisher."""
    publisher = RecordingPublisher()
    with _start(dirs, publisher=publisher) as h, KubeletClient(dirs[1]) as kubelet:
        h.publish_resources(RESOURCES)
        assert publisher.events == []
        assert h.registration_status() is None and not h.wait_registered(0)
        kubelet.register(h.registration_socket)
        assert h.wait_registered(5)
        assert publisher.events == [("start", None), ("update", RESOURCES)]
        h.publish_resources(DriverResources(pools={}))
        assert publisher.events[-1] == ("update", DriverResources(pools={}))
    assert publisher.events[-1:] == [("stop", None)]


def test_reregistration_republishes(dirs: tuple[Path, Path]) -> None:
    """A second registration (kubelet restart) hands the desired state over again, no second start."""
    publisher = RecordingPublisher()
    with _start(dirs, publisher=publisher) as h, KubeletClient(dirs[1]) as kubelet:
        h.publish_resources(RESOURCES)
        kubelet.register(h.registration_socket)
        kubelet.register(h.registration_socket)
        status = h.registration_status()
        assert status is not None and status.registrations == 2
    assert [e for e, _ in publisher.events] == ["start", "update", "update", "stop"]


def test_failed_registration_is_recorded_and_rejected(dirs: tuple[Path, Path]) -> None:
    """NotifyRegistrationStatus(false) fails the call, is recorded, and publishes nothing."""
    publisher = RecordingPublisher()
    with _start(dirs, publisher=publisher) as h, KubeletClient(dirs[1]) as kubelet:
        h.publish_resources(RESOURCES)
        with pytest.raises(PluginRpcError, match="version skew"):
            kubelet.notify(h.registration_socket, registered=False, error="version skew")
        status = h.registration_status()
        assert status is not None and not status.registered and status.error == "version skew"
        assert not h.wait_registered(0)
    assert publisher.events == []


def test_publish_without_publisher_is_a_config_error(dirs: tuple[Path, Path]) -> None:
    """publish_resources needs a publisher."""
    with _start(dirs) as h, pytest.raises(errors.ConfigError, match="publisher"):
        h.publish_resources(RESOURCES)


def test_stop_is_idempotent_and_removes_own_sockets(dirs: tuple[Path, Path]) -> None:
    """stop() twice is fine and leaves neither socket behind."""
    h = _start(dirs)
    h.stop()
    h.stop()
    assert not h.dra_socket.exists() and not h.registration_socket.exists()


def test_publisher_failure_goes_to_handle_error(dirs: tuple[Path, Path]) -> None:
    """A publisher that fails to start is reported to the driver; registration still succeeds."""

    class Broken(RecordingPublisher):
        def start(self) -> None:
            raise errors.KubeUnavailable("no apiserver", status=503)

    driver = TinyDriver()
    with _start(dirs, publisher=Broken(), driver=driver) as h, KubeletClient(dirs[1]) as kubelet:
        h.publish_resources(RESOURCES)
        kubelet.register(h.registration_socket)
    assert [m for _, m in driver.errors] == ["start ResourceSlice publishing"]


def test_rolling_update_uses_per_pod_names_and_flock(dirs: tuple[Path, Path]) -> None:
    """With a pod UID both sockets carry it, and driver calls run under serialize.lock's flock."""
    data, reg = dirs
    lock = data / "serialize.lock"

    class LockProbe(TinyDriver):
        def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.errors.append((RuntimeError("lock was free"), "probe"))
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
            return super().unprepare_resource_claims(claims)

    driver = LockProbe()
    with _start(dirs, rolling_update_uid="pod-1", driver=driver) as h:
        assert h.dra_socket == data / "dra-pod-1.sock"
        assert h.registration_socket == reg / f"{DRIVER}-pod-1-reg.sock"
        with KubeletClient(reg) as kubelet:
            claim = ClaimRef(namespace="default", name="a", uid="uid-a")
            assert kubelet.register(h.registration_socket).unprepare([claim]) == {"uid-a": ""}
    assert driver.unprepared == [["uid-a"]] and driver.errors == []
