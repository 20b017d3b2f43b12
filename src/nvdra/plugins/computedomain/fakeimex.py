"""A fake ``nvidia-imex`` / ``nvidia-imex-ctl`` pair: in-process (fast tests, benchmarks) and as programs.

The programs (:func:`imex_main`, :func:`imex_ctl_main`) are what a simulated driver root's
``usr/bin/nvidia-imex`` and ``usr/bin/nvidia-imex-ctl`` run (``nvdra.nvml`` writes them as Python
scripts), so the daemon starts them exactly as it starts the real pair: found in the driver root where
the CDI spec mounts them, as OS processes, speaking over TCP:

- ``nvidia-imex -c <cfg>`` reads the config (``DAEMONIZE=0`` only: a supervised daemon must not fork
  away), the nodes file it names, resolves each entry (an IP, or a name in the container's
  ``/etc/hosts``, i.e. ``$NVDRA_DAEMON_ROOT/etc/hosts``), needs the ``fabric-imex-mgmt`` capability
  node in the container (its minor from the driver's ``proc`` capability file), its
  ``IMEX_CMD_BIND_INTERFACE_IP`` among
  the resolved peers (else status 1, "no matching interface", upstream issue #289), listens on
  ``<ip>:SERVER_PORT`` for peers and, with ``IMEX_CMD_ENABLED=1``, on ``<ip>:IMEX_CMD_PORT`` for
  ``nvidia-imex-ctl``; it connects to every peer's ``SERVER_PORT`` every 200 ms. ``SIGUSR1`` re-reads the
  nodes and hosts files; ``SIGTERM``/``SIGINT`` stop it (status 0). A port in use is status 1.
- ``nvidia-imex-ctl -c <cfg> -q`` asks the daemon on the config's command address and prints ``READY``
  when every resolved peer answered the last round, else ``NOT_READY``; with no daemon there it prints
  an error on stderr, nothing on stdout, and exits 1.

The in-process pair behaves the same at the interfaces the daemon uses:

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

__all__ = ["FakeImex", "FakeImexProcess", "FakeImexRunner", "ImexFabric", "imex_ctl_main", "imex_main"]

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from nvdra.core.errors import ConfigError, HostError
from nvdra.imex.config import parse_config, parse_hosts_block, parse_nodes_file


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


# --- the programs ------------------------------------------------------------------------------------

_PEER_PERIOD_S = 0.2
_HELLO = b"IMEX-HELLO\n"
_QUERY = b"QUERY\n"


def _err(prog: str, text: str) -> None:
    print(f"{prog}: {text}", file=sys.stderr, flush=True)


def _config_arg(prog: str, argv: Sequence[str], actions: set[str]) -> tuple[Path, list[str]] | None:
    """``-c <file>`` and the action flags; None (after a usage line) for anything else."""
    args, config, flags = list(argv), None, []
    while args:
        arg = args.pop(0)
        if arg == "-c" and args:
            config = Path(args.pop(0))
        elif arg in actions:
            flags.append(arg)
        else:
            _err(prog, f"unrecognised argument {arg!r}; usage: {prog} -c <config file> {' '.join(actions)}")
            return None
    if config is None:
        _err(prog, f"usage: {prog} -c <config file> {' '.join(actions)}")
        return None
    return config, flags


def _read_config(prog: str, path: Path) -> dict[str, str] | None:
    try:
        return parse_config(path.read_text())
    except OSError as exc:
        _err(prog, f"cannot read config {path}: {exc.strerror}")
    except ConfigError as exc:
        _err(prog, f"{path}: {exc}")
    return None


def _hosts_file() -> Path:
    return Path(os.environ.get("NVDRA_DAEMON_ROOT", "/")) / "etc/hosts"


def _resolve(nodes_file: Path) -> tuple[str, ...]:
    """Resolved peer IPs of the nodes file (names through the container's hosts file)."""
    hosts_path = _hosts_file()
    hosts = _all_hosts(hosts_path.read_text()) if hosts_path.exists() else {}
    entries = parse_nodes_file(nodes_file.read_text())
    return tuple(ip for ip in (hosts.get(e, e if _is_ip(e) else "") for e in entries) if ip)


def _all_hosts(text: str) -> dict[str, str]:
    """Name → first IP of every line of a hosts file (getaddrinfo's files lookup)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            out.setdefault(name, fields[0])
    return out


class _ImexProgram:
    """The state of one running fake ``nvidia-imex`` process."""

    def __init__(self, config: dict[str, str]) -> None:
        self.ip = config.get("IMEX_CMD_BIND_INTERFACE_IP", "")
        self.port = int(config.get("SERVER_PORT", "50000"))
        self.cmd_port = int(config.get("IMEX_CMD_PORT", "50005"))
        self.cmd_enabled = config.get("IMEX_CMD_ENABLED", "0") == "1"
        self.nodes_file = Path(config.get("IMEX_NODE_CONFIG_FILE", "/etc/nvidia-imex/nodes_config.cfg"))
        self.peers: tuple[str, ...] = ()
        self.connected: dict[str, bool] = {}
        self.stop = threading.Event()
        self.reresolve = threading.Event()
        self.lock = threading.Lock()

    def ready(self) -> bool:
        with self.lock:
            return bool(self.peers) and all(self.connected.get(ip, False) for ip in self.peers)

    def probe_peers(self) -> None:
        with self.lock:
            peers = self.peers
        state = {ip: ip == self.ip or _hello(ip, self.port) for ip in peers}
        with self.lock:
            self.connected = state


def _hello(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5) as conn:
            conn.sendall(_HELLO)
            return conn.recv(16) == b"OK\n"
    except OSError:
        return False


def _listen(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    sock.listen(64)
    sock.settimeout(0.2)
    return sock


def _serve(sock: socket.socket, prog: _ImexProgram, answer: Callable[[bytes], bytes]) -> None:
    while not prog.stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn:
            conn.settimeout(1.0)
            try:
                conn.sendall(answer(conn.recv(64)))
            except OSError:
                continue


def _management_capability_missing() -> str:
    """Why the IMEX management capability is unusable here, or "" (the real daemon needs it to start).

    The driver names the capability's minor in ``/proc/driver/nvidia/capabilities/fabric-imex-mgmt``:
    read from the driver root this program lives in (``<root>/usr/bin/nvidia-imex``, symlinks resolved),
    which carries the host's ``proc`` on a simulated node. The node ``/dev/nvidia-caps/nvidia-cap<minor>``
    must exist in the container (``$NVDRA_DAEMON_ROOT``): the daemon claim's CDI spec injects it.
    """
    driver_root = Path(os.path.realpath(sys.argv[0])).parents[2]
    cap_file = driver_root / "proc/driver/nvidia/capabilities/fabric-imex-mgmt"
    try:
        fields = dict(line.partition(":")[::2] for line in cap_file.read_text().splitlines())
        minor = int(fields["DeviceFileMinor"].strip())
    except (OSError, KeyError, ValueError):
        return f"the driver has no IMEX management capability ({cap_file} unreadable)"
    node = Path(os.environ.get("NVDRA_DAEMON_ROOT", "/")) / f"dev/nvidia-caps/nvidia-cap{minor}"
    if not node.exists():
        return (
            f"cannot open {node}: No such file or directory (no fabric-imex-mgmt capability in the container)"
        )
    return ""


def _start(prog_name: str, argv: Sequence[str]) -> _ImexProgram | None:
    """Parse the command line and config, resolve the peers; None after an error line."""
    parsed = _config_arg(prog_name, argv, set())
    config = _read_config(prog_name, parsed[0]) if parsed is not None else None
    if config is None:
        return None
    if config.get("DAEMONIZE", "1") != "0":
        _err(prog_name, "this fake runs in the foreground only: set DAEMONIZE=0")
        return None
    missing = _management_capability_missing()
    if missing:
        _err(prog_name, missing)
        return None
    prog = _ImexProgram(config)
    try:
        prog.peers = _resolve(prog.nodes_file)
    except OSError as exc:
        _err(prog_name, f"cannot read {exc.filename}: {exc.strerror}")
        return None
    if prog.ip not in prog.peers:
        _err(prog_name, f"no matching interface for {prog.ip or '<none>'} in {prog.nodes_file}")
        return None
    return prog


def _bind(prog_name: str, prog: _ImexProgram) -> list[tuple[socket.socket, Callable[[bytes], bytes]]] | None:
    """The peer listener and (with the command service on) the command listener; None if one is taken."""

    def command(data: bytes) -> bytes:
        if data != _QUERY:
            return b"UNKNOWN_COMMAND\n"
        return b"READY\n" if prog.ready() else b"NOT_READY\n"

    wanted: list[tuple[int, Callable[[bytes], bytes]]] = [
        (prog.port, lambda data: b"OK\n" if data == _HELLO else b"?\n")
    ]
    if prog.cmd_enabled:
        wanted.append((prog.cmd_port, command))
    bound: list[tuple[socket.socket, Callable[[bytes], bytes]]] = []
    for port, answer in wanted:
        try:
            bound.append((_listen(prog.ip, port), answer))
        except OSError as exc:
            _err(prog_name, f"cannot bind {prog.ip}:{port}: {exc.strerror}")
            for sock, _ in bound:
                sock.close()
            return None
    return bound


def imex_main(argv: Sequence[str] | None = None) -> int:
    """The fake ``nvidia-imex`` program (see the module docstring); its exit status."""
    prog_name = "nvidia-imex"
    prog = _start(prog_name, sys.argv[1:] if argv is None else argv)
    bound = _bind(prog_name, prog) if prog is not None else None
    if prog is None or bound is None:
        return 1
    signal.signal(signal.SIGTERM, lambda *_: prog.stop.set())
    signal.signal(signal.SIGINT, lambda *_: prog.stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: prog.reresolve.set())
    threads = [threading.Thread(target=_serve, args=(s, prog, a), daemon=True) for s, a in bound]
    for t in threads:
        t.start()
    _err(prog_name, f"listening on {prog.ip}:{prog.port}; peers {', '.join(prog.peers)}")
    while not prog.stop.is_set():
        if prog.reresolve.is_set():
            prog.reresolve.clear()
            try:
                peers = _resolve(prog.nodes_file)
            except OSError as exc:
                _err(prog_name, f"cannot re-read {exc.filename}: {exc.strerror}")
            else:
                with prog.lock:
                    prog.peers = peers
                _err(prog_name, f"SIGUSR1: peers now {', '.join(peers)}")
        prog.probe_peers()
        prog.stop.wait(_PEER_PERIOD_S)
    for sock, _ in bound:
        sock.close()
    for t in threads:
        t.join(2)
    return 0


def _unix_connection(path: str) -> socket.socket:
    """A connection to the daemon's command service on a unix socket (2 s timeout)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(2.0)
        conn.connect(path)
    except OSError:
        conn.close()
        raise
    return conn


def _query(prog_name: str, where: str, connect: Callable[[], socket.socket]) -> int:
    """Ask the daemon at ``where`` (over ``connect()``) whether it is ready: print its answer, exit 0;
    a connection that fails or an answer other than READY/NOT_READY is one line on stderr, exit 1."""
    try:
        with connect() as conn:
            conn.sendall(_QUERY)
            answer = conn.recv(64).decode("ascii", "replace")
    except OSError as exc:
        _err(prog_name, f"cannot connect to the IMEX daemon at {where}: {exc.strerror or exc}")
        return 1
    if answer not in ("READY\n", "NOT_READY\n"):
        _err(prog_name, f"unexpected answer {answer!r} from {where}")
        return 1
    sys.stdout.write(answer)
    return 0


def imex_ctl_main(argv: Sequence[str] | None = None) -> int:
    """The fake ``nvidia-imex-ctl -c <cfg> -q`` (or ``-q --u=<unix socket>``, a host daemon's command
    service) program; its exit status."""
    prog_name = "nvidia-imex-ctl"
    args = list(sys.argv[1:] if argv is None else argv)
    unix = [a for a in args if a.startswith("--u=")]
    if unix and [a for a in args if a not in unix] == ["-q"]:
        path = unix[0].removeprefix("--u=")
        return _query(prog_name, path, lambda: _unix_connection(path))
    parsed = _config_arg(prog_name, args, {"-q"})
    if parsed is None:
        return 1
    if parsed[1] != ["-q"]:
        _err(prog_name, "this fake answers -q only")
        return 1
    config = _read_config(prog_name, parsed[0])
    if config is None:
        return 1
    ip, port = config.get("IMEX_CMD_BIND_INTERFACE_IP", ""), int(config.get("IMEX_CMD_PORT", "50005"))
    return _query(prog_name, f"{ip}:{port}", lambda: socket.create_connection((ip, port), timeout=2.0))
