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

import contextlib
import functools
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from nvdra.cdi.claims import SPEC_EXTENSION
from nvdra.cdi.names import check_path_component
from nvdra.cdi.spec import ContainerEdits, Device, Spec
from nvdra.core.errors import CdiError, SystemError_
from nvdra.core.faults import reach

__all__ = [
    "atomic_write",
    "encode_spec",
    "fsync_directory",
    "read_spec",
    "remove_durably",
    "remove_spec",
    "remove_stale_temp_files",
    "write_spec",
]

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
    target = Path(path)
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=directory)
    except OSError as e:
        raise error_cls(f"cannot create a temp file for {target}: {e.strerror}") from e
    try:
        try:
            if mode != 0o600:  # mkstemp creates 0600
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
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
    _ensure_directory(root)
    atomic_write(path, encode_spec(spec), 0o644)
    return path


def remove_spec(cdi_root: str | Path, name: str) -> bool:
    """Remove ``<cdi_root>/<name>.yaml`` durably; a missing file is fine.

    Returns:
        True if a spec was removed.

    Raises:
        CdiError: the name could escape ``cdi_root`` or the removal failed.
    """
    return remove_durably(Path(cdi_root) / (check_path_component(name, "CDI spec name") + SPEC_EXTENSION))


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
