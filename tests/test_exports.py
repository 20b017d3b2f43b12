"""Every package's public surface is explicit: __all__ lists importable public names only."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "nvdra"
PACKAGES = [
    "nvdra",
    "nvdra.alloc",
    "nvdra.cdi",
    "nvdra.core.config",
    "nvdra.core.devices",
    "nvdra.core.errors",
    "nvdra.core.featuregates",
    "nvdra.fabric",
    "nvdra.imex",
    "nvdra.kubeletplugin",
    "nvdra.nvml",
]
DATA_DIRS = {"profiles", "protos", "fakelib", "crds", "__pycache__", "_proto"}


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_public_and_importable(name: str) -> None:
    """__all__ names only public symbols, without repeats, and each resolves (ruff RUF022 keeps it sorted)."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported))
    assert not [n for n in exported if n.startswith("_") and n != "__version__"]
    assert all(hasattr(module, n) for n in exported)


def test_readme_toolkit_example_names_exist() -> None:
    """The names the README's driver-author example imports are exported by the toolkit."""
    toolkit = importlib.import_module("nvdra.kubeletplugin")
    for n in (
        "DriverResources",
        "KubernetesKubeApi",
        "Pool",
        "PreparedDevice",
        "PrepareResult",
        "ResourceSlicePublisher",
        "Slice",
        "start",
        "FakeKube",
        "ApiServer",
        "KubeletClient",
    ):
        assert n in toolkit.__all__


def test_every_package_says_what_it_is_for() -> None:
    """Every directory of Python code under src/nvdra is a package whose __init__ has a docstring."""
    missing = []
    for directory in sorted(p for p in SRC.rglob("*") if p.is_dir() and p.name not in DATA_DIRS):
        if not any(directory.glob("*.py")):
            continue
        init = directory / "__init__.py"
        if not init.exists() or ast.get_docstring(ast.parse(init.read_text())) is None:
            missing.append(str(directory.relative_to(SRC)))
    assert missing == []


def test_every_module_declares_its_public_names() -> None:
    """Each non-private module of the library has an __all__ (the docs reference is built from it)."""
    without = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name.startswith("_") or "_proto" in path.parts or "fakelib" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        names = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        }
        if "__all__" not in names:
            without.append(str(path.relative_to(SRC)))
    assert without == []
