"""Directory fsyncs of concurrent writers are shared (group commit), never skipped."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nvdra.cdi import writer
from nvdra.core.errors import CdiError, SystemError_


class _Fsyncs:
    """Stands in for the directory fsync: the first one waits for ``release``; ``fail_first`` fails it."""

    def __init__(self, fail_first: bool = False) -> None:
        self.count = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first

    def __call__(self, directory: str | Path, error_cls: type[SystemError_]) -> None:
        self.count += 1
        if self.count == 1:
            self.entered.set()
            assert self.release.wait(10)
            if self.fail_first:
                raise error_cls(f"cannot fsync directory {directory}: EIO")


def _race(tmp_path: Path, fsyncs: _Fsyncs, waiters: int) -> list[BaseException | None]:
    outcome: list[BaseException | None] = [None] * (waiters + 1)

    def call(i: int) -> None:
        try:
            writer.fsync_directory(tmp_path)
        except CdiError as exc:
            outcome[i] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert fsyncs.entered.wait(10)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, waiters + 1)]
    for t in rest:
        t.start()
    sync = writer._DIR_SYNCS[str(tmp_path)]
    while sync.issued < waiters + 1:  # every caller has its ticket
        threading.Event().wait(0.002)
    fsyncs.release.set()
    for t in [first, *rest]:
        t.join(10)
    return outcome


def test_callers_waiting_on_a_running_fsync_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight callers arrive while one fsync runs: two fsyncs in all, and the directory is forgotten."""
    fsyncs = _Fsyncs()
    monkeypatch.setattr(writer, "_fsync_directory_once", fsyncs)
    assert _race(tmp_path, fsyncs, 8) == [None] * 9
    assert fsyncs.count == 2
    assert str(tmp_path) not in writer._DIR_SYNCS


def test_a_failed_fsync_is_its_callers_error_and_the_others_sync_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure is reported to the caller whose fsync failed; the waiters are covered by a new one."""
    fsyncs = _Fsyncs(fail_first=True)
    monkeypatch.setattr(writer, "_fsync_directory_once", fsyncs)
    outcome = _race(tmp_path, fsyncs, 3)
    assert isinstance(outcome[0], CdiError) and "EIO" in str(outcome[0])
    assert outcome[1:] == [None] * 3
    assert fsyncs.count == 2


def test_a_lone_caller_syncs_the_real_directory(tmp_path: Path) -> None:
    """Without contention every call is one real fsync; a missing directory is a CdiError naming it."""
    writer.fsync_directory(tmp_path)
    with pytest.raises(CdiError, match="missing"):
        writer.fsync_directory(tmp_path / "missing")
