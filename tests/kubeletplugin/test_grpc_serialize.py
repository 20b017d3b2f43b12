"""Serialization of driver calls: in-process lock, cross-process flock, off switch."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from nvdra.kubeletplugin.serialize import RequestSerializer


def _locked_elsewhere(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_flock_is_held_only_inside_the_block(sockdir: Path) -> None:
    """While a call runs another process (another open file) cannot take serialize.lock."""
    lock = sockdir / "serialize.lock"
    s = RequestSerializer(lock_file=lock)
    with s.hold():
        assert _locked_elsewhere(lock)
    assert not _locked_elsewhere(lock)
    s.close()
    s.close()


def test_in_process_lock_excludes_a_second_holder() -> None:
    """The in-process lock is taken for the duration of the block."""
    s = RequestSerializer()
    with s.hold():
        assert s._lock.locked()
    assert not s._lock.locked()


@pytest.mark.parametrize("with_file", [False, True])
def test_disabled_serializer_locks_nothing(sockdir: Path, with_file: bool) -> None:
    """enabled=False takes neither the in-process lock nor the file."""
    lock = sockdir / "serialize.lock"
    s = RequestSerializer(enabled=False, lock_file=lock if with_file else None)
    with s.hold():
        assert not s._lock.locked()
        assert not lock.exists()
