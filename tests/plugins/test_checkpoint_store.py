"""CheckpointStore: another instance's write is seen, our own state is not reloaded; saves in place
through the shadow, the size classes, and loading from the shadow."""

from __future__ import annotations

from pathlib import Path

from nvdra.core.checkpoint import Checkpoint, ClaimState, PreparedClaim, decode_checkpoint, encode_checkpoint
from nvdra.core.faults import arm
from nvdra.plugins.state import CheckpointStore, stored_checkpoint


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


# -- in-place saves through the shadow ---------------------------------------------------------------


def _many(n: int) -> Checkpoint:
    cp = Checkpoint(node_boot_id="b")
    for i in range(n):
        cp = cp.with_claim(_claim(f"{i:04d}"))
    return cp


def _uids(path: Path) -> set[str]:
    return set(decode_checkpoint(path.read_bytes()).claims)


def test_saves_keep_the_file_and_write_the_shadow_first(tmp_path: Path) -> None:
    """After the first save, a save within the size class writes both files in place (same inodes, same
    size), the shadow synced before the file is touched; both then hold the same padded document."""
    path = tmp_path / "checkpoint.json"
    store = CheckpointStore(path, boot_id="b")
    store.save(_many(1))
    inodes = (path.stat().st_ino, store.shadow.stat().st_ino)
    seen: list[tuple[set[str], set[str]]] = []

    def at_shadow(name: str, count: int) -> None:
        seen.append((_uids(store.shadow), _uids(path)))

    arm(("after-checkpoint-shadow", 1), at_shadow)
    try:
        store.save(_many(3))
    finally:
        arm(None, at_shadow)
    assert seen == [({"0000", "0001", "0002"}, {"0000"})]
    assert (path.stat().st_ino, store.shadow.stat().st_ino) == inodes
    assert path.stat().st_size == 4096 and path.read_bytes() == store.shadow.read_bytes()
    assert _uids(path) == {"0000", "0001", "0002"}


def test_the_size_class_grows_and_shrinks_by_replacing_the_file(tmp_path: Path) -> None:
    """Past its class the file is replaced (a new inode) at the next power of two; it stays while the
    checkpoint shrinks to a sixteenth of that, and is replaced by a smaller one below."""
    path = tmp_path / "checkpoint.json"
    store = CheckpointStore(path, boot_id="b")
    store.save(_many(1))
    small = path.stat().st_ino
    store.save(_many(1000))
    big = path.stat()
    assert big.st_ino != small and big.st_size >= 128 * 1024
    assert big.st_size & (big.st_size - 1) == 0  # a power of two
    store.save(_many(200))  # its own class is more than a sixteenth of the file's: kept
    assert path.stat().st_ino == big.st_ino and path.stat().st_size == big.st_size
    store.save(_many(0))
    assert path.stat().st_size == 4096 and store.shadow.stat().st_size == 4096
    assert _uids(path) == set() and path.read_bytes() == store.shadow.read_bytes()


def test_a_file_another_writer_replaced_is_replaced_not_overwritten(tmp_path: Path) -> None:
    """A file of another size (here unpadded, as the upstream conversion writes it) is never written in
    place: the save replaces both files."""
    path = tmp_path / "checkpoint.json"
    store = CheckpointStore(path, boot_id="b")
    store.save(_many(1))
    path.write_bytes(encode_checkpoint(_many(2)))
    store.save(_many(3))
    assert path.stat().st_size == 4096 and _uids(path) == _uids(store.shadow) == {"0000", "0001", "0002"}


def test_loading_falls_back_to_the_shadow_only_when_the_file_is_unusable(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    store = CheckpointStore(path, boot_id="b")
    store.save(_many(2))
    store.shadow.write_bytes(encode_checkpoint(_many(5)))  # a newer shadow beside a good file: unused
    cp, report = store.load()
    assert set(cp.claims) == {"0000", "0001"} and report.recovered_from is None
    torn = path.read_bytes()
    path.write_bytes(
        torn[:100] + bytes(len(torn) - 100)
    )  # the file torn in place: a shadow of another size is older
    cp, report = store.load()
    assert cp.claims == {} and report.recovered_from is None and report.corrupt_moved_to is not None
    store.save(_many(2))
    store.shadow.write_bytes(store.shadow.read_bytes().replace(b'"0001"', b'"0009"'))  # checksum fails
    path.write_bytes(torn[:100] + bytes(len(torn) - 100))
    cp, report = store.load()
    assert cp.claims == {} and report.recovered_from is None
    store.save(_many(3))
    path.write_bytes(torn[:100] + bytes(len(torn) - 100))
    cp, report = store.load()
    assert len(cp.claims) == 3 and report.recovered_from == store.shadow
    assert report.corrupt_moved_to is not None and not path.exists()


def test_stored_checkpoint_reads_what_load_would_use_and_changes_nothing(tmp_path: Path) -> None:
    """What the fabric executor reads before the store loads: the file's claims, the shadow's where the
    file is torn, none after a reboot; the damaged file stays where it is (load repairs it)."""
    path = tmp_path / "checkpoint.json"
    store = CheckpointStore(path, boot_id="b")
    store.save(_many(2))
    assert set(stored_checkpoint(path, "b").claims) == {"0000", "0001"}
    raw = path.read_bytes()
    path.write_bytes(raw[:100] + bytes(len(raw) - 100))
    assert set(stored_checkpoint(path, "b").claims) == {"0000", "0001"}
    assert path.read_bytes() == raw[:100] + bytes(len(raw) - 100)
    assert stored_checkpoint(path, "other-boot").claims == {}
    store.shadow.unlink()
    assert stored_checkpoint(path, "b").claims == {}
