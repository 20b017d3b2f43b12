"""Many files written (or removed) with their durability points shared: one sync, one directory fsync."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.cdi import ContainerEdits, DeviceNode, claim_spec, read_spec, remove_specs, write_specs, writer
from nvdra.cdi.writer import SYNCFS_MIN_FILES, atomic_write_many
from nvdra.core import faults
from nvdra.core.errors import CdiError, CheckpointError


class _Syncs:
    """Counts file fsyncs, syncfs calls and directory fsyncs (each still done for real)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.file_fsyncs = 0
        self.syncfs = 0
        self.dir_fsyncs = 0
        real_fsync, real_dir = os.fsync, writer._fsync_directory_once

        def fsync(fd: int) -> None:
            self.file_fsyncs += not stat.S_ISDIR(os.fstat(fd).st_mode)
            real_fsync(fd)

        def dir_fsync(directory: str | Path, error_cls: type[CdiError]) -> None:
            self.dir_fsyncs += 1
            real_dir(directory, error_cls)

        real_syncfs = writer._libc_syncfs()

        def syncfs(fd: int) -> int:
            self.syncfs += 1
            return real_syncfs(fd) if real_syncfs else 0

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(writer, "_fsync_directory_once", dir_fsync)
        monkeypatch.setattr(writer, "_libc_syncfs", lambda: syncfs)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> _Syncs:
    return _Syncs(monkeypatch)


@pytest.fixture
def disarmed() -> Iterator[None]:
    yield
    faults.arm(None, lambda name, seen: None)


def _files(n: int) -> dict[str, bytes]:
    return {f"f{i}.yaml": f"content {i}\n".encode() * (i + 1) for i in range(n)}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_batch_is_synced_once_and_its_directory_once(tmp_path: Path, syncs: _Syncs) -> None:
    files = _files(16)
    out = atomic_write_many(tmp_path, files)
    assert out == dict.fromkeys(files)
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert (syncs.syncfs, syncs.file_fsyncs, syncs.dir_fsyncs) == (1, 0, 1)
    assert _leftovers(tmp_path) == []


def test_a_small_batch_fsyncs_each_file(tmp_path: Path, syncs: _Syncs) -> None:
    files = _files(SYNCFS_MIN_FILES - 1)
    assert atomic_write_many(tmp_path, files, 0o600) == dict.fromkeys(files)
    assert (syncs.syncfs, syncs.file_fsyncs, syncs.dir_fsyncs) == (0, SYNCFS_MIN_FILES - 1, 1)
    assert stat.S_IMODE((tmp_path / "f0.yaml").stat().st_mode) == 0o600


def test_without_syncfs_every_file_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old kernel (syncfs hid writeback errors before 5.8) or no syncfs in libc: fsync each file."""
    writer._libc_syncfs.cache_clear()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "n", "5.4.0-150", "#1", "x86_64")))
    try:
        assert writer._libc_syncfs() is None
    finally:
        writer._libc_syncfs.cache_clear()
    fsyncs: list[int] = []
    monkeypatch.setattr(writer, "_libc_syncfs", lambda: None)
    monkeypatch.setattr(os, "fsync", fsyncs.append)
    files = _files(SYNCFS_MIN_FILES + 2)
    assert atomic_write_many(tmp_path, files) == dict.fromkeys(files)
    assert len(fsyncs) == len(files) + 1  # and the directory once


def test_a_failed_sync_fails_every_file_and_renames_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f1.yaml").write_bytes(b"old\n")
    monkeypatch.setattr(writer, "_libc_syncfs", lambda: lambda fd: -1)
    monkeypatch.setattr("ctypes.get_errno", lambda: 5)
    out = atomic_write_many(tmp_path, _files(8), error_cls=CheckpointError)
    assert set(out) == set(_files(8))
    for name, failure in out.items():
        assert isinstance(failure, CheckpointError)
        assert str(failure) == f"cannot write {tmp_path / name}: {os.strerror(5)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1.yaml"]
    assert (tmp_path / "f1.yaml").read_bytes() == b"old\n"


def test_one_failed_rename_fails_only_its_file(tmp_path: Path, syncs: _Syncs) -> None:
    (tmp_path / "f2.yaml").mkdir()  # a file cannot replace a directory
    out = atomic_write_many(tmp_path, _files(6))
    assert isinstance(out.pop("f2.yaml"), CdiError)
    assert out == dict.fromkeys(["f0.yaml", "f1.yaml", "f3.yaml", "f4.yaml", "f5.yaml"])
    assert (tmp_path / "f5.yaml").read_bytes() == _files(6)["f5.yaml"]
    assert _leftovers(tmp_path) == []
    assert syncs.dir_fsyncs == 1


def test_a_failed_directory_fsync_fails_every_renamed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(directory: str | Path, error_cls: type[CdiError]) -> None:
        raise error_cls(f"cannot fsync directory {directory}: EIO")

    monkeypatch.setattr(writer, "_fsync_directory_once", fail)
    out = atomic_write_many(tmp_path, _files(5))
    assert {str(f) for f in out.values()} == {f"cannot fsync directory {tmp_path}: EIO"}


def test_a_crash_point_between_renames_leaves_no_temp_file(tmp_path: Path, disarmed: None) -> None:
    """Stopped before the third rename: the first two files are in place, nothing else is."""

    class Stop(Exception):
        pass

    def stop(name: str, seen: int) -> None:
        raise Stop(f"{name}:{seen}")

    faults.arm(("before-rename", 3), stop)
    with pytest.raises(Stop):
        atomic_write_many(tmp_path, _files(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.yaml", "f1.yaml"]


def test_write_specs_and_remove_specs_round_trip(tmp_path: Path, syncs: _Syncs) -> None:
    edits = ContainerEdits(device_nodes=(DeviceNode(path="/dev/nvidia0"),))
    uids = [f"0b5f4d1e-1111-4222-8333-4444555566{i:02d}" for i in range(10)]
    specs = {
        f"k8s.gpu.nvidia.com-claim_{u}": claim_spec(
            "k8s.gpu.nvidia.com", "claim", u, [("gpu-0", edits)], ContainerEdits(env=("A=1",))
        )
        for u in uids
    }
    root = tmp_path / "cdi"
    assert write_specs(root, specs) == dict.fromkeys(specs)
    for name, spec in specs.items():
        assert read_spec(root / f"{name}.yaml") == spec
    names = [*specs, "k8s.gpu.nvidia.com-claim_missing"]
    removed = remove_specs(root, [*names, "../escape"])
    assert isinstance(removed.pop("../escape"), CdiError)
    assert removed == {**dict.fromkeys(specs, True), "k8s.gpu.nvidia.com-claim_missing": False}
    assert list(root.iterdir()) == []
    assert syncs.dir_fsyncs == 3  # the created CDI root's parent, the writes, the removals


def test_write_specs_refuses_a_name_that_escapes_the_root(tmp_path: Path) -> None:
    spec = claim_spec(
        "k8s.gpu.nvidia.com", "claim", "u", [("gpu-0", ContainerEdits(env=("A=1",)))], ContainerEdits()
    )
    out = write_specs(tmp_path, {"../x": spec, "good": spec})
    assert isinstance(out["../x"], CdiError)
    assert out["good"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.yaml"]


@pytest.mark.parametrize("count", [2, SYNCFS_MIN_FILES, 12])
def test_no_file_is_renamed_before_the_batch_is_synced(
    tmp_path: Path, syncs: _Syncs, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """A crash after a rename must find the renamed file's data durable: every sync comes first."""
    seen: list[tuple[int, int]] = []
    real_replace = os.replace

    def replace(src: str, dst: str | Path) -> None:
        seen.append((syncs.syncfs, syncs.file_fsyncs))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write_many(tmp_path, _files(count))
    expected = (1, 0) if count >= SYNCFS_MIN_FILES else (0, count)
    assert seen == [expected] * count
