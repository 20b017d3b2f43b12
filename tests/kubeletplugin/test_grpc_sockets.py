"""Socket naming (plain, rolling update, hashed fallback) and socket-file ownership."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin.sockets import (
    MAX_SOCKET_PATH_BYTES,
    UnixSocketServer,
    remove_stale_socket,
    socket_paths,
)

UID = "0f6a1e5c-4b7d-4c1e-9a55-2b8e6a3f9d10"


def _bind(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # leaves the socket file behind, like a crashed plugin


def test_plain_names() -> None:
    """Without a pod UID: dra.sock and <driver>-reg.sock."""
    p = socket_paths(driver_name="gpu.nvidia.com", plugin_data_dir=Path("/p"), registrar_dir=Path("/r"))
    assert p.dra == Path("/p/dra.sock") and p.registration == Path("/r/gpu.nvidia.com-reg.sock")


def test_rolling_update_names() -> None:
    """With a pod UID: dra-<uid>.sock and <driver>-<uid>-reg.sock."""
    p = socket_paths(
        driver_name="gpu.nvidia.com",
        plugin_data_dir=Path("/p"),
        registrar_dir=Path("/r"),
        rolling_update_uid=UID,
    )
    assert p.dra == Path(f"/p/dra-{UID}.sock")
    assert p.registration == Path(f"/r/gpu.nvidia.com-{UID}-reg.sock")


def test_long_paths_fall_back_to_short_hashes() -> None:
    """Paths over the sun_path limit use hashed names that fit, are stable and differ per UID."""
    deep = Path("/" + "d" * 70)
    kwargs: dict[str, Any] = dict(driver_name="gpu.nvidia.com", plugin_data_dir=deep, registrar_dir=deep)
    p1 = socket_paths(**kwargs, rolling_update_uid=UID)
    p2 = socket_paths(**kwargs, rolling_update_uid=UID.replace("0f", "1f"))
    assert p1 == socket_paths(**kwargs, rolling_update_uid=UID)
    for path in (p1.dra, p1.registration):
        assert len(str(path).encode()) <= MAX_SOCKET_PATH_BYTES and UID not in str(path)
        assert "/" not in path.name
    assert p1.registration.name.startswith("gpu.nvidia.com-") and p1.registration.name.endswith("-reg.sock")
    assert p1.registration != p2.registration and p1.dra != p2.dra


def test_very_long_driver_name_uses_the_driverless_hash() -> None:
    """When even the 8-character hash does not fit, the name becomes dra-<16 chars>-reg.sock."""
    reg = Path("/" + "r" * 40)
    p = socket_paths(
        driver_name="x" * 60, plugin_data_dir=Path("/p"), registrar_dir=reg, rolling_update_uid=UID
    )
    assert p.registration.name.startswith("dra-") and len(p.registration.name) == len("dra-") + 16 + len(
        "-reg.sock"
    )


def test_no_fitting_name_is_a_config_error() -> None:
    """A directory too long for any name is rejected with the limit in the message."""
    with pytest.raises(errors.ConfigError, match="107"):
        socket_paths(driver_name="d", plugin_data_dir=Path("/" + "p" * 120), registrar_dir=Path("/r"))


def test_stale_socket_removed_but_regular_file_refused(sockdir: Path) -> None:
    """A leftover socket is removed; a regular file in the way is an error and survives."""
    stale = sockdir / "stale.sock"
    _bind(stale)
    assert remove_stale_socket(stale) and not stale.exists()
    assert not remove_stale_socket(stale)
    regular = sockdir / "file.sock"
    regular.write_text("data")
    with pytest.raises(errors.HostError, match="not a socket"):
        remove_stale_socket(regular)
    assert regular.read_text() == "data"


def test_server_replaces_stale_socket_and_removes_it_on_stop(sockdir: Path) -> None:
    """Start listens over a stale socket file; stop removes the file it created."""
    path = sockdir / "s.sock"
    _bind(path)
    server = UnixSocketServer(path)
    server.start()
    assert path.is_socket()
    server.stop(0)
    server.stop(0)
    assert not path.exists()


def test_stop_leaves_another_instances_socket(sockdir: Path) -> None:
    """If the path now holds another instance's socket, stop does not delete it."""
    path = sockdir / "s.sock"
    server = UnixSocketServer(path)
    server.start()
    path.unlink()
    _bind(path)  # the next instance took the name
    server.stop(0)
    assert path.is_socket()
