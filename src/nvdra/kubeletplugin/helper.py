"""Start a DRA kubelet plugin: the Python counterpart of Go's ``kubeletplugin.Start``.

:func:`start` brings up, in this order, the DRA socket (v1 + v1beta1 DRA services and the
``v1alpha1.DRAResourceHealth`` stream) and then the registration socket, so the DRA service is ready
before the kubelet can learn about it. :func:`start_pending` serves both before the driver is built
(a plugin registers while it still discovers its devices and repairs its state); :meth:`Helper.ready`
hands the driver over later. Invariants owned here:

* until :meth:`Helper.ready`, DRA calls wait at the start gate (:class:`~nvdra.kubeletplugin.service.
  StartGate`): they fail with gRPC ``UNAVAILABLE`` when start-up fails (:meth:`Helper.fail_start`),
  the plugin stops, or their deadline comes first; the health stream is open and silent meanwhile;

* the health service is always served and announced. A 1.36 kubelet opens ``NodeWatchResources`` on
  every DRA plugin whether or not it is announced (kubernetes/kubernetes#141855) and logs an error
  every 5 s when it is not implemented. Without a :class:`HealthReporter` from the driver (device
  health checks off) the stream stays open and sends nothing: the kubelet then knows no device
  health, which is exactly the truth, and logs nothing;

* ResourceSlices are published only after the kubelet called
  ``NotifyRegistrationStatus(plugin_registered=true)`` and the driver is ready: until then
  :meth:`Helper.publish_resources` only records the desired state. Publishing earlier gets pods
  scheduled onto a node whose kubelet does not know the driver yet; they fail and back off for a
  minute (measured, ARCHITECTURE.md §8).
  On every later registration (kubelet restart) the desired state is handed over again, because the
  kubelet wipes node-local slices when it restarts;
* :meth:`Helper.stop` is idempotent and removes only this instance's sockets; the registration socket
  goes first so the kubelet stops routing to an instance that is about to go away.
"""

from __future__ import annotations

__all__ = ["Helper", "PluginOptions", "SlicePublisher", "start", "start_pending"]

import logging
import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Protocol

import attrs

from nvdra.core import errors
from nvdra.core.closing import Closing
from nvdra.kubeletplugin import _grpc
from nvdra.kubeletplugin.health import HealthReporter, HealthServicer
from nvdra.kubeletplugin.registration import HEALTH_TOKEN, RegistrationServicer, RegistrationStatus
from nvdra.kubeletplugin.serialize import SERIALIZE_LOCK_NAME, RequestSerializer
from nvdra.kubeletplugin.service import DraService, StartGate, add_dra_servicers
from nvdra.kubeletplugin.sockets import SocketPaths, UnixSocketServer, socket_paths
from nvdra.kubeletplugin.types import DraDriver, DriverResources, KubeApi

_log = logging.getLogger(__name__)


class SlicePublisher(Protocol):
    """What the helper needs from a ResourceSlice publisher (e.g. ``ResourceSlicePublisher``)."""

    def start(self) -> None:
        """Begin reconciling (called once, after the kubelet registered the plugin)."""
        ...

    def update(self, resources: DriverResources) -> None:
        """Replace the desired state; must not block on the API server."""
        ...

    def stop(self, timeout: float | None = None) -> None:
        """Stop reconciling, waiting at most ``timeout`` seconds (None: until stopped)."""
        ...


class Helper(Closing):
    """A running plugin: its two servers, its registration state and its slice publishing.

    Built by :func:`start` or :func:`start_pending`; use it as a context manager or call :meth:`stop`.
    """

    def __init__(
        self,
        *,
        driver_name: str,
        node_name: str,
        paths: SocketPaths,
        make_service: Callable[[DraDriver, KubeApi], DraService],
        health: HealthReporter,
    ) -> None:
        self.driver: DraDriver | None = None
        """The driver, once :meth:`ready` handed it over."""
        self.driver_name = driver_name
        self.node_name = node_name
        self.paths = paths
        self._make_service = make_service
        self._gate = StartGate()
        self._service: DraService | None = None
        self._publisher: SlicePublisher | None = None
        self._health = health
        self._lock = threading.Lock()
        self._desired: DriverResources | None = None
        self._registered = False
        self._publisher_started = False
        self._stopped = False
        self._dra_server: UnixSocketServer | None = None
        self._reg_server: UnixSocketServer | None = None
        self._registration: RegistrationServicer | None = None

    @property
    def dra_socket(self) -> Path:
        """Path of the DRA service socket (``PluginInfo.endpoint``)."""
        return self.paths.dra

    @property
    def registration_socket(self) -> Path:
        """Path of the registration socket in the kubelet's registry directory."""
        return self.paths.registration

    @property
    def health(self) -> HealthReporter:
        """The source of the ``DRAResourceHealth`` stream (a driver with health checks reports into it)."""
        return self._health

    def _serve(self, versions: Sequence[str], workers: int) -> None:
        dra = UnixSocketServer(self.paths.dra, max_workers=workers, name="dra")
        add_dra_servicers(dra.server, self._gate, versions)
        tokens = [_grpc.DRA_APIS[v].token for v in versions]
        HealthServicer(self._health).add_to_server(dra.server)
        tokens.append(HEALTH_TOKEN)
        self._dra_server = dra
        dra.start()
        self._registration = RegistrationServicer(
            driver_name=self.driver_name,
            endpoint=str(self.paths.dra),
            supported_versions=tokens,
            on_registered=self._on_registered,
        )
        reg = UnixSocketServer(self.paths.registration, max_workers=2, name="registration")
        self._registration.add_to_server(reg.server)
        self._reg_server = reg
        reg.start()

    def registration_status(self) -> RegistrationStatus | None:
        """The kubelet's latest NotifyRegistrationStatus, or None before it sent one."""
        return self._registration.status() if self._registration else None

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Block until the kubelet registered the plugin; returns False on timeout."""
        return self._registration is not None and self._registration.registered.wait(timeout)

    def ready(self, driver: DraDriver, kube: KubeApi, *, publisher: SlicePublisher | None = None) -> None:
        """Hand the built driver over: waiting and later DRA calls go to it (claims fetched with
        ``kube``); ``publisher`` publishes :meth:`publish_resources` once the kubelet registered us.

        Raises:
            PluginNotReady: the helper is stopping.
        """
        service = self._make_service(driver, kube)
        with self._lock:
            if not self._stopped:
                self.driver, self._publisher, self._service = driver, publisher, service
        if self._service is not service:
            service.close()
        self._gate.open(service)  # raises when stopping: nothing is let through then
        _log.info("DRA plugin %s: driver ready", self.driver_name)

    def fail_start(self, error: BaseException | str) -> None:
        """Start-up failed: DRA calls waiting for the driver (and any later one) fail with ``error``."""
        self._gate.fail(f"the plugin's start-up failed: {error}")

    def publish_resources(self, resources: DriverResources) -> None:
        """Set the desired ResourceSlices; published once (and whenever) the kubelet registered us.

        Raises:
            ConfigError: no publisher was given to :func:`start` or :meth:`ready`.
        """
        if self._publisher is None:
            raise errors.ConfigError("publisher", None, "a SlicePublisher passed to start() or ready()")
        with self._lock:
            self._desired = resources
            self._publish_locked()

    def _on_registered(self, status: RegistrationStatus) -> None:
        with self._lock:
            self._registered = True
            self._publish_locked()

    def _publish_locked(self) -> None:
        """Start the publisher (once) and hand it the desired state, when registered and given one."""
        publisher = self._publisher
        if self._stopped or publisher is None or not self._registered or self._desired is None:
            return
        try:
            if not self._publisher_started:
                publisher.start()
                self._publisher_started = True
            publisher.update(self._desired)
        except Exception as exc:
            _log.exception("starting ResourceSlice publishing failed")
            if self.driver is not None:
                self.driver.handle_error(exc, "start ResourceSlice publishing")

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop everything (idempotent): registration socket, DRA socket, publisher, threads."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            publisher, started = self._publisher, self._publisher_started
        self._gate.fail("the plugin is stopping")
        self._health.close()
        for server in (self._reg_server, self._dra_server):
            if server is not None:
                server.stop(grace)
        if publisher is not None and started:
            # Bounded: a publisher inside a slow API call is a daemon thread the process may leave behind.
            publisher.stop(timeout=5.0)
        if self._service is not None:
            self._service.close()
        _log.info("DRA plugin %s stopped", self.driver_name)

    def close(self) -> None:
        """Stop with the default grace (what a ``with`` block does on leaving)."""
        self.stop()


@attrs.frozen(kw_only=True)
class PluginOptions:
    """Where and how a DRA plugin serves the kubelet: what :func:`start` and :func:`start_pending` take.

    Attributes:
        driver_name: DRA driver name (``gpu.nvidia.com``).
        node_name: this node.
        plugin_data_dir: the driver's own directory (created 0750 if missing); holds ``dra.sock``.
        registrar_dir: the kubelet's plugin registry directory (created 0750 if missing).
        rolling_update_uid: this pod's UID to run old and new pod side by side (kubelet ≥ 1.33):
            per-pod socket names and a cross-process ``flock`` on ``serialize.lock``.
        serialize: False disables all serialization of prepare/unprepare.
        flock_dir: directory of ``serialize.lock`` (default ``plugin_data_dir``); setting it turns the
            cross-process lock on even without rolling updates.
        health: device-health source for the ``v1alpha1.DRAResourceHealth`` stream; None serves the
            stream with no device reports (it is served either way, see the module docstring).
        api_versions: DRA versions to serve and announce, most preferred first.
        grpc_workers: handler threads of the DRA server (each health stream holds one).
        fetch_workers: threads for concurrent claim GETs within one call.
    """

    driver_name: str
    node_name: str
    plugin_data_dir: Path | str
    registrar_dir: Path | str
    rolling_update_uid: str | None = None
    serialize: bool = True
    flock_dir: Path | str | None = None
    health: HealthReporter | None = None
    api_versions: Sequence[str] = ("v1", "v1beta1")
    grpc_workers: int = 8
    fetch_workers: int = 8


def start(
    driver: DraDriver, kube: KubeApi, options: PluginOptions, *, publisher: SlicePublisher | None = None
) -> Helper:
    """Start serving a DRA driver to the kubelet: :func:`start_pending`, then :meth:`Helper.ready`.

    Args:
        driver: the driver implementation.
        kube: API adapter; the helper uses it to GET claims on the prepare path.
        options: names, directories and serving choices (:class:`PluginOptions`).
        publisher: ResourceSlice publisher, started after the kubelet registered the plugin.

    Returns:
        The running :class:`Helper`.

    Raises:
        ConfigError: bad version names or socket paths that cannot fit.
        HostError: a socket cannot be created.
    """
    helper = start_pending(options)
    helper.ready(driver, kube, publisher=publisher)
    return helper


def start_pending(options: PluginOptions) -> Helper:
    """Serve the DRA and registration sockets before the driver exists.

    The kubelet can register the plugin at once; DRA calls wait until :meth:`Helper.ready` hands the
    driver over, and fail with ``UNAVAILABLE`` after :meth:`Helper.fail_start` or :meth:`Helper.stop`.

    Raises:
        ConfigError: bad version names or socket paths that cannot fit.
        HostError: a socket cannot be created.
    """
    o = options
    data_dir, reg_dir = Path(o.plugin_data_dir), Path(o.registrar_dir)
    os.makedirs(data_dir, mode=0o750, exist_ok=True)
    # The kubelet creates its registry dir, but a plugin started first (or in a test) must not fail.
    os.makedirs(reg_dir, mode=0o750, exist_ok=True)
    paths = socket_paths(
        driver_name=o.driver_name,
        plugin_data_dir=data_dir,
        registrar_dir=reg_dir,
        rolling_update_uid=o.rolling_update_uid,
    )
    lock_dir = Path(o.flock_dir) if o.flock_dir is not None else (data_dir if o.rolling_update_uid else None)
    helper = Helper(
        driver_name=o.driver_name,
        node_name=o.node_name,
        paths=paths,
        make_service=partial(
            _make_service,
            serialize=o.serialize,
            lock_file=lock_dir / SERIALIZE_LOCK_NAME if lock_dir is not None else None,
            fetch_workers=o.fetch_workers,
        ),
        health=o.health if o.health is not None else HealthReporter(),
    )
    try:
        helper._serve(o.api_versions, o.grpc_workers)
    except BaseException:
        helper.stop(grace=0)
        raise
    _log.info("DRA plugin %s on node %s: %s, %s", o.driver_name, o.node_name, paths.dra, paths.registration)
    return helper


def _make_service(
    driver: DraDriver, kube: KubeApi, *, serialize: bool, lock_file: Path | None, fetch_workers: int
) -> DraService:
    serializer = RequestSerializer(enabled=serialize, lock_file=lock_file)
    return DraService(driver, kube, serializer=serializer, fetch_workers=fetch_workers)
