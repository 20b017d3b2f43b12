"""The checkpoint on disk: load with repair, save atomically.

A kubelet plugin must never crash-loop on its own state file. Loading therefore never raises:

- missing file → empty checkpoint stamped with the current boot id;
- unreadable or corrupt file (bad JSON, checksum mismatch, unknown version) → the file is moved aside
  to ``checkpoint.json.corrupt-<unix time>`` for a human, reported through the returned
  :class:`LoadReport`, and an empty checkpoint is used;
- a different boot id → the node rebooted, so every CDI edit, MIG device and vfio binding the old
  entries describe is gone: the entries are discarded (reported) and the checkpoint restamped.

Saving goes through :func:`nvdra.cdi.atomic_write` (temp file, fsync, rename, directory fsync).
"""

from __future__ import annotations

__all__ = ["CheckpointStore", "LoadReport", "read_boot_id"]

import logging
import os
import time
from pathlib import Path

import attrs

from nvdra.cdi import atomic_write
from nvdra.core.checkpoint import Checkpoint, CheckpointEncoder, PreparedClaim, decode_checkpoint
from nvdra.core.errors import CheckpointError

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


class CheckpointStore:
    """Owns ``<plugin dir>/checkpoint.json``. Not thread-safe: callers serialise (the driver holds a lock)."""

    def __init__(self, path: Path, *, boot_id: str) -> None:
        self.path = path
        self.boot_id = boot_id
        # The bytes last read or written here. During a rolling update two plugin instances share the
        # file (serialized by a flock); an instance must not act on its stale copy, see reload_if_changed.
        self._known: bytes | None = None
        self._encoder = CheckpointEncoder()  # re-encodes only the entries new since the last save

    def load(self) -> tuple[Checkpoint, LoadReport]:
        """Read the checkpoint, repairing what cannot be used (see the module docstring)."""
        self._known = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Checkpoint(node_boot_id=self.boot_id), LoadReport(existed=False)
        except OSError as exc:
            return self._set_aside(f"unreadable: {exc}")
        try:
            cp = decode_checkpoint(raw)
        except CheckpointError as exc:
            return self._set_aside(str(exc))
        if cp.node_boot_id and self.boot_id and cp.node_boot_id != self.boot_id:
            dropped = tuple(sorted(str(c) for c in cp.claims.values()))
            log.warning(
                "node rebooted (boot id %s -> %s): discarding %d checkpointed claims",
                cp.node_boot_id,
                self.boot_id,
                len(dropped),
            )
            return Checkpoint(node_boot_id=self.boot_id), LoadReport(
                existed=True, discarded_after_reboot=dropped, discarded=tuple(cp.claims.values())
            )
        self._known = raw
        return attrs.evolve(cp, node_boot_id=self.boot_id), LoadReport(existed=True)

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
        """Write atomically and durably. Raises CdiError/OSError-derived errors from the writer."""
        data = self._encoder.encode(cp)
        self._known = None  # unknown until the write has succeeded
        atomic_write(self.path, data, mode=0o600)
        self._known = data

    def _set_aside(self, why: str) -> tuple[Checkpoint, LoadReport]:
        target: Path | None = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        assert target is not None
        try:
            self.path.rename(target)
        except OSError as exc:
            log.error("checkpoint %s is unusable (%s) and could not be moved aside: %s", self.path, why, exc)
            target = None
        else:
            log.error("checkpoint %s is unusable (%s); moved to %s, starting empty", self.path, why, target)
        return Checkpoint(node_boot_id=self.boot_id), LoadReport(
            existed=True, corrupt_moved_to=target, error=why
        )
