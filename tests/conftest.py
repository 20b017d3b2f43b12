"""Test tiers: ``pytest -m "not slow" -n 4`` is the inner loop (~40 s on 2 cores); CI runs everything.

Whole areas are slow by nature and are marked here, so no test in them can be forgotten: the crash,
restart, fuzz and state-machine suites (tests/reliability), the end-to-end runs of the real console
scripts as subprocesses, the chart's schema matrix and the demo on every profile. Single slow tests
elsewhere carry ``@pytest.mark.slow`` themselves.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SLOW = (
    TESTS / "reliability",
    TESTS / "plugins" / "test_console_script.py",
    TESTS / "computedomain" / "test_e2e.py",
    # every chart rendering validated against five Kubernetes releases' OpenAPI schemas (~30 s)
    TESTS / "deploy" / "test_chart_render.py",
    # the demo on every profile, and plugins that sit out health quiet periods
    TESTS / "plugins" / "test_demo.py",
    TESTS / "health" / "test_plugin_health.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under a slow area ``slow``."""
    for item in items:
        path = Path(str(item.path))
        if any(path == area or area in path.parents for area in SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for unix sockets: pytest's ``tmp_path`` (longer still under pytest-xdist) can
    exceed the 107-byte socket path limit."""
    with tempfile.TemporaryDirectory(prefix="nvdra-") as tmp:
        yield Path(tmp)
