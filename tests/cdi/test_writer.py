"""Atomic, durable writes and CDI spec files: content, modes, failure safety, removal."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    atomic_write,
    claim_spec,
    claim_spec_name,
    encode_spec,
    on_memory_filesystem,
    read_spec,
    remove_durably,
    remove_spec,
    remove_stale_temp_files,
    write_spec,
)
from nvdra.cdi.spec import Spec
from nvdra.core.errors import CdiError, CheckpointError

UID = "0b5f4d1e-1111-4222-8333-444455556666"
SPEC = claim_spec(
    "k8s.gpu.nvidia.com",
    "claim",
    UID,
    [
        (
            "gpu-0",
            ContainerEdits(
                device_nodes=(DeviceNode(path="/dev/nvidia0", host_path="/r/dev/nvidia0", major=195),)
            ),
        )
    ],
    ContainerEdits(env=("NVIDIA_VISIBLE_DEVICES=void",)),
)
NAME = claim_spec_name("k8s.gpu.nvidia.com", "claim", UID)


def leftovers(directory: Path) -> list[str]:
    """Temp files an atomic write could have left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_spec_creates_the_dir_and_round_trips(
    tmp_path: Path, cdi_schema: Callable[[dict[str, Any]], None]
) -> None:
    """write_spec creates the CDI dir, writes <name>.yaml (0644) that loads back to the same spec."""
    root = tmp_path / "var" / "run" / "cdi"
    path = write_spec(root, SPEC, NAME)
    assert path == root / f"k8s.gpu.nvidia.com-claim_{UID}.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == encode_spec(SPEC)
    assert read_spec(path) == SPEC
    doc = yaml.safe_load(path.read_text())
    cdi_schema(doc)
    assert list(doc) == ["cdiVersion", "kind", "devices", "containerEdits"]
    assert path.read_text().startswith("---\n")
    assert leftovers(root) == []


def test_write_spec_makes_the_dir_again_when_it_went_away(tmp_path: Path) -> None:
    """The CDI dir is made when a write finds it missing, also after an earlier write found it there."""
    root = tmp_path / "cdi"
    first = write_spec(root, SPEC, NAME)
    first.unlink()
    root.rmdir()
    assert write_spec(root, SPEC, NAME).read_bytes() == encode_spec(SPEC)
    assert leftovers(root) == []


def test_overwrite_replaces_content_and_mode_is_exact(tmp_path: Path) -> None:
    """A second write replaces the file; the requested mode is applied regardless of the umask."""
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    old_umask = os.umask(0o077)
    try:
        atomic_write(target, b"new", 0o640)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_a_full_disk_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    """When the write fails (file size limit, like ENOSPC) the old content stays and no temp remains."""
    target = tmp_path / "spec.yaml"
    target.write_bytes(b"old content")
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from nvdra.cdi import atomic_write
        from nvdra.core.errors import CdiError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            atomic_write(sys.argv[1], b"x" * 100_000)
        except CdiError as e:
            print(e)
            sys.exit(3)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 3, result.stderr
    assert str(target) in result.stdout
    assert target.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []


def test_a_failed_rename_leaves_no_temp(tmp_path: Path) -> None:
    """If the rename fails (target is a directory) the error names the path and the temp is removed."""
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(CdiError, match="busy"):
        atomic_write(target, b"data")
    assert (target / "keep").read_text() == "x"
    assert leftovers(tmp_path) == []


def test_missing_directory_and_custom_error_class(tmp_path: Path) -> None:
    """A missing parent dir raises the caller's error class with the path (e.g. CheckpointError)."""
    with pytest.raises(CheckpointError, match="nope"):
        atomic_write(tmp_path / "nope" / "checkpoint.json", b"{}", error_cls=CheckpointError)
    with pytest.raises(CdiError, match="nope"):
        atomic_write(tmp_path / "nope" / "x", b"")


def test_unwritable_cdi_root_is_a_cdi_error(tmp_path: Path) -> None:
    """A CDI root that is a regular file cannot be created: CdiError naming it."""
    blocker = tmp_path / "cdi"
    blocker.write_text("not a dir")
    with pytest.raises(CdiError, match="cdi"):
        write_spec(blocker / "sub", SPEC, NAME)


def test_remove_spec_is_durable_and_idempotent(tmp_path: Path) -> None:
    """remove_spec deletes the file once and then reports there was nothing to delete."""
    write_spec(tmp_path, SPEC, NAME)
    assert remove_spec(tmp_path, NAME) is True
    assert not (tmp_path / f"{NAME}.yaml").exists()
    assert remove_spec(tmp_path, NAME) is False
    assert remove_durably(tmp_path / "never-there") is False


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ""])
def test_spec_names_cannot_escape_the_root(tmp_path: Path, bad: str) -> None:
    """write_spec and remove_spec refuse names that are not a single safe path component."""
    with pytest.raises(CdiError):
        write_spec(tmp_path / "cdi", SPEC, bad)
    with pytest.raises(CdiError):
        remove_spec(tmp_path / "cdi", bad)
    assert not (tmp_path / "escape.yaml").exists()


def test_stale_temp_files_are_swept_and_nothing_else(tmp_path: Path) -> None:
    """Only '.<name>.<random>.tmp' files are removed; specs and other dotfiles stay."""
    (tmp_path / f".{NAME}.yaml.abc123.tmp").write_text("torn")
    (tmp_path / f"{NAME}.yaml").write_text("spec")
    (tmp_path / ".hidden").write_text("keep")
    (tmp_path / "data.tmp").write_text("keep")
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [f".{NAME}.yaml.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "data.tmp", f"{NAME}.yaml"]
    assert remove_stale_temp_files(tmp_path / "absent") == []


def test_read_spec_rejects_garbage(tmp_path: Path) -> None:
    """Unreadable, non-YAML or non-CDI files raise CdiError."""
    with pytest.raises(CdiError, match="cannot read"):
        read_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cdiVersion: [unclosed\n")
    with pytest.raises(CdiError, match="not valid YAML"):
        read_spec(bad)
    bad.write_text("cdiVersion: 0.3.0\nkind: a/b\ndevices: []\nbogus: 1\n")
    with pytest.raises(CdiError, match="bogus"):
        read_spec(bad)


@pytest.mark.parametrize(
    "names",
    [
        ["0b5f4d1e-1111-4222-8333-444455556666-gpu-0"],
        ["uid-gpu-0", "uid-gpu-1", "uid-gpu-0-mig-1g.10gb-19-0"],
        ["123", "1e5", "0x1F", "1_000", "2001-12-14", ".5", "yes", "Off", "null", "true", "a:b", "x.y"],
    ],
    ids=["one", "several", "names-yaml-would-type-or-quote"],
)
def test_device_entries_from_the_cache_equal_the_whole_document(names: list[str]) -> None:
    """Device entries rendered once per edits with the name put in: the same bytes as one dump, also for
    names YAML would read as another type (quoted there) and for annotated devices."""
    node = ContainerEdits(
        device_nodes=(DeviceNode(path="/dev/nvidia0", host_path="/r/dev/nvidia0", major=195),)
    )
    edits = [node, ContainerEdits(), node + ContainerEdits(env=("A=1",))]
    devices = tuple(
        Device(
            name=name,
            container_edits=edits[i % len(edits)],
            annotations={"k8s.io/x": "y"} if i == 1 else {},
        )
        for i, name in enumerate(names)
    )
    for top in ({}, {"nvidia.com/a": "b"}):
        spec = Spec(
            cdi_version="0.6.0",
            kind="k8s.gpu.nvidia.com/claim",
            devices=devices,
            container_edits=SPEC.container_edits,
            annotations=top,
        )
        for _ in range(2):  # rendered, then from the cache
            whole = yaml.safe_dump(
                spec.to_dict(), sort_keys=False, default_flow_style=False, explicit_start=True
            )
            assert encode_spec(spec) == whole.encode()


def test_encoding_reuses_common_edits_without_changing_the_output() -> None:
    """encode_spec is byte-identical to dumping the whole document, for specs with different edits."""
    other = claim_spec(
        "k8s.gpu.nvidia.com",
        "claim",
        "other-uid",
        [("gpu-1", ContainerEdits())],
        ContainerEdits(env=("NVIDIA_CTK_LIBCUDA_DIR=/usr/lib64",)),
    )
    bare = claim_spec(
        "k8s.gpu.nvidia.com", "claim", "bare-uid", [("gpu-2", ContainerEdits())], ContainerEdits()
    )
    for spec in (SPEC, other, SPEC, bare, other):
        whole = yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=False, explicit_start=True)
        assert encode_spec(spec) == whole.encode()


def _mount_types() -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mounts (empty where there is none)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return {}
    return {fields[1]: fields[2] for fields in (line.split() for line in lines) if len(fields) > 2}


def test_on_memory_filesystem_tells_tmpfs_from_a_disk(tmp_path: Path) -> None:
    """tmpfs (fsync free, gone at reboot) is told apart from other filesystems; a missing path is not."""
    mounts = _mount_types()
    if mounts.get("/dev/shm") == "tmpfs":
        assert on_memory_filesystem("/dev/shm")
    if "/proc" in mounts:
        assert not on_memory_filesystem("/proc")
    assert not on_memory_filesystem(tmp_path / "missing")
    if mounts.get("/") not in (None, "tmpfs", "ramfs", "overlay"):
        assert not on_memory_filesystem("/")


def test_a_taken_temp_name_is_drawn_again_and_exhaustion_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temp files are created exclusively: a name already there is never reused; when every draw is
    taken the write fails with the caller's error, leaving the target and the squatter as they were."""
    from nvdra.cdi import writer

    draws = iter([7, 7, 8])
    monkeypatch.setattr(writer._TEMP_NAMES, "getrandbits", lambda bits: next(draws))
    squatter = tmp_path / f".state.json.{7:010x}.tmp"
    squatter.write_bytes(b"someone else's")
    atomic_write(tmp_path / "state.json", b"new")
    assert (tmp_path / "state.json").read_bytes() == b"new"
    assert squatter.read_bytes() == b"someone else's"

    monkeypatch.setattr(writer._TEMP_NAMES, "getrandbits", lambda bits: 7)
    with pytest.raises(CheckpointError, match="no free temp file name"):
        atomic_write(tmp_path / "state.json", b"newer", error_cls=CheckpointError)
    assert (tmp_path / "state.json").read_bytes() == b"new"
