"""A kubelet stand-in for tests and benchmarks of DRA drivers: registration, prepare, health.

:class:`KubeletClient` does what the kubelet's plugin manager does with a DRA plugin: find
registration sockets in the registry directory (names starting with ``.`` are ignored), call
``GetInfo``, validate the answer (type ``DRAPlugin``, a known DRA service in ``supported_versions``;
the *first* known entry wins, as in kubelets ≥ 1.34), report the verdict with
``NotifyRegistrationStatus``, then call the DRA service over the chosen version.

One channel per socket path, created on first use and reused: a benchmark then measures the
plugin, not channel setup. gRPC failures raise :class:`PluginRpcError`.
"""

from __future__ import annotations

__all__ = [
    "HealthWatch",
    "KubeletClient",
    "PluginInfo",
    "PluginRpcError",
    "RegisteredPlugin",
    "RegistrationRejected",
]

import contextlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc

from nvdra.core import errors
from nvdra.core.closing import Closing
from nvdra.kubeletplugin import _grpc
from nvdra.kubeletplugin._grpc import PluginRpcError
from nvdra.kubeletplugin._proto import (
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from nvdra.kubeletplugin.health import DeviceHealth, health_from_pb
from nvdra.kubeletplugin.registration import DRA_PLUGIN_TYPE, HEALTH_TOKEN
from nvdra.kubeletplugin.types import ClaimRef, PrepareResult


class RegistrationRejected(errors.UserError):
    """The plugin's GetInfo answer is not acceptable to a kubelet (the message says why)."""


@attrs.frozen(kw_only=True)
class PluginInfo:
    """A plugin's GetInfo answer."""

    type: str
    name: str
    endpoint: str
    supported_versions: tuple[str, ...]


def _status_code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    # Raised RpcErrors are also grpc.Call objects at run time; the stubs declare the two classes
    # incompatible, so read the status duck-typed.
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _rpc_error(what: str, exc: grpc.RpcError) -> PluginRpcError:
    code = _status_code(exc)
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    return PluginRpcError(f"{what}: {name}: {text}", code=name)


class KubeletClient(Closing):
    """Registers DRA plugins found in ``registrar_dir`` and talks to them like a kubelet.

    Args:
        registrar_dir: the plugin registry directory the plugins put their ``*-reg.sock`` in.
        timeout: per-call deadline in seconds (the kubelet uses 45 s).
    """

    def __init__(self, registrar_dir: Path | str, *, timeout: float = 45.0) -> None:
        self.registrar_dir = Path(registrar_dir)
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def channel(self, socket_path: Path | str) -> grpc.Channel:
        """The (shared) channel to a unix socket."""
        key = str(socket_path)
        with self._lock:
            channel = self._channels.get(key)
            if channel is None:
                channel = self._channels[key] = grpc.insecure_channel(f"unix:{key}")
            return channel

    def discover(self) -> list[Path]:
        """Registration sockets in the registry directory, sorted (dot-files ignored)."""
        return sorted(
            p for p in self.registrar_dir.glob("*-reg.sock") if not p.name.startswith(".") and p.is_socket()
        )

    def get_info(self, socket_path: Path | str) -> PluginInfo:
        """Call GetInfo on a registration socket.

        Raises:
            PluginRpcError: the call failed.
        """
        stub = pluginregistration_pb2_grpc.RegistrationStub(self.channel(socket_path))
        try:
            info = stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(f"GetInfo on {socket_path}", exc) from exc
        return PluginInfo(
            type=str(info.type),
            name=str(info.name),
            endpoint=str(info.endpoint),
            supported_versions=tuple(str(v) for v in info.supported_versions),
        )

    def notify(self, socket_path: Path | str, *, registered: bool, error: str = "") -> None:
        """Call NotifyRegistrationStatus.

        Raises:
            PluginRpcError: the call failed (a plugin fails it when ``registered`` is False).
        """
        stub = pluginregistration_pb2_grpc.RegistrationStub(self.channel(socket_path))
        status = pluginregistration_pb2.RegistrationStatus(plugin_registered=registered, error=error)
        try:
            stub.NotifyRegistrationStatus(status, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(f"NotifyRegistrationStatus on {socket_path}", exc) from exc

    def register(self, socket_path: Path | str, *, api: str | None = None) -> RegisteredPlugin:
        """Register a plugin as the kubelet does and return a handle for DRA calls.

        Args:
            socket_path: its registration socket.
            api: force ``"v1"`` or ``"v1beta1"`` (must be advertised); default: the first known one.

        Raises:
            RegistrationRejected: wrong type or no acceptable DRA service (the plugin is told so).
            PluginRpcError: a call failed.
        """
        info = self.get_info(socket_path)
        try:
            chosen = _choose_api(info, api)
        except RegistrationRejected as exc:
            # Plugins answer a negative notification with an error (the Go helper does): expected.
            with contextlib.suppress(PluginRpcError):
                self.notify(socket_path, registered=False, error=str(exc))
            raise
        self.notify(socket_path, registered=True)
        return RegisteredPlugin(self, info, chosen)

    def register_all(self) -> list[RegisteredPlugin]:
        """Register every discovered plugin."""
        return [self.register(p) for p in self.discover()]

    def close(self) -> None:
        """Close every channel (idempotent)."""
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


def _choose_api(info: PluginInfo, forced: str | None) -> _grpc.DraApi:
    if info.type != DRA_PLUGIN_TYPE:
        raise RegistrationRejected(f"plugin type {info.type!r} is not {DRA_PLUGIN_TYPE!r}")
    known = [a for a in (_grpc.api_for_token(t) for t in info.supported_versions) if a is not None]
    if forced is not None:
        known = [a for a in known if a.name == forced]
    if not known:
        wanted = forced or ", ".join(a.token for a in _grpc.DRA_APIS.values())
        raise RegistrationRejected(
            f"plugin {info.name} advertises {list(info.supported_versions)}, none of which is {wanted}"
        )
    return known[0]


class RegisteredPlugin:
    """A registered DRA plugin, spoken to over its chosen DRA API version."""

    def __init__(self, client: KubeletClient, info: PluginInfo, api: _grpc.DraApi) -> None:
        self.client = client
        self.info = info
        self.api_version = api.name
        self._api = api
        self._stub = api.stub(client.channel(info.endpoint))

    @property
    def offers_health(self) -> bool:
        """Whether the plugin announced the v1alpha1 health service."""
        return HEALTH_TOKEN in self.info.supported_versions

    def prepare(self, claims: Iterable[ClaimRef]) -> dict[str, PrepareResult]:
        """NodePrepareResources; results keyed by claim UID.

        Raises:
            PluginRpcError: the call failed as a whole.
        """
        request = _grpc.claims_to_pb(self._api, claims)
        response = self._call("NodePrepareResources", request)
        return _grpc.prepare_response_from_pb(self._api, response)

    def unprepare(self, claims: Iterable[ClaimRef]) -> dict[str, str]:
        """NodeUnprepareResources; error messages keyed by claim UID ("" = success).

        Raises:
            PluginRpcError: the call failed as a whole.
        """
        request = _grpc.claims_to_pb(self._api, claims, unprepare=True)
        return _grpc.unprepare_response_from_pb(self._call("NodeUnprepareResources", request))

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.client.timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(f"{method} on {self.info.endpoint}", exc) from exc

    def watch_health(self) -> HealthWatch:
        """Open the v1alpha1 NodeWatchResources stream (iterate it; ``cancel()`` to end it)."""
        stub = dra_health_v1alpha1_pb2_grpc.DRAResourceHealthStub(self.client.channel(self.info.endpoint))
        return HealthWatch(stub.NodeWatchResources(dra_health_v1alpha1_pb2.NodeWatchResourcesRequest()))


class HealthWatch(Closing):
    """An open health stream: iterating yields each complete device-health list."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[list[DeviceHealth]]:
        try:
            for response in self._call:
                yield health_from_pb(response)
        except grpc.RpcError as exc:
            if _status_code(exc) == grpc.StatusCode.CANCELLED:
                return
            raise _rpc_error("NodeWatchResources", exc) from exc

    def cancel(self) -> None:
        """End the stream."""
        self._call.cancel()

    close = cancel
