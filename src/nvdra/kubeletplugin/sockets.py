"""Unix-socket names and lifecycles of the plugin's two gRPC servers.

Invariants owned here:

* names follow the Go helper: ``<plugin dir>/dra.sock`` and ``<registrar dir>/<driver>-reg.sock``;
  with rolling updates (a pod UID) ``dra-<uid>.sock`` and ``<driver>-<uid>-reg.sock``, so old and new
  pod never share a socket. When such a path would not fit ``sockaddr_un.sun_path`` (108 bytes with
  the terminating NUL) the UID part is replaced by a hash: ``<driver>-<h8(uid)>-reg.sock``, then
  ``dra-<h16(driver + NUL + uid)>-reg.sock`` (``hN`` = first N characters of the URL-safe base64 of
  the SHA-256, which never contains ``/``); the DRA socket likewise becomes ``dra-<h16(uid)>.sock``;
* a stale *socket* file is removed before listening (a regular file in the way is an error, never
  deleted); on stop a server removes its socket only if the path still holds the socket it created
  (same inode), so an instance never deletes another instance's socket (grpc's own unlink-on-close
  is pointed at a private name, see :meth:`UnixSocketServer.start`);
* both sockets are mode :data:`SOCKET_MODE` (0660) whatever the process umask, set before the public
  name appears.
"""

from __future__ import annotations

__all__ = ["MAX_SOCKET_PATH_BYTES", "SocketPaths", "UnixSocketServer", "remove_stale_socket", "socket_paths"]

import base64
import hashlib
import logging
import os
import secrets
import stat
from concurrent import futures
from pathlib import Path

import attrs
import grpc

from nvdra.core import errors

MAX_SOCKET_PATH_BYTES = 107
"""Longest usable unix socket path: ``sun_path`` is 108 bytes including the terminating NUL."""

SOCKET_MODE = 0o660
"""Mode of both sockets, set explicitly (the kubelet connects as root; nobody else may)."""

_log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class SocketPaths:
    """Where the DRA service and the registration service listen."""

    dra: Path
    registration: Path


def _hash(text: str, length: int) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:length]


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES


def socket_paths(
    *, driver_name: str, plugin_data_dir: Path, registrar_dir: Path, rolling_update_uid: str | None = None
) -> SocketPaths:
    """Compute the two socket paths (see the module docstring for the naming rules).

    Raises:
        ConfigError: even the shortest name does not fit a unix socket path.
    """
    if not rolling_update_uid:
        candidates_reg = [registrar_dir / f"{driver_name}-reg.sock"]
        candidates_dra = [plugin_data_dir / "dra.sock"]
    else:
        uid = rolling_update_uid
        candidates_reg = [
            registrar_dir / f"{driver_name}-{uid}-reg.sock",
            registrar_dir / f"{driver_name}-{_hash(uid, 8)}-reg.sock",
            registrar_dir / f"dra-{_hash(driver_name + chr(0) + uid, 16)}-reg.sock",
        ]
        candidates_dra = [plugin_data_dir / f"dra-{uid}.sock", plugin_data_dir / f"dra-{_hash(uid, 16)}.sock"]
    return SocketPaths(dra=_first_fitting(candidates_dra), registration=_first_fitting(candidates_reg))


def _first_fitting(candidates: list[Path]) -> Path:
    for path in candidates:
        if _fits(path):
            return path
    raise errors.ConfigError(
        "socket path",
        str(candidates[-1]),
        f"a path of at most {MAX_SOCKET_PATH_BYTES} bytes (shorten the directory)",
        reason="too long for a unix socket",
    )


def remove_stale_socket(path: Path) -> bool:
    """Remove a leftover socket file at ``path``; returns whether one was removed.

    Raises:
        HostError: something other than a socket is in the way, or it cannot be removed.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise errors.HostError(f"{path} exists and is not a socket; refusing to remove it")
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise errors.HostError(f"remove stale socket {path}: {exc}") from exc
    _log.info("removed stale socket %s", path)
    return True


class UnixSocketServer:
    """A synchronous gRPC server listening on one unix socket it owns.

    Args:
        path: the socket path.
        max_workers: size of the handler thread pool (streams hold a thread each).
        name: used in thread names and log lines.
    """

    def __init__(self, path: Path, *, max_workers: int = 8, name: str = "grpc") -> None:
        self.path = path
        self.name = name
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"nvdra-{name}"),
            options=[("grpc.so_reuseport", 0)],
        )
        self._identity: tuple[int, int] | None = None
        self._stopped = False

    def start(self) -> None:
        """Remove a stale socket, listen and start serving.

        grpc unlinks the path it listened on when it shuts down, whoever owns that path by then.
        So it listens on a private dot-name (which the kubelet's plugin watcher ignores) and the
        socket is renamed to its public name once listening: the public file then appears ready to
        accept, and only :meth:`stop` decides whether to remove it.

        Raises:
            HostError: the socket cannot be created.
        """
        remove_stale_socket(self.path)
        private = self.path.with_name(f".{secrets.token_hex(4)}")
        listen_at = private if _fits(private) else self.path
        try:
            self.server.add_insecure_port(f"unix:{listen_at}")
        except RuntimeError as exc:
            raise errors.HostError(f"listen on {listen_at}: {exc}") from exc
        # The socket's mode comes from the umask; whoever may connect may prepare and unprepare claims.
        os.chmod(listen_at, SOCKET_MODE)
        self.server.start()
        if listen_at != self.path:
            os.rename(listen_at, self.path)
        st = self.path.stat()
        self._identity = (st.st_dev, st.st_ino)
        _log.info("%s server listening on %s", self.name, self.path)

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds) and remove our own socket file."""
        if self._stopped:
            return
        self._stopped = True
        # grpc cancels what is still running once the grace period is over; the bound on the wait keeps a
        # stuck completion queue from holding the process (the socket is removed either way).
        if not self.server.stop(grace).wait((grace or 0) + 5.0):
            _log.warning(
                "%s: the gRPC server did not confirm its stop within %.0f s", self.path, (grace or 0) + 5
            )
        self._remove_own_socket()

    def _remove_own_socket(self) -> None:
        if self._identity is None:
            return
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) != self._identity:
            _log.info("%s now belongs to another instance; leaving it", self.path)
            return
        self.path.unlink(missing_ok=True)
