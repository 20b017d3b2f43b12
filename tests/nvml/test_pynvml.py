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


def test_one_list_of_library_directories() -> None:
    """CDI discovery and the NVML loader search the same directories (nvdra.core.driverroot)."""
    from nvdra.cdi import LIBRARY_DIRS
    from nvdra.core.driverroot import LIBRARY_DIRS as CORE_DIRS

    assert LIBRARY_DIRS is CORE_DIRS
    assert tuple(LIBRARY_SEARCH_DIRS) == ("/", *CORE_DIRS)


class _ShutdownFails(SimulatedNvml):
    """A backend whose shutdown fails, to show the first cause is kept."""

    def shutdown(self) -> None:
        super().shutdown()
        raise NvmlUninitialized("nvmlShutdown: NVML is not initialised")


def test_session_keeps_the_first_cause(caplog: pytest.LogCaptureFixture) -> None:
    """An error inside the session surfaces; the shutdown error is only a note and a log line."""
    from nvdra.nvml import nvml_session

    with pytest.raises(KeyError) as info, nvml_session(_ShutdownFails("pcie-l4")):
        raise KeyError("discovery failed")
    assert info.value.__notes__ == [
        "(while stopping, NVML shutdown also failed: nvmlShutdown: NVML is not initialised)"
    ]
    assert "shutdown after an error failed too" in caplog.text
    with nvml_session(_ShutdownFails("pcie-l4")):
        pass  # a clean end: logged, not raised
    assert "NVML shutdown failed" in caplog.text


def test_session_does_not_shut_down_what_never_started(tmp_path: Path) -> None:
    """An init failure (no library under the root) is the error; no shutdown runs to replace it."""
    from nvdra.nvml import nvml_session

    with (
        pytest.raises(NvmlLibraryNotFound, match="not found under driver root"),
        nvml_session(PynvmlBackend(tmp_path)),
    ):
        raise AssertionError("unreachable: init fails")
