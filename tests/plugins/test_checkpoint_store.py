"""CheckpointStore.reload_if_changed: another instance's write is seen, our own state is not reloaded."""

from __future__ import annotations

from pathlib import Path

from nvdra.core.checkpoint import Checkpoint, ClaimState, PreparedClaim
from nvdra.plugins.state import CheckpointStore


def _claim(uid: str) -> PreparedClaim:
    return PreparedClaim(uid=uid, namespace="ns", name=f"c-{uid}", state=ClaimState.PREPARE_COMPLETED)


def test_unchanged_after_own_save_and_load(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoint.json", boot_id="b")
    assert store.reload_if_changed() is None  # no file, none known
    store.save(Checkpoint(node_boot_id="b").with_claim(_claim("a")))
    assert store.reload_if_changed() is None
    store.load()
    assert store.reload_if_changed() is None


def test_another_writer_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    mine, other = CheckpointStore(path, boot_id="b"), CheckpointStore(path, boot_id="b")
    mine.save(Checkpoint(node_boot_id="b").with_claim(_claim("a")))
    other.save(Checkpoint(node_boot_id="b").with_claim(_claim("a")).with_claim(_claim("b")))
    reloaded = mine.reload_if_changed()
    assert reloaded is not None and set(reloaded.claims) == {"a", "b"}
    assert mine.reload_if_changed() is None


def test_a_shorter_or_longer_file_with_our_prefix_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    store = CheckpointStore(path, boot_id="b")
    store.save(Checkpoint(node_boot_id="b").with_claim(_claim("a")))
    ours = path.read_bytes()
    path.write_bytes(ours + b" ")  # same bytes and one more: not what we wrote
    assert store.reload_if_changed() is not None
    store.save(Checkpoint(node_boot_id="b").with_claim(_claim("a")))
    path.write_bytes(ours[:-1])
    assert store.reload_if_changed() is not None


def test_a_removed_file_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    store = CheckpointStore(path, boot_id="b")
    store.save(Checkpoint(node_boot_id="b").with_claim(_claim("a")))
    path.unlink()
    reloaded = store.reload_if_changed()
    assert reloaded is not None and not reloaded.claims
    assert store.reload_if_changed() is None  # still no file, and that is what we know now
