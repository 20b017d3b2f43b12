"""docs/cli.md is generated from the commands (every console script, command and option) and the
README's profile list from the profile registry: both fail here when stale."""

from __future__ import annotations

import re
from pathlib import Path

from nvdra.nvml import PROFILE_NAMES
from nvdra.tool.clidoc import SCRIPTS, profile_list, render

REPO = Path(__file__).resolve().parents[2]


def test_cli_page_is_current() -> None:
    page = (REPO / "docs" / "cli.md").read_text()
    assert page == render(), "docs/cli.md is stale: run .venv/bin/python -m nvdra.tool.clidoc docs/cli.md"


def test_cli_page_covers_every_script_and_profile() -> None:
    page = render()
    for script in SCRIPTS:
        assert f"## `{script}`" in page
    for name in PROFILE_NAMES:
        assert f"| `{name}` |" in page
    for command in ("devices", "explain", "validate", "demo", "playground", "partitions"):
        assert f"### `nvdra {command}`" in page
    assert "`--no-headers`" in page and "`--logging-format`" in page


def test_readme_profile_list_is_generated() -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- profiles:begin -->(.*?)<!-- profiles:end -->", readme, re.S)
    assert found, "README.md lost its generated profile list"
    assert found.group(1) == profile_list()
