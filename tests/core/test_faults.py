"""Fault points: parsing NVDRA_FAULT_POINT, dying at exactly the armed point, and every point being used."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nvdra.core.faults import FAULT_ENV, FAULT_POINTS, arm, armed, parse_fault, reach

SRC = Path(__file__).resolve().parents[2] / "src" / "nvdra"


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("after-undo", ("after-undo", 1)),
        ("after-undo:3", ("after-undo", 3)),
        (" after-undo:1 ", ("after-undo", 1)),
        ("", None),
        ("after-undo:0", None),
        ("after-undo:x", None),
        (":2", None),
    ],
)
def test_parse_fault(value: str, parsed: tuple[str, int] | None) -> None:
    """``name`` and ``name:N`` (N >= 1) arm a point; anything else arms nothing."""
    assert parse_fault(value) == parsed


def test_unarmed_reach_returns() -> None:
    """In the test process nothing is armed: reaching any point is a no-op."""
    point = armed()
    assert point is None or point[0] not in FAULT_POINTS
    for name in FAULT_POINTS:
        reach(name)


def test_an_armed_point_calls_its_action_at_the_nth_reach_only() -> None:
    """In-process: ``arm`` with an action of the test's own; other points and earlier reaches pass."""
    calls: list[tuple[str, int]] = []
    arm(("after-undo", 2), lambda name, seen: calls.append((name, seen)))
    try:
        reach("after-undo")
        reach("after-cdi-written")
        assert calls == []
        reach("after-undo")
        assert calls == [("after-undo", 2)]
    finally:
        arm(None, lambda name, seen: None)
    reach("after-undo")
    assert calls == [("after-undo", 2)] and armed() is None


def test_core_reads_no_environment() -> None:
    """Arming is the process edge's job: core/faults.py touches neither os.environ nor signals."""
    text = (SRC / "core" / "faults.py").read_text()
    assert "os.environ" not in text and "import os" not in text and "signal" not in text


def run_reaching(armed_at: str, names: list[str]) -> subprocess.CompletedProcess[str]:
    """A child process with ``armed_at`` armed that reaches ``names`` in order, printing each first."""
    code = (
        "from nvdra.core.faults import reach\nfrom nvdra.plugins.faults import arm_from_environment\n"
        "arm_from_environment()\n"
        f"for n in {names!r}:\n    print(n, flush=True)\n    reach(n)\nprint('done', flush=True)\n"
    )
    env = {**os.environ, FAULT_ENV: armed_at}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_nth_reach_kills_the_process() -> None:
    """``after-undo:2`` passes the first after-undo and other points, and dies of SIGKILL at the second."""
    done = run_reaching(
        "after-undo:2", ["after-undo", "after-cdi-written", "after-undo", "after-cdi-removed"]
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["after-undo", "after-cdi-written", "after-undo"]
    assert "fault point 'after-undo' reached (2)" in done.stderr


def test_an_unreached_point_lets_the_process_finish() -> None:
    """Armed at a point the code never reaches, the process runs to its end."""
    done = run_reaching("after-fm-activated", ["after-undo"])
    assert done.returncode == 0 and done.stdout.split() == ["after-undo", "done"]


def test_every_point_is_reached_somewhere_and_every_reach_is_declared() -> None:
    """The names in ``reach("…")`` calls across the source are exactly FAULT_POINTS."""
    used: set[str] = set()
    for path in SRC.rglob("*.py"):
        used |= set(re.findall(r'\breach\("([a-z0-9-]+)"\)', path.read_text()))
    assert used == set(FAULT_POINTS)
