"""PynvmlBackend without a GPU: lazy import, library search under a driver root, error mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nvdra.core.errors import NvmlLibraryNotFound, NvmlUninitialized
from nvdra.nvml import NvmlBackend, PynvmlBackend, SimulatedNvml, load_profile, make_simulated_driver_root
from nvdra.nvml._pynvml import LIBRARY_SEARCH_DIRS, find_nvml_library


def test_import_loads_no_sdk() -> None:
    """Importing nvdra.nvml loads neither pynvml, yaml, grpc, kubernetes nor click."""
    code = (
        "import sys, nvdra.nvml\n"
        "bad = [m for m in ('pynvml', 'yaml', 'grpc', 'kubernetes', 'click') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_both_backends_satisfy_the_protocol() -> None:
    """SimulatedNvml and PynvmlBackend are structural NvmlBackends."""
    assert isinstance(SimulatedNvml("pcie-l4"), NvmlBackend)
    assert isinstance(PynvmlBackend(), NvmlBackend)


def test_calls_before_init_are_uninitialized() -> None:
    """A PynvmlBackend that was never initialised raises UNINITIALIZED, and loads nothing."""
    backend = PynvmlBackend("/nonexistent")
    with pytest.raises(NvmlUninitialized):
        backend.device_count()
    with pytest.raises(NvmlUninitialized):
        backend.shutdown()


def test_missing_library_names_every_path(tmp_path: Path) -> None:
    """Without libnvidia-ml.so.1 under the root, init raises NvmlLibraryNotFound naming each searched path."""
    with pytest.raises(NvmlLibraryNotFound) as info:
        PynvmlBackend(tmp_path).init()
    for d in LIBRARY_SEARCH_DIRS:
        assert str(tmp_path / d.lstrip("/") / "libnvidia-ml.so.1") in str(info.value)
    assert info.value.code == 12


def test_library_found_in_simulated_root(tmp_path: Path) -> None:
    """The search follows the soname link in usr/lib64 of a driver root to the versioned file."""
    root = make_simulated_driver_root(load_profile("pcie-l4"), tmp_path)
    assert find_nvml_library(root) == root / "usr/lib64/libnvidia-ml.so.580.105.08"


def test_absolute_symlinks_stay_inside_the_root(tmp_path: Path) -> None:
    """An absolute soname link is resolved relative to the driver root, not the host."""
    lib = tmp_path / "lib64"
    lib.mkdir()
    (lib / "libnvidia-ml.so.570.1").write_text("x")
    (lib / "libnvidia-ml.so.1").symlink_to("/lib64/libnvidia-ml.so.570.1")
    assert find_nvml_library(tmp_path) == tmp_path / "lib64/libnvidia-ml.so.570.1"


def test_unloadable_library_is_library_not_found(tmp_path: Path) -> None:
    """A file that is not a loadable library maps to NvmlLibraryNotFound, naming the file."""
    root = make_simulated_driver_root(load_profile("pcie-l4"), tmp_path)
    import pynvml

    if pynvml.nvmlLib is not None:
        pytest.skip("a real NVML library is already loaded in this process")
    with pytest.raises(NvmlLibraryNotFound, match=r"libnvidia-ml\.so\.580\.105\.08"):
        PynvmlBackend(root).init()
