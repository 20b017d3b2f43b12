"""Who runs ``nvidia-imex``: the driver (a DaemonSet per ComputeDomain) or the node (upstream's
``HostManagedIMEXDaemon`` gate, ``--imex-mode`` / ``IMEX_MODE``, chart
``resources.computeDomains.imex.mode``).

=================  ==============================================================================
``driverManaged``  the default: the controller runs an IMEX daemon per ComputeDomain and node
``hostManaged``    the node runs ``nvidia-imex`` as a host service; the controller makes only the
                   channel claim template, the CD plugin publishes no daemon device and, on a node
                   in an NVLink clique, checks ``nvidia-imex-ctl -q --u=<hostSocketPath>`` says
                   READY before it hands out the channel. Needs the HostManagedIMEXDaemon gate.
=================  ==============================================================================

``--imex-isolation`` (``IMEX_ISOLATION``): ``domain`` (every workload of a domain shares channel 0) is
the only one implemented; ``channel`` is refused, as upstream refuses it. Pure.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_HOST_SOCKET_PATH",
    "DRIVER_MANAGED",
    "HOST_MANAGED",
    "ImexDeployment",
    "host_imex_ready",
]

import attrs

from nvdra.core.errors import ConfigError

DRIVER_MANAGED = "driverManaged"
HOST_MANAGED = "hostManaged"
DEFAULT_HOST_SOCKET_PATH = "/etc/nvidia-imex/imex_ctrl.sock"
"""Upstream's default, under the driver root: the host daemon's ``IMEX_CMD_UNIX_DOMAIN_PATH``."""


@attrs.frozen(kw_only=True)
class ImexDeployment:
    """``--imex-mode``, ``--imex-isolation`` and ``--imex-host-socket-path``, validated by :meth:`check`."""

    mode: str = DRIVER_MANAGED
    isolation: str = "domain"
    host_socket_path: str = DEFAULT_HOST_SOCKET_PATH

    @property
    def host_managed(self) -> bool:
        return self.mode == HOST_MANAGED

    def check(self, *, gate_enabled: bool) -> ImexDeployment:
        """This value, if upstream accepts it with the HostManagedIMEXDaemon gate as given.

        Raises:
            ConfigError: an unknown mode or isolation, ``channel`` isolation, hostManaged without the
                gate, or a socket path that is not absolute.
        """
        if self.mode not in (DRIVER_MANAGED, HOST_MANAGED):
            raise ConfigError("--imex-mode (IMEX_MODE)", self.mode, f"{DRIVER_MANAGED} or {HOST_MANAGED}")
        if self.host_managed and not gate_enabled:
            raise ConfigError(
                "--imex-mode (IMEX_MODE)",
                self.mode,
                f"{DRIVER_MANAGED}, or {HOST_MANAGED} with --feature-gates HostManagedIMEXDaemon=true",
                reason="needs the HostManagedIMEXDaemon feature gate:",
            )
        if self.isolation == "channel":
            raise ConfigError(
                "--imex-isolation (IMEX_ISOLATION)",
                self.isolation,
                "domain (per-workload IMEX channels are not implemented, as upstream)",
                reason="not supported yet:",
            )
        if self.isolation not in ("", "domain"):
            raise ConfigError("--imex-isolation (IMEX_ISOLATION)", self.isolation, "domain or channel")
        if not self.host_socket_path.startswith("/"):
            raise ConfigError(
                "--imex-host-socket-path (IMEX_HOST_SOCKET_PATH)",
                self.host_socket_path,
                "an absolute path under the driver root, e.g. " + DEFAULT_HOST_SOCKET_PATH,
            )
        return self


def host_imex_ready(output: str) -> bool:
    """Whether ``nvidia-imex-ctl -q`` output says READY (a line of its own: ``NOT_READY`` is not ready;
    upstream's substring test would take it for ready)."""
    return any(line.strip() == "READY" for line in output.splitlines())
