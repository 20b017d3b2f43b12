"""Durable, atomic file writes, and writing/removing CDI spec files with them.

``atomic_write`` is generic (CDI specs, the checkpoint, other nvdra state): write a temp file in the
target's directory, fsync it, rename it over the target, fsync the directory. A reader sees either the
old or the new content, never a torn file, and after the call returns the new content survives a
crash. The write path is one write, one fsync, one rename, one directory fsync.

Invariants: on any failure the old file is untouched and no temp file is left behind; temp files are
named ``.<name>.<random>.tmp`` so a CDI runtime (which reads only ``*.json``/``*.yaml``) never loads one,
even one orphaned by a power cut (``remove_stale_temp_files`` sweeps those); OS errors surface as the
caller's nvdra error class (``CdiError`` by default) naming the path.
"""

from __future__ import annotations

__all__ = [
    "SYNCFS_MIN_FILES",
    "atomic_write",
    "atomic_write_many",
    "encode_spec",
    "fsync_directory",
    "on_memory_filesystem",
    "read_spec",
    "remove_durably",
    "remove_many_durably",
    "remove_spec",
    "remove_specs",
    "remove_stale_temp_files",
    "write_spec",
    "write_specs",
]

import contextlib
import errno
import functools
import os
import random
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nvdra.cdi.claims import SPEC_EXTENSION
from nvdra.cdi.names import check_path_component
from nvdra.cdi.spec import ContainerEdits, Device, Spec
from nvdra.core.errors import CdiError, SystemError_
from nvdra.core.faults import reach

_TMP_SUFFIX = ".tmp"
# yaml is imported by the functions that use it, on the first spec written or read: a plugin registers
# with the kubelet before it writes a claim's spec (docs/performance.md, start-up).


class _DirectorySync:
    """Group commit of one directory's fsyncs: callers that arrive while an fsync of the directory runs
    share the next one, which starts after all of their renames and unlinks (each caller's ticket is
    taken after its change, and an fsync covers the tickets issued before it began)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.issued = 0
        self.synced = 0
        self.running = False


_DIR_SYNCS: dict[str, _DirectorySync] = {}
_DIR_SYNCS_LOCK = threading.Lock()


def fsync_directory(directory: str | Path, *, error_cls: type[SystemError_] = CdiError) -> None:
    """Make a directory's entries (a create, rename or unlink in it) durable.

    Concurrent callers on one directory (a call writing the specs of many claims from several threads)
    share fsyncs: each returns once an fsync that began after its call has completed.

    Raises:
        error_cls: the directory cannot be opened or synced.
    """
    key = os.fspath(directory)
    with _DIR_SYNCS_LOCK:
        sync = _DIR_SYNCS.setdefault(key, _DirectorySync())
    with sync.cond:
        sync.issued += 1
        ticket = sync.issued
        while sync.synced < ticket:
            if sync.running:
                sync.cond.wait()
                continue
            sync.running = True
            covers = sync.issued
            sync.cond.release()
            try:
                _fsync_directory_once(directory, error_cls)
            finally:
                sync.cond.acquire()
                sync.running = False
                sync.cond.notify_all()
            sync.synced = max(sync.synced, covers)  # not reached on failure: waiters then sync themselves
        idle = sync.synced == sync.issued and not sync.running
    if idle:
        with _DIR_SYNCS_LOCK:  # forget idle directories (a later caller may make a fresh entry)
            if _DIR_SYNCS.get(key) is sync:
                del _DIR_SYNCS[key]


def _fsync_directory_once(directory: str | Path, error_cls: type[SystemError_]) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise error_cls(f"cannot fsync directory {directory}: {e.strerror}") from e


def atomic_write(
    path: str | Path, data: bytes, mode: int = 0o644, *, error_cls: type[SystemError_] = CdiError
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Args:
        path: the target file; its directory must exist.
        data: the complete new content.
        mode: permission bits of the new file (exact, not subject to the umask).
        error_cls: the nvdra error to raise (e.g. ``CheckpointError`` for the checkpoint).

    Raises:
        error_cls: the write failed (full disk, permissions, missing directory, …); the old file is
            intact and no temp file remains.
    """
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    try:
        fd, tmp = _create_temp(directory, os.path.basename(target))
    except OSError as e:
        raise error_cls(f"cannot create a temp file for {target}: {e.strerror}") from e
    try:
        try:
            _fill(fd, data, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        reach("before-rename")
        os.replace(tmp, target)
    except BaseException as e:
        _unlink_quietly(tmp)
        if isinstance(e, OSError):
            raise error_cls(f"cannot write {target}: {e.strerror or e}") from e
        raise
    fsync_directory(directory, error_cls=error_cls)


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_NAMES = random.Random()
_TEMP_ATTEMPTS = 100
if hasattr(os, "register_at_fork"):  # a forked child must not draw its parent's next names
    os.register_at_fork(after_in_child=_TEMP_NAMES.seed)


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """Create ``<directory>/.<name>.<10 random hex digits>.tmp`` (mode 0600, exclusively, as
    ``tempfile.mkstemp`` does, whose name generator checks the process id on every call): its
    descriptor open for writing and its path.

    Raises:
        OSError: it cannot be created (a name already taken is tried again with another one).
    """
    for _ in range(_TEMP_ATTEMPTS):
        tmp = f"{directory}/.{name}.{_TEMP_NAMES.getrandbits(40):010x}{_TMP_SUFFIX}"
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temp file name after {_TEMP_ATTEMPTS} attempts")


def _fill(fd: int, data: bytes, mode: int) -> None:
    """Give a fresh temp file its mode (it is created 0600) and all of ``data`` (no fsync)."""
    if mode != 0o600:
        os.fchmod(fd, mode)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: str) -> None:
    # Best effort: when cleaning up after a failure, the original error is the one worth reporting.
    with contextlib.suppress(OSError):
        os.unlink(path)


def remove_durably(path: str | Path, *, error_cls: type[SystemError_] = CdiError) -> bool:
    """Unlink ``path`` and fsync its directory; a missing file is fine.

    Returns:
        True if a file was removed, False if there was none.

    Raises:
        error_cls: the unlink or the directory fsync failed.
    """
    target = Path(path)
    try:
        os.unlink(target)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise error_cls(f"cannot remove {target}: {e.strerror}") from e
    fsync_directory(target.parent, error_cls=error_cls)
    return True


# Batches of at least this many files are made durable by one syncfs(2) of their filesystem rather than
# one fsync(2) each (see atomic_write_many).
SYNCFS_MIN_FILES = 4
_SYNCFS_KERNEL = (5, 8)  # syncfs reports writeback errors from Linux 5.8 on; before, it could hide one


@functools.cache
def _libc() -> Any:
    """The C library through ctypes (errno kept), loaded once; None on other systems than Linux or where
    it cannot be loaded."""
    if sys.platform != "linux":
        return None
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs`` where it exists and reports errors (Linux >= 5.8), else None."""
    release = os.uname().release if hasattr(os, "uname") else ""
    found = re.match(r"(\d+)\.(\d+)", release)
    if not found or (int(found[1]), int(found[2])) < _SYNCFS_KERNEL:
        return None
    func: Callable[[int], int] | None = getattr(_libc(), "syncfs", None)
    return func


# statfs(2) f_type of the filesystems whose files live in memory only (linux/magic.h).
_MEMORY_FILESYSTEMS = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}


def on_memory_filesystem(path: str | Path) -> bool:
    """Whether ``path`` is on tmpfs or ramfs (``/var/run/cdi`` on most nodes): fsync costs nothing there
    and its files do not outlive a reboot, so writing one is only CPU. False where it cannot be told
    (not Linux, no libc ``statfs``, the path missing).
    """
    statfs = getattr(_libc(), "statfs", None)
    if statfs is None:
        return False
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs (120 bytes on 64-bit Linux); f_type comes first
    if statfs(os.fsencode(path), buf) != 0:
        return False
    f_type = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    return f_type in _MEMORY_FILESYSTEMS


def _sync_files(fds: Sequence[int], use_syncfs: bool) -> None:
    """Make the data and inodes of open files in one filesystem durable: one syncfs, or one fsync each.

    Raises:
        OSError: the sync failed (a write error of any of them: none may be renamed into place).
    """
    syncfs = _libc_syncfs() if use_syncfs else None
    if syncfs is None:
        for fd in fds:
            os.fsync(fd)
        return
    import ctypes

    # syncfs reports a writeback error of the filesystem seen since the given file was opened: the first
    # temp file was opened before the others were written, so an error writing any of them is seen.
    if syncfs(fds[0]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def atomic_write_many(
    directory: str | Path,
    files: Mapping[str, bytes],
    mode: int = 0o644,
    *,
    error_cls: type[SystemError_] = CdiError,
) -> dict[str, SystemError_ | None]:
    """Replace each ``<directory>/<name>`` with its data, atomically and durably: :func:`atomic_write`
    for many files of one directory, with their durability points shared.

    Every temp file is written without a sync, then all of them are made durable at once (one
    ``syncfs(2)`` of their filesystem for :data:`SYNCFS_MIN_FILES` or more, else one ``fsync`` each),
    then each is renamed over its target, then the directory is synced once. Crash-safe exactly as
    that many atomic writes are: no temp file is renamed before its data is durable, so after a crash
    each target holds its old or its new content in full; a temp file a crash leaves is swept by
    :func:`remove_stale_temp_files` at the next start; and nothing is reported written before the
    directory sync that makes its rename durable. syncfs also writes out what other processes left dirty on
    that filesystem, so it is used only where one call has several files to sync (a 64-claim call:
    one sync instead of 64, ~17 -> ~2 ms on the development disk), and only where it reports writeback
    errors (Linux >= 5.8; elsewhere, and where libc has no syncfs, each file is fsynced).
    A CDI root on tmpfs (``/var/run/cdi``) makes both free.

    Returns:
        Each name's failure (``error_cls``, naming the file), or None once it is durably in place. A
        failed sync fails every file of the batch (none is renamed); a failed directory sync fails
        every renamed one (as :func:`atomic_write` would fail).
    """
    root = Path(directory)
    out: dict[str, SystemError_ | None] = {}
    written: list[tuple[str, int, str]] = []  # name, open fd, temp path
    pending: list[tuple[str, str]] = []  # name, temp path: synced and closed, not yet renamed
    try:
        _write_temp_files(root, files, mode, error_cls=error_cls, written=written, out=out)
        if not written:
            return out
        try:
            _sync_files([fd for _, fd, _ in written], use_syncfs=len(written) >= SYNCFS_MIN_FILES)
        except OSError as e:
            out.update(
                {name: error_cls(f"cannot write {root / name}: {e.strerror or e}") for name, _, _ in written}
            )
            return out
        while written:
            name, fd, tmp = written.pop(0)
            pending.append((name, tmp))
            os.close(fd)
        while pending:
            name, tmp = pending[0]
            reach("before-rename")
            try:
                os.replace(tmp, root / name)
            except OSError as e:
                _unlink_quietly(tmp)
                out[name] = error_cls(f"cannot write {root / name}: {e.strerror or e}")
            else:
                out[name] = None
            pending.pop(0)
    finally:  # after a failure or a fault point's exception: no temp file stays behind
        for _, fd, tmp in written:
            _close_and_unlink(fd, tmp)
        for _, tmp in pending:
            _unlink_quietly(tmp)
    renamed = [name for name, failure in out.items() if failure is None]
    if renamed:
        try:
            fsync_directory(root, error_cls=error_cls)
        except SystemError_ as e:
            out.update(dict.fromkeys(renamed, e))
    return out


def _write_temp_files(
    root: Path,
    files: Mapping[str, bytes],
    mode: int,
    *,
    error_cls: type[SystemError_],
    written: list[tuple[str, int, str]],
    out: dict[str, SystemError_ | None],
) -> None:
    """Write each file's temp file, unsynced, appending (name, fd, temp path) to ``written``; a file
    that cannot be written gets its failure in ``out`` and leaves no temp file."""
    for name, data in files.items():
        try:
            fd, tmp = _create_temp(os.fspath(root), name)
        except OSError as e:
            out[name] = error_cls(f"cannot create a temp file for {root / name}: {e.strerror}")
            continue
        written.append((name, fd, tmp))
        try:
            _fill(fd, data, mode)
        except OSError as e:
            out[name] = error_cls(f"cannot write {root / name}: {e.strerror or e}")
            written.pop()
            _close_and_unlink(fd, tmp)


def _close_and_unlink(fd: int, tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    _unlink_quietly(tmp)


def remove_many_durably(
    paths: Sequence[Path], *, error_cls: type[SystemError_] = CdiError
) -> dict[Path, SystemError_ | bool]:
    """Unlink files of one directory and fsync it once after all of them; a missing file is fine.

    Returns:
        Each path's outcome: True if it was removed, False if there was none, or its failure (a failed
        directory sync fails every removed one).
    """
    out: dict[Path, SystemError_ | bool] = {}
    removed: list[Path] = []
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            out[path] = False
        except OSError as e:
            out[path] = error_cls(f"cannot remove {path}: {e.strerror}")
        else:
            removed.append(path)
    if removed:
        try:
            fsync_directory(removed[0].parent, error_cls=error_cls)
        except SystemError_ as e:
            out.update(dict.fromkeys(removed, e))
            return out
    out.update(dict.fromkeys(removed, True))
    return out


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete temp files that an interrupted :func:`atomic_write` left in ``directory``.

    Only names of the form ``.<name>.<random>.tmp`` are touched. Run it at startup, before writers.

    Returns:
        The removed paths.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    except OSError as e:
        raise CdiError(f"cannot list {directory}: {e.strerror}") from e
    for entry in entries:
        if (
            entry.name.startswith(".")
            and entry.name.endswith(_TMP_SUFFIX)
            and entry.is_file(follow_symlinks=False)
        ):
            _unlink_quietly(entry.path)
            removed.append(Path(entry.path))
    return removed


def _dump(doc: dict[str, Any]) -> str:
    import yaml

    # libyaml's emitter is ~10x faster than the pure-Python one; both produce the same safe YAML.
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False)
    return text


@functools.lru_cache(maxsize=16)
def _edits_block(edits: ContainerEdits) -> str:
    return _dump({"containerEdits": edits.to_dict()})


@functools.lru_cache(maxsize=16)
def _top_block(cdi_version: str, kind: str, annotations: tuple[tuple[str, str], ...]) -> str:
    top: dict[str, Any] = {"cdiVersion": cdi_version, "kind": kind}
    if annotations:
        top["annotations"] = dict(annotations)
    return _dump(top)


_NAME = "nvdra-device-name"  # stands for the device's name in a cached devices[] entry
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@functools.lru_cache(maxsize=256)
def _device_template(edits: ContainerEdits) -> tuple[str, str]:
    """A ``devices[]`` entry with these edits, as the YAML before and after its name."""
    text = _dump({"devices": [{"name": _NAME, "containerEdits": edits.to_dict()}]})
    before, after = text.removeprefix("devices:\n").split(_NAME, 1)
    return before, after


def _plain(name: str) -> bool:
    """Whether YAML writes ``name`` as it is (a plain scalar that reads back as a string), as it does
    the stand-in name of :func:`_device_template`."""
    import yaml

    if not _PLAIN_NAME.match(name):
        return False
    resolvers = yaml.resolver.Resolver.yaml_implicit_resolvers.get(name[0], [])
    return not any(regexp.match(name) for _, regexp in resolvers)


def _device_entry(device: Device) -> str:
    if device.annotations or not _plain(device.name):
        return _dump({"devices": [device.to_dict()]}).removeprefix("devices:\n")
    before, after = _device_template(device.container_edits)
    return before + device.name + after


def encode_spec(spec: Spec) -> bytes:
    """The spec as a YAML document, keys in CDI's field order.

    Byte-identical to dumping the whole document at once, but put together from cached pieces: the
    spec-level ``containerEdits`` (the driver's common edits, the bulk of every claim spec, the same for
    every claim), the top fields, and each device's entry rendered once per distinct edits with its name
    put in (names that YAML would quote or type are rendered in full).
    """
    if not spec.devices:
        head = spec.to_dict()
        head.pop("containerEdits", None)
        text = "---\n" + _dump(head)
    else:
        text = "---\n" + _top_block(spec.cdi_version, spec.kind, tuple(spec.annotations.items()))
        text += "devices:\n" + "".join(_device_entry(d) for d in spec.devices)
    if not spec.container_edits.is_empty():
        text += _edits_block(spec.container_edits)
    return text.encode()


def _ensure_directory(directory: Path) -> None:
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        return
    except FileNotFoundError:
        try:
            os.makedirs(directory, 0o755, exist_ok=True)
        except OSError as e:
            raise CdiError(f"cannot create CDI directory {directory}: {e.strerror}") from e
    except OSError as e:
        raise CdiError(f"cannot create CDI directory {directory}: {e.strerror}") from e
    fsync_directory(directory.parent)


def write_spec(cdi_root: str | Path, spec: Spec, name: str) -> Path:
    """Write ``spec`` as ``<cdi_root>/<name>.yaml`` atomically, creating ``cdi_root`` if missing.

    Args:
        cdi_root: the CDI spec directory (e.g. ``/var/run/cdi``).
        spec: the spec to write.
        name: file name without extension, e.g. from :func:`~nvdra.cdi.claims.claim_spec_name`.

    Returns:
        The path written.

    Raises:
        CdiError: the name could escape ``cdi_root``, or the directory or file cannot be written.
    """
    root = Path(cdi_root)
    path = root / (check_path_component(name, "CDI spec name") + SPEC_EXTENSION)
    data = encode_spec(spec)
    try:
        atomic_write(path, data, 0o644)
    except CdiError:
        # The directory is made when a write finds it missing (nothing was written then), rather than
        # asked for on every write: one mkdir system call a spec saved.
        if root.is_dir():
            raise
        _ensure_directory(root)
        atomic_write(path, data, 0o644)
    return path


def remove_spec(cdi_root: str | Path, name: str) -> bool:
    """Remove ``<cdi_root>/<name>.yaml`` durably; a missing file is fine.

    Returns:
        True if a spec was removed.

    Raises:
        CdiError: the name could escape ``cdi_root`` or the removal failed.
    """
    return remove_durably(Path(cdi_root) / (check_path_component(name, "CDI spec name") + SPEC_EXTENSION))


def write_specs(cdi_root: str | Path, specs: Mapping[str, Spec]) -> dict[str, SystemError_ | None]:
    """:func:`write_spec` for many specs (by file name without extension), made durable together
    (:func:`atomic_write_many`).

    Returns:
        Each name's failure, or None once its spec is durably in place.

    Raises:
        CdiError: ``cdi_root`` cannot be created.
    """
    root = Path(cdi_root)
    out: dict[str, SystemError_ | None] = {}
    files: dict[str, bytes] = {}
    for name, spec in specs.items():
        try:
            files[check_path_component(name, "CDI spec name") + SPEC_EXTENSION] = encode_spec(spec)
        except CdiError as e:
            out[name] = e
    _ensure_directory(root)
    for file, failure in atomic_write_many(root, files, 0o644).items():
        out[file.removesuffix(SPEC_EXTENSION)] = failure
    return out


def remove_specs(cdi_root: str | Path, names: Sequence[str]) -> dict[str, SystemError_ | bool]:
    """:func:`remove_spec` for many specs, with one directory fsync after all the unlinks.

    Returns:
        Each name's outcome: True if its spec was removed, False if there was none, or its failure.
    """
    root = Path(cdi_root)
    out: dict[str, SystemError_ | bool] = {}
    paths: dict[Path, str] = {}
    for name in names:
        try:
            paths[root / (check_path_component(name, "CDI spec name") + SPEC_EXTENSION)] = name
        except CdiError as e:
            out[name] = e
    for path, outcome in remove_many_durably(list(paths)).items():
        out[paths[path]] = outcome
    return out


def read_spec(path: str | Path) -> Spec:
    """Load and decode a spec file (YAML or JSON), strictly.

    Raises:
        CdiError: the file cannot be read or parsed, or does not decode as a CDI spec.
    """
    import yaml

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, "rb") as f:
            raw = yaml.load(f, Loader=loader)  # a safe loader (C or Python)
    except OSError as e:
        raise CdiError(f"cannot read CDI spec {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise CdiError(f"CDI spec {path} is not valid YAML/JSON: {e}") from e
    return Spec.from_dict(raw)
