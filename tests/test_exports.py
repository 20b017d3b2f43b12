"""Every package's public surface is explicit: __all__ lists importable public names only."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["nvdra.core.config", "nvdra.cdi", "nvdra.nvml", "nvdra.kubeletplugin"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_public_and_importable(name: str) -> None:
    """__all__ names only public symbols, without repeats, and each resolves (ruff RUF022 keeps it sorted)."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported))
    assert not [n for n in exported if n.startswith("_")]
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
