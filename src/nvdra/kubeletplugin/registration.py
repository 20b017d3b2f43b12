"""The kubelet plugin registration service (``pluginregistration.Registration``).

The kubelet finds ``<driver>-reg.sock`` in its registry directory, calls ``GetInfo``, validates the
answer, and reports the outcome with ``NotifyRegistrationStatus``. Invariants owned here:

* ``GetInfo`` answers ``PluginInfo{type "DRAPlugin", name, endpoint, supported_versions}`` with the
  DRA versions most preferred first (``v1.DRAPlugin`` before ``v1beta1.DRAPlugin``; kubelets ≥ 1.34
  pick the first one they know) and, when offered, ``v1alpha1.DRAResourceHealth``;
* every notification is recorded; ``plugin_registered=true`` sets the ``registered`` event and fires
  the callback, each time (a restarted kubelet registers again, and the driver must republish);
* ``plugin_registered=false`` clears the event and fails the call with the kubelet's error, as the
  Go helper does.
"""

from __future__ import annotations

__all__ = ["DRA_PLUGIN_TYPE", "HEALTH_TOKEN", "RegistrationServicer", "RegistrationStatus"]

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import grpc

from nvdra.kubeletplugin._proto import pluginregistration_pb2, pluginregistration_pb2_grpc

DRA_PLUGIN_TYPE = "DRAPlugin"
HEALTH_TOKEN = "v1alpha1.DRAResourceHealth"

_log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class RegistrationStatus:
    """The kubelet's latest NotifyRegistrationStatus, with how many times it registered the plugin."""

    registered: bool
    error: str = ""
    registrations: int = 0  # notifications with plugin_registered=true so far
    received_at: float = 0.0  # time.monotonic() of the notification


class RegistrationServicer:
    """Serves GetInfo / NotifyRegistrationStatus and records what the kubelet said.

    Args:
        driver_name: the DRA driver name (``PluginInfo.name``).
        endpoint: absolute path of the DRA socket (``PluginInfo.endpoint``).
        supported_versions: service tokens, most preferred first.
        on_registered: called (in the gRPC thread) every time the kubelet reports success; its
            exceptions are logged and do not fail the notification.
    """

    def __init__(
        self,
        *,
        driver_name: str,
        endpoint: str,
        supported_versions: Sequence[str],
        on_registered: Callable[[RegistrationStatus], None] | None = None,
    ) -> None:
        self.driver_name = driver_name
        self.endpoint = endpoint
        self.supported_versions = tuple(supported_versions)
        self.registered = threading.Event()
        self._on_registered = on_registered
        self._lock = threading.Lock()
        self._status: RegistrationStatus | None = None
        self._count = 0

    def add_to_server(self, server: grpc.Server) -> None:
        """Register this servicer on ``server``."""
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(self, server)

    def status(self) -> RegistrationStatus | None:
        """The latest notification, or None before the kubelet sent one."""
        with self._lock:
            return self._status

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Describe the plugin to the kubelet."""
        _log.debug("GetInfo from kubelet: endpoint=%s versions=%s", self.endpoint, self.supported_versions)
        return pluginregistration_pb2.PluginInfo(
            type=DRA_PLUGIN_TYPE,
            name=self.driver_name,
            endpoint=self.endpoint,
            supported_versions=list(self.supported_versions),
        )

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Record the kubelet's verdict; fail the call when it did not register the plugin."""
        registered, error = bool(request.plugin_registered), str(request.error)
        with self._lock:
            if registered:
                self._count += 1
            status = RegistrationStatus(
                registered=registered, error=error, registrations=self._count, received_at=time.monotonic()
            )
            self._status = status
        if not registered:
            self.registered.clear()
            _log.error("kubelet did not register DRA driver %s: %s", self.driver_name, error)
            context.abort(grpc.StatusCode.UNKNOWN, f"failed registration process: {error}")
        _log.info(
            "kubelet registered DRA driver %s (registration #%d)", self.driver_name, status.registrations
        )
        self.registered.set()
        if self._on_registered is not None:
            try:
                self._on_registered(status)
            except Exception:
                _log.exception("registration callback of DRA driver %s failed", self.driver_name)
        return pluginregistration_pb2.RegistrationStatusResponse()
