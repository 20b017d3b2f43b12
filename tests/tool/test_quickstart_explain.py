"""Every quickstart spec names the simulated profile (and gates) it needs in its first lines, and the
allocator gives every pod in it its devices on that profile (``nvdra explain``, exit 0)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from nvdra.nvml import PROFILE_NAMES
from nvdra.tool.cli import main

SPECS = sorted((Path(__file__).resolve().parents[2] / "demo" / "specs" / "quickstart").glob("*.yaml"))


def header(path: Path) -> dict[str, str]:
    """The ``# nvdra-KEY: value`` lines at the top of a spec."""
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"# nvdra-([a-z-]+): (.*)$", line)
        if not match:
            break
        out[match.group(1)] = match.group(2).strip()
    return out


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_spec_allocates_on_the_profile_it_names(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = header(spec)
    assert found.get("profile") in PROFILE_NAMES, f"{spec.name}: first line must be # nvdra-profile: NAME"
    for pair in filter(None, found.get("env", "").split(",")):
        key, _, value = pair.partition("=")
        monkeypatch.setenv(key, value)
    args = ["explain", str(spec), "--simulate", found["profile"]]
    if found.get("feature-gates"):
        args += ["--feature-gates", found["feature-gates"]]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "NO ALLOCATION" not in result.output
    assert "note:" not in result.output  # every claim and template the pods name is in the file
