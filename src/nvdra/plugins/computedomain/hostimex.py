"""Host-managed IMEX (``--imex-mode=hostManaged``): the readiness check, and a simulated host daemon.

:class:`HostImexCheck` runs the node's ``nvidia-imex-ctl -q --u=<socket>`` from the driver root (where
the host's IMEX package puts it), with the socket path taken under the driver root as upstream does,
and says why the host daemon is not ready (missing binary, no daemon on the socket, NOT_READY).

:class:`SimulatedHostImex` stands in for the host's ``nvidia-imex`` command service on a unix socket:
it answers the fake ``nvidia-imex-ctl`` (``nvdra.plugins.computedomain.fakeimex``, ``--u=``) with
READY or NOT_READY as the test sets it, so host-managed mode runs the same program path as on a node.
"""

from __future__ import annotations

__all__ = ["HostImexCheck", "SimulatedHostImex"]

import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from nvdra.core.closing import Closing
from nvdra.core.errors import HostError
from nvdra.imex.hostmode import host_imex_ready

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)


class HostImexCheck:
    """``nvidia-imex-ctl -q --u=<driver root>/<socket>``: "" when the host IMEX daemon is READY, else why."""

    def __init__(self, driver_root: Path, socket_path: str, *, run: Runner = _run) -> None:
        self.driver_root = driver_root
        self.socket = driver_root / socket_path.lstrip("/")
        self._run = run

    def __call__(self) -> str:
        from nvdra.plugins.computedomain.daemon_main import find_imex_binary

        try:
            ctl = find_imex_binary(self.driver_root, "nvidia-imex-ctl")
        except HostError as exc:
            return f"host-managed IMEX: {exc}"
        try:
            done = self._run([ctl, "-q", f"--u={self.socket}"])
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"host-managed IMEX: cannot run {ctl}: {exc}"
        output = (done.stdout or "") + (done.stderr or "")
        if done.returncode != 0:
            return (
                f"host-managed IMEX: {ctl} -q --u={self.socket} failed ({done.returncode}): {output.strip()}"
            )
        if not host_imex_ready(done.stdout or ""):
            return f"host nvidia-imex daemon not ready: {output.strip()}"
        return ""


class SimulatedHostImex(Closing):
    """A host ``nvidia-imex`` command service on a unix socket (the fake's QUERY protocol)."""

    def __init__(self, path: Path, *, ready: bool = True) -> None:
        self.path = path
        self.ready = ready
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="nvdra-host-imex", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                data = conn.recv(64)
                answer = (
                    b"UNKNOWN_COMMAND\n"
                    if data != b"QUERY\n"
                    else (b"READY\n" if self.ready else b"NOT_READY\n")
                )
                conn.sendall(answer)

    def close(self) -> None:
        """Stop serving and remove the socket."""
        self._stop.set()
        self._sock.close()
        self._thread.join(2)
        self.path.unlink(missing_ok=True)
