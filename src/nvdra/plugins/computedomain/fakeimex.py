"""A fake ``nvidia-imex`` / ``nvidia-imex-ctl`` pair for tests, demos and benchmarks (in-process).

It behaves like the real pair at the interfaces the daemon uses:

- ``nvidia-imex -c <cfg>`` reads the real config format (:func:`nvdra.imex.parse_config`), reads the nodes
  file it names, resolves each entry (an IP, or a name looked up in the container's hosts file), and
  "listens" on ``IMEX_CMD_BIND_INTERFACE_IP:SERVER_PORT`` of a shared :class:`ImexFabric`. If its own IP
  is not among the resolved peers it exits with status 1 ("no matching interface", upstream issue #289).
  Names are resolved at start and again on ``SIGUSR1`` only — like the real daemon, which re-resolves
  when signalled; ``SIGTERM`` stops it (status 0); :meth:`FakeImexProcess.kill` simulates a crash.
- ``nvidia-imex-ctl -c <cfg> -q`` finds the daemon on the config's command address and prints
  ``READY`` when every resolved peer is up on the fabric (all its same-clique peers), else
  ``NOT_READY``; with no daemon there it fails (status 1, nothing on stdout).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from nvdra.core.errors import ConfigError, HostError
from nvdra.imex.config import parse_config, parse_hosts_block, parse_nodes_file

__all__ = ["FakeImex", "FakeImexProcess", "FakeImexRunner", "ImexFabric"]


class ImexFabric:
    """The simulated network between fake daemons: which ``(ip, port)`` addresses have a live daemon."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listening: dict[tuple[str, str], FakeImex] = {}

    def listen(self, address: tuple[str, str], daemon: FakeImex) -> None:
        """Bind ``address``; a second daemon on it is an error (address in use)."""
        with self._lock:
            if address in self._listening:
                raise HostError(f"nvidia-imex: cannot bind {address[0]}:{address[1]}: address already in use")
            self._listening[address] = daemon

    def close(self, address: tuple[str, str], daemon: FakeImex) -> None:
        """Unbind ``address`` if ``daemon`` holds it."""
        with self._lock:
            if self._listening.get(address) is daemon:
                del self._listening[address]

    def at(self, address: tuple[str, str]) -> FakeImex | None:
        """The daemon listening on ``address``."""
        with self._lock:
            return self._listening.get(address)


class FakeImex:
    """One running fake ``nvidia-imex``."""

    def __init__(self, config_path: Path, hosts_path: Path, fabric: ImexFabric) -> None:
        self.config = parse_config(config_path.read_text())
        self.hosts_path = hosts_path
        self.fabric = fabric
        self.ip = self.config.get("IMEX_CMD_BIND_INTERFACE_IP", "")
        self.port = self.config.get("SERVER_PORT", "50000")
        self.cmd_port = self.config.get("IMEX_CMD_PORT", "50005")
        self.nodes_file = Path(self.config.get("IMEX_NODE_CONFIG_FILE", "/etc/nvidia-imex/nodes_config.cfg"))
        self.peers: tuple[str, ...] = ()
        self.resolves = 0
        self.resolve()
        if self.ip not in self.peers:
            raise HostError(
                f"nvidia-imex: no matching interface for {self.ip or '<none>'} in {self.nodes_file}"
            )
        fabric.listen((self.ip, self.port), self)
        fabric.listen((self.ip, self.cmd_port), self)

    def resolve(self) -> None:
        """Re-read the nodes file and resolve its names through the hosts file (start and SIGUSR1)."""
        try:
            hosts = parse_hosts_block(self.hosts_path.read_text()) if self.hosts_path.exists() else {}
            entries = parse_nodes_file(self.nodes_file.read_text())
        except OSError as exc:
            raise HostError(f"nvidia-imex: cannot read {exc.filename}: {exc.strerror}") from exc
        resolved = [hosts.get(e, e if _is_ip(e) else "") for e in entries]
        self.peers = tuple(sorted({ip for ip in resolved if ip}))
        self.resolves += 1

    def ready(self) -> bool:
        """Connected to every resolved peer: each is listening on the fabric."""
        return all(self.fabric.at((ip, self.port)) is not None for ip in self.peers)

    def stop(self) -> None:
        """Leave the fabric."""
        self.fabric.close((self.ip, self.port), self)
        self.fabric.close((self.ip, self.cmd_port), self)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class FakeImexProcess:
    """A process handle over a :class:`FakeImex` (the daemon's ``ProcessHandle``)."""

    _pids = iter(range(4000, 1 << 30))

    def __init__(self, imex: FakeImex | None, exit_code: int | None = None) -> None:
        self.imex = imex
        self.pid = next(self._pids)
        self._code = exit_code
        self.signals: list[int] = []

    def poll(self) -> int | None:
        """The exit status, or None while running."""
        return self._code

    def send_signal(self, sig: int) -> None:
        """SIGUSR1 re-resolves the peers; SIGTERM/SIGINT stop (status 0); SIGKILL kills (-9)."""
        self.signals.append(sig)
        if self._code is not None or self.imex is None:
            return
        if sig == signal.SIGUSR1:
            self.imex.resolve()
        elif sig in (signal.SIGTERM, signal.SIGINT):
            self._exit(0)
        elif sig == signal.SIGKILL:
            self._exit(-9)

    def kill(self) -> None:
        """Crash it (fault injection)."""
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (the fake exits synchronously, so this never blocks)."""
        if self._code is None:
            raise HostError("nvidia-imex is still running")
        return self._code

    def _exit(self, code: int) -> None:
        assert self.imex is not None
        self.imex.stop()
        self._code = code


class FakeImexRunner:
    """A ``ProcessRunner`` that runs the fake pair for one daemon container (its own hosts file)."""

    def __init__(self, fabric: ImexFabric, hosts_path: Path) -> None:
        self.fabric = fabric
        self.hosts_path = hosts_path
        self.started: list[FakeImexProcess] = []

    @staticmethod
    def _config(argv: Sequence[str]) -> Path:
        args = list(argv)
        if "-c" not in args or args.index("-c") + 1 >= len(args):
            raise ConfigError("argv", " ".join(args), "<binary> -c <config file> ...")
        return Path(args[args.index("-c") + 1])

    def start(self, argv: Sequence[str]) -> FakeImexProcess:
        """``nvidia-imex -c <cfg>``: a running fake, or an exited one (status 1) if it cannot start."""
        try:
            proc = FakeImexProcess(FakeImex(self._config(argv), self.hosts_path, self.fabric))
        except HostError:
            proc = FakeImexProcess(None, exit_code=1)
        self.started.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str]:
        """``nvidia-imex-ctl -c <cfg> -q``: ``(0, "READY\\n")``, ``(0, "NOT_READY\\n")`` or ``(1, "")``."""
        config = parse_config(self._config(argv).read_text())
        address = (config.get("IMEX_CMD_BIND_INTERFACE_IP", ""), config.get("IMEX_CMD_PORT", "50005"))
        daemon = self.fabric.at(address)
        if daemon is None:
            return 1, ""
        return 0, "READY\n" if daemon.ready() else "NOT_READY\n"
