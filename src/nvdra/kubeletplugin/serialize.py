"""Serialization of NodePrepare/NodeUnprepare calls into the driver.

Invariants owned here:

* with serialization on (the default) at most one prepare or unprepare runs in the driver at a
  time in this process (an in-process lock);
* with a lock file configured (rolling updates: the old and the new plugin pod share the plugin
  data directory) the same holds across processes through an exclusive ``flock`` on that file,
  always taken *after* the in-process lock, so threads of one process queue on the cheap lock and
  only one of them at a time waits on the file;
* with serialization off, nothing is locked (drivers that lock finer-grained themselves).
"""

from __future__ import annotations

__all__ = ["SERIALIZE_LOCK_NAME", "RequestSerializer"]

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from nvdra.core import errors

SERIALIZE_LOCK_NAME = "serialize.lock"
"""File name of the cross-process lock inside the plugin data (or flock) directory."""


class RequestSerializer:
    """Serializes driver calls in-process and, optionally, across processes via ``flock``.

    Args:
        enabled: False disables all locking.
        lock_file: path of the shared lock file (created 0600 if missing); None = in-process only.
    """

    def __init__(self, *, enabled: bool = True, lock_file: Path | None = None) -> None:
        self.enabled = enabled
        self.lock_file = lock_file if enabled else None
        self._lock = threading.Lock()
        self._fd: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the serialization lock(s) for the duration of the ``with`` block.

        Raises:
            HostError: the lock file cannot be opened or locked.
        """
        if not self.enabled:
            yield
            return
        with self._lock:
            if self.lock_file is None:
                yield
                return
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise errors.HostError(f"flock {self.lock_file}: {exc}") from exc
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        # One descriptor for the process's lifetime: flock belongs to the open file description, and
        # the in-process lock already guarantees a single holder inside this process.
        if self._fd is None:
            assert self.lock_file is not None
            try:
                self._fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise errors.HostError(f"open lock file {self.lock_file}: {exc}") from exc
        return self._fd

    def close(self) -> None:
        """Close the lock file descriptor (idempotent). Waits for a call that holds the lock."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
