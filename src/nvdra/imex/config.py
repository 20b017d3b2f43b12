"""nvidia-imex configuration: the daemon config file, the nodes file and the ``/etc/hosts`` block (pure).

The config format is nvidia-imex's: one ``KEY=VALUE`` per line, ``#`` comments, blank lines ignored.
The fixed values are upstream's template (nvidia-hardware §5, upstream-driver §6.5). Two peer modes:

- DNS-name mode (``IMEXDaemonsWithDNSNames``, the default): the nodes file is static — the names
  ``compute-domain-daemon-0000`` … ``-<max-1>`` — and a daemon maps the names of its live peers to their
  pod IPs in a block of ``/etc/hosts`` it owns (between two marker lines); nvidia-imex re-resolves on
  ``SIGUSR1``;
- IP mode: the nodes file lists the peers' IPs, one per line, identical on every node of the domain.

Invariants: rendering is deterministic (equal inputs, equal bytes); :func:`parse_config` accepts what
:func:`render_config` writes; :func:`update_hosts` touches only its own block and keeps every other line.
"""

from __future__ import annotations

__all__ = [
    "DNS_NAME_FORMAT",
    "HOSTS_BEGIN",
    "HOSTS_END",
    "NODES_FILE",
    "TEMPLATE_VALUES",
    "dns_name",
    "parse_config",
    "parse_hosts_block",
    "parse_nodes_file",
    "render_config",
    "render_nodes_file",
    "update_hosts",
]

import ipaddress
from collections.abc import Mapping, Sequence

from nvdra.core.errors import ConfigError

NODES_FILE = "/imexd/nodes.cfg"
DNS_NAME_FORMAT = "compute-domain-daemon-{:04d}"
HOSTS_BEGIN = "# BEGIN nvdra compute-domain-daemon peers"
HOSTS_END = "# END nvdra compute-domain-daemon peers"

TEMPLATE_VALUES: Mapping[str, str] = {
    "LOG_LEVEL": "4",
    "LOG_FILE_NAME": "",
    "DAEMONIZE": "0",
    "BIND_INTERFACE_IP": "",
    "SERVER_PORT": "50000",
    "IMEX_CMD_ENABLED": "1",
    "IMEX_CMD_PORT": "50005",
    "IMEX_WAIT_FOR_QUORUM": "RECOVERY",
    "IMEX_ENABLE_AUTH_ENCRYPTION": "0",
    "IMEX_NODE_DISCONNECTED_GRACE_TIME": "-1",
}
"""Upstream's fixed template values (``LOG_FILE_NAME`` empty = stderr; ``DAEMONIZE=0`` to supervise)."""


def dns_name(index: int) -> str:
    """The static peer name of clique index ``index`` (``compute-domain-daemon-0007``)."""
    if index < 0:
        raise ConfigError("index", index, "an integer >= 0", reason="invalid daemon index:")
    return DNS_NAME_FORMAT.format(index)


def _check_ip(value: str, field: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(field, value, "an IPv4 or IPv6 address", reason="invalid IP address:") from None


def render_config(
    *, bind_ip: str, nodes_file: str = NODES_FILE, extra: Mapping[str, str] | None = None
) -> str:
    """The daemon's ``imexd.cfg``: the template values, the command-service IP and the nodes file path.

    Raises:
        ConfigError: ``bind_ip`` is not an IP address, or ``extra`` has a key with ``=`` or a newline.
    """
    values = dict(TEMPLATE_VALUES)
    values["IMEX_CMD_BIND_INTERFACE_IP"] = _check_ip(bind_ip, "IMEX_CMD_BIND_INTERFACE_IP")
    values["IMEX_NODE_CONFIG_FILE"] = nodes_file
    for key, value in (extra or {}).items():
        if not key or any(c in key for c in "=\n#") or "\n" in value:
            raise ConfigError(f"config.{key}", value, "KEY=VALUE without '=', '#' or newlines in the key")
        values[key] = value
    lines = ["# nvidia-imex configuration written by nvdra-cd-daemon"]
    lines += [f"{key}={values[key]}" for key in sorted(values)]
    return "\n".join(lines) + "\n"


def parse_config(text: str) -> dict[str, str]:
    """Read a config in nvidia-imex's format.

    Raises:
        ConfigError: a non-comment line has no ``=`` (names the line number).
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"line {number}", raw, "KEY=VALUE, a # comment, or a blank line")
        out[key.strip()] = value.strip()
    return out


def render_nodes_file(peers: Sequence[str]) -> str:
    """The nodes file: one peer (a DNS name or an IP) per line, in the given order."""
    for peer in peers:
        if not peer or any(c.isspace() for c in peer):
            raise ConfigError("nodes", peer, "a host name or IP without whitespace")
    return "".join(f"{p}\n" for p in peers)


def parse_nodes_file(text: str) -> list[str]:
    """The peers of a nodes file (blank lines and ``#`` comments skipped)."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def update_hosts(hosts: str, names: Mapping[str, str]) -> str:
    """``hosts`` with the daemon-owned block replaced by ``<ip>\\t<name>`` lines (sorted by name).

    Lines outside the block are kept byte for byte; an empty ``names`` removes the block.

    Raises:
        ConfigError: an IP is invalid.
    """
    kept: list[str] = []
    inside = False
    for line in hosts.splitlines():
        if line == HOSTS_BEGIN:
            inside = True
        elif line == HOSTS_END:
            inside = False
        elif not inside:
            kept.append(line)
    block = [f"{_check_ip(ip, f'hosts[{name}]')}\t{name}" for name, ip in sorted(names.items())]
    if block:
        kept += [HOSTS_BEGIN, *block, HOSTS_END]
    return "\n".join(kept) + "\n" if kept else ""


def parse_hosts_block(hosts: str) -> dict[str, str]:
    """Name → IP of the daemon-owned block of ``hosts`` (empty when there is none)."""
    out: dict[str, str] = {}
    inside = False
    for line in hosts.splitlines():
        if line in (HOSTS_BEGIN, HOSTS_END):
            inside = line == HOSTS_BEGIN
        elif inside and line.strip():
            ip, _, name = line.partition("\t")
            out[name.strip()] = ip.strip()
    return out
