"""Device health for the kubelet: the DRA resource-health stream (``v1alpha1.DRAResourceHealth``).

A driver pushes the *complete* health list of its devices into a :class:`HealthReporter`; every
kubelet stream (``NodeWatchResources``) gets the latest list when it opens, again on every change,
and again every ``resend_interval`` seconds even without a change, because the kubelet lets a
device decay to UNKNOWN when its report is older than the health-check timeout (30 s by default).
Invariants owned here: each message is a complete list; messages longer than 1024 characters are
cut to 1021 + ``...`` (what the kubelet would do); a stream ends when the client goes away, the
reporter is closed, or the server stops.
"""

from __future__ import annotations

__all__ = ["DeviceHealth", "HealthReporter", "HealthServicer", "HealthStatus", "health_from_pb"]

import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import attrs
import grpc

from nvdra.kubeletplugin._proto import dra_health_v1alpha1_pb2, dra_health_v1alpha1_pb2_grpc

_MAX_MESSAGE = 1024


class HealthStatus(enum.IntEnum):
    """Health of one device as the kubelet understands it (wire values of the proto enum)."""

    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2


@attrs.frozen(kw_only=True)
class DeviceHealth:
    """One device's health report.

    ``timeout_seconds`` ≤ 0 lets the kubelet use its default lease; ``last_updated`` is Unix seconds.
    """

    pool_name: str
    device_name: str
    health: HealthStatus
    last_updated: int
    timeout_seconds: int = 0
    message: str = ""


def _to_pb(device: DeviceHealth) -> Any:
    message = device.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return dra_health_v1alpha1_pb2.DeviceHealth(
        device=dra_health_v1alpha1_pb2.DeviceIdentifier(
            pool_name=device.pool_name, device_name=device.device_name
        ),
        health=device.health.name,
        last_updated_time=device.last_updated,
        health_check_timeout_seconds=device.timeout_seconds,
        message=message,
    )


def health_from_pb(response: Any) -> list[DeviceHealth]:
    """Decode one NodeWatchResourcesResponse."""
    return [
        DeviceHealth(
            pool_name=str(d.device.pool_name),
            device_name=str(d.device.device_name),
            health=HealthStatus(int(d.health)),
            last_updated=int(d.last_updated_time),
            timeout_seconds=int(d.health_check_timeout_seconds),
            message=str(d.message),
        )
        for d in response.devices
    ]


class HealthReporter:
    """The latest complete health list of a driver, fanned out to every open kubelet stream.

    Args:
        resend_interval: seconds after which an unchanged list is sent again (keep it well below the
            kubelet's 30 s default lease).
    """

    def __init__(self, *, resend_interval: float = 10.0) -> None:
        self.resend_interval = resend_interval
        self._cond = threading.Condition()
        self._devices: tuple[DeviceHealth, ...] | None = None
        self._version = 0
        self._closed = False

    def report(self, devices: Sequence[DeviceHealth]) -> None:
        """Replace the health list (every device of the driver) and wake the streams."""
        with self._cond:
            self._devices = tuple(devices)
            self._version += 1
            self._cond.notify_all()

    def close(self) -> None:
        """End every stream (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake waiting streams so they re-check whether their client is still there."""
        with self._cond:
            self._cond.notify_all()

    def updates(self, is_active: Callable[[], bool] | None = None) -> Iterator[tuple[DeviceHealth, ...]]:
        """Yield the current list, then each change, and the same list again every resend interval.

        Args:
            is_active: a callable returning False once the consumer is gone (checked on each wake-up).
        """
        seen = 0
        while True:
            with self._cond:
                if self._version == seen:
                    self._cond.wait_for(
                        partial(self._should_wake, seen, is_active), timeout=self.resend_interval
                    )
                if self._closed or not _alive(is_active):
                    return
                devices, seen = self._devices, self._version
            if devices is not None:
                yield devices

    def _should_wake(self, seen: int, is_active: Callable[[], bool] | None) -> bool:
        return self._closed or self._version != seen or not _alive(is_active)


def _alive(is_active: Callable[[], bool] | None) -> bool:
    return True if is_active is None else bool(is_active())


class HealthServicer:
    """Serves ``NodeWatchResources`` from a :class:`HealthReporter`."""

    def __init__(self, reporter: HealthReporter) -> None:
        self.reporter = reporter

    def add_to_server(self, server: grpc.Server) -> None:
        """Register this servicer on ``server`` (the DRA socket's server)."""
        dra_health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(self, server)

    def NodeWatchResources(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Stream complete health lists until the kubelet hangs up or the plugin stops."""
        # A cancelled RPC must wake the waiting loop at once rather than at the next resend.
        context.add_callback(self.reporter.wake)
        for devices in self.reporter.updates(context.is_active):
            yield dra_health_v1alpha1_pb2.NodeWatchResourcesResponse(devices=[_to_pb(d) for d in devices])
