"""The checkpoint on disk: load with repair, save durably.

A kubelet plugin must never crash-loop on its own state file. Loading therefore never raises:

- missing file → empty checkpoint stamped with the current boot id;
- unreadable or corrupt file (bad JSON, checksum mismatch, unknown version) → the file is moved aside
  to ``checkpoint.json.corrupt-<unix time>`` for a human, reported through the returned
  :class:`LoadReport`; the shadow's checkpoint is used where it holds a valid one (a crash tore the
  file mid-write, see below; ``recovered_from``), else an empty one;
- a different boot id → the node rebooted, so every CDI edit, MIG device and vfio binding the old
  entries describe is gone: the entries are discarded (reported) and the checkpoint restamped.

Saving is durable before it returns, and a crash at any point leaves a file that loads:

- the file is padded with spaces (valid JSON) to a size class (4 KiB, doubling), so that most saves keep
  its size and are written *in place*: first into ``checkpoint.json.shadow``, fdatasync, then into
  ``checkpoint.json``, fdatasync. An overwrite of allocated blocks needs no journal commit, no rename and
  no directory fsync: two such writes cost about half of one atomic write (benchmarks/prepare_latency.py);
- a crash in the middle of the in-place write of ``checkpoint.json`` leaves it failing its checksum, its
  size unchanged, and the shadow then holds the whole new content at that size, which loading takes. A
  crash while the shadow is written leaves ``checkpoint.json`` as it was. The shadow is read only when
  ``checkpoint.json`` is unusable;
- a save that changes the size class (the first one, a checkpoint that grew past its class or shrank
  below a sixteenth of it, a file another writer left unpadded) writes the shadow, then replaces
  ``checkpoint.json`` through :func:`nvdra.cdi.atomic_write` (temp file, fsync, rename, directory fsync).
"""

from __future__ import annotations

__all__ = ["CheckpointStore", "LoadReport", "read_boot_id", "shadow_path", "stored_checkpoint"]

import logging
import os
import time
from pathlib import Path

import attrs

from nvdra.cdi import atomic_write, fsync_directory
from nvdra.core.checkpoint import Checkpoint, CheckpointEncoder, PreparedClaim, decode_checkpoint
from nvdra.core.errors import CheckpointError
from nvdra.core.faults import reach

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's boot id (changes on every reboot); "" where the file is unavailable."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@attrs.frozen(kw_only=True)
class LoadReport:
    """What loading found: whether the file existed, was repaired, or was discarded after a reboot."""

    existed: bool
    corrupt_moved_to: Path | None = None
    error: str = ""
    discarded_after_reboot: tuple[str, ...] = ()
    discarded: tuple[PreparedClaim, ...] = ()  # the entries themselves: their effects may outlive a reboot
    recovered_from: Path | None = None  # the shadow, where the unusable file's content came from instead


def _unchanged(path: Path, known: bytes | None) -> bool:
    """Whether ``path`` holds exactly ``known`` (None: no file), in three system calls: open, one read of
    one byte more than ``known``, close. A regular file's read returns fewer bytes than asked only at its
    end, so ``known`` coming back whole is the whole file (``Path.read_bytes`` made eight calls, the
    buffered reader's fstats, isatty ioctl and seek among them, on every driver call)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return known is None
    except OSError:
        return False  # unreadable: load() repairs and reports it
    try:
        return known is not None and os.read(fd, len(known) + 1) == known
    except OSError:
        return False
    finally:
        os.close(fd)


_SIZE_CLASS = 4096


def _size_for(length: int, current: int) -> int:
    """The file size for ``length`` bytes of checkpoint: ``current`` while it holds them and is at most
    16 times their own class (a checkpoint that grows and shrinks by a call's claims, 64 of them in
    ~64 KiB, is not replaced twice a call), else the smallest class (4 KiB, doubling) that holds them."""
    size = max(_SIZE_CLASS, 1 << (length - 1).bit_length())
    return current if size <= current <= 16 * size else size


def _pwrite_all(fd: int, data: bytes) -> None:
    view, offset = memoryview(data), 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)


def _write_shadow(path: Path, padded: bytes) -> None:
    """Replace the shadow's content, durably (it need not be atomic: it is read only when the file itself
    fails its checksum, and that can only happen after the shadow's write has completed)."""
    created = False
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except FileNotFoundError:
            fd, created = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), True
        try:
            _pwrite_all(fd, padded)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if created:
        fsync_directory(path.parent, error_cls=CheckpointError)


def shadow_path(path: Path) -> Path:
    """Where the shadow of the checkpoint at ``path`` lives."""
    return path.with_name(path.name + ".shadow")


def _shadow_checkpoint(shadow: Path, size: int | None) -> Checkpoint | None:
    """The shadow's checkpoint, if it holds a valid one of ``size`` bytes: a write torn in place keeps
    the file's size, and the shadow then has it too (a shadow of another size is older than the file,
    e.g. left by a downgrade, and is not used)."""
    try:
        raw = shadow.read_bytes()
        return decode_checkpoint(raw) if len(raw) == size else None
    except (OSError, CheckpointError):
        return None


@attrs.frozen
class _Stored:
    """What is on disk, decided once for :meth:`CheckpointStore.load` and :func:`stored_checkpoint`."""

    checkpoint: Checkpoint | None  # the file's, when it is usable
    raw: bytes | None = None  # its bytes then
    error: str = ""  # why the file is unusable ("" when it is usable or missing)
    shadow: Checkpoint | None = None  # the same-size shadow's, when the file is unusable


def _read_stored(path: Path) -> _Stored:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _Stored(None)
    except OSError as exc:
        return _Stored(None, error=f"unreadable: {exc}")
    try:
        return _Stored(decode_checkpoint(raw), raw)
    except CheckpointError as exc:
        return _Stored(None, error=str(exc), shadow=_shadow_checkpoint(shadow_path(path), len(raw)))


def _rebooted(cp: Checkpoint, boot_id: str) -> bool:
    return bool(cp.node_boot_id and boot_id and cp.node_boot_id != boot_id)


def stored_checkpoint(path: Path, boot_id: str) -> Checkpoint:
    """The checkpoint :meth:`CheckpointStore.load` would go on with, read without repairing or writing
    anything: the file's, the shadow's where the file was torn, else an empty one (also after a reboot).
    For what runs before the store loads (the fabric executor re-asserts the stored partitions)."""
    stored = _read_stored(path)
    cp = stored.checkpoint if stored.checkpoint is not None else stored.shadow
    return Checkpoint(node_boot_id=boot_id) if cp is None or _rebooted(cp, boot_id) else cp


class CheckpointStore:
    """Owns ``<plugin dir>/checkpoint.json``. Not thread-safe: callers serialise (the driver holds a lock)."""

    def __init__(self, path: Path, *, boot_id: str) -> None:
        self.path = path
        self.boot_id = boot_id
        # The bytes last read or written here. During a rolling update two plugin instances share the
        # file (serialized by a flock); an instance must not act on its stale copy, see reload_if_changed.
        self._known: bytes | None = None
        self._encoder = CheckpointEncoder()  # re-encodes only the entries new since the last save
        self.shadow = shadow_path(path)
        # The size of both files when this store last wrote them (0: unknown, the next save replaces them).
        self._size = 0

    def load(self) -> tuple[Checkpoint, LoadReport]:
        """Read the checkpoint, repairing what cannot be used (see the module docstring)."""
        self._known = None
        self._size = 0  # the next save writes both files whole
        stored = _read_stored(self.path)
        if stored.error:
            cp, report = self._set_aside(stored.error, stored.shadow)
        elif stored.checkpoint is None:
            return Checkpoint(node_boot_id=self.boot_id), LoadReport(existed=False)
        else:
            cp, self._known, report = stored.checkpoint, stored.raw, LoadReport(existed=True)
        if _rebooted(cp, self.boot_id):
            dropped = tuple(sorted(str(c) for c in cp.claims.values()))
            log.warning(
                "node rebooted (boot id %s -> %s): discarding %d checkpointed claims",
                cp.node_boot_id,
                self.boot_id,
                len(dropped),
            )
            self._known = None
            return Checkpoint(node_boot_id=self.boot_id), attrs.evolve(
                report, discarded_after_reboot=dropped, discarded=tuple(cp.claims.values())
            )
        return attrs.evolve(cp, node_boot_id=self.boot_id), report

    def reload_if_changed(self) -> Checkpoint | None:
        """The checkpoint as loaded again if the file differs from what this store last read or wrote.

        None when it is unchanged (one small read). Call it under the lock that serializes writers, at
        the start of each operation: another instance (rolling update) may have written in between.
        """
        if _unchanged(self.path, self._known):
            return None
        cp, _ = self.load()
        return cp

    def save(self, cp: Checkpoint) -> None:
        """Write durably, in place through the shadow or by replacing both files (module docstring).

        Raises:
            CheckpointError: a write failed; the file still loads (the old content, or the shadow's).
        """
        data = self._encoder.encode(cp)
        self._known = None  # unknown until the write has succeeded
        size = _size_for(len(data), self._size)
        padded = data[:-1] + b" " * (size - len(data)) + data[-1:]
        if size != self._size or not self._overwrite(padded):
            _write_shadow(self.shadow, padded)
            atomic_write(self.path, padded, mode=0o600)
            self._size = size
        self._known = padded

    def _overwrite(self, padded: bytes) -> bool:
        """Write ``padded`` over the shadow, then over the file, each synced; False (nothing written) when
        either is not ``len(padded)`` bytes long, e.g. another writer replaced it."""
        fds: list[int] = []
        try:
            for path in (self.shadow, self.path):
                fds.append(os.open(path, os.O_RDWR | os.O_CLOEXEC))
                if os.fstat(fds[-1]).st_size != len(padded):
                    return False
            shadow_fd, fd = fds
            _pwrite_all(shadow_fd, padded)
            os.fdatasync(shadow_fd)
            reach("after-checkpoint-shadow")
            _pwrite_all(fd, padded)
            os.fdatasync(fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CheckpointError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _set_aside(self, why: str, shadow: Checkpoint | None) -> tuple[Checkpoint, LoadReport]:
        """Move the unusable file aside for a human; go on with ``shadow`` (the shadow's checkpoint, where
        the file was torn by a crash in its in-place write), else with an empty one."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        target: Path | None = aside
        try:
            self.path.rename(aside)
        except OSError as exc:
            log.error("checkpoint %s is unusable (%s) and could not be moved aside: %s", self.path, why, exc)
            target = None
        going_on = "starting empty" if shadow is None else f"using {self.shadow}, written just before it"
        if target is not None:
            log.error("checkpoint %s is unusable (%s); moved to %s, %s", self.path, why, target, going_on)
        report = LoadReport(
            existed=True,
            corrupt_moved_to=target,
            error=why,
            recovered_from=None if shadow is None else self.shadow,
        )
        return shadow if shadow is not None else Checkpoint(node_boot_id=self.boot_id), report
