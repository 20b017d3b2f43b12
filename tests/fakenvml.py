"""The fake libnvidia-ml.so.1 for tests: built once per test process with gcc, installed per driver root.

Shared by tests/nvml (conformance of the real backend) and the plugin start-up tests. pynvml keeps
one loaded library per process; :func:`fresh_pynvml` lets a test load its own driver root's copy the
way a fresh plugin process would.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from nvdra.nvml import NodeProfile, SimulatedNvml, make_simulated_driver_root
from nvdra.nvml._fakelib import build_fake_nvml, install_fake_nvml


@functools.cache
def fake_nvml_library(omit: tuple[str, ...] = ()) -> Path:
    """The fake library, compiled once per process (per set of omitted entry points)."""
    out = Path(tempfile.mkdtemp(prefix="nvdra-fake-nvml-"))
    atexit.register(shutil.rmtree, out, True)
    return build_fake_nvml(out, omit=omit)


def fake_driver_root(
    root: Path,
    node: SimulatedNvml | NodeProfile | str,
    *,
    omit: tuple[str, ...] = (),
    fabric_version: int = 3,
    faults: Iterable[tuple[str, int]] = (),
) -> Path:
    """A generated driver root whose ``libnvidia-ml.so.1`` is the fake library, fed by ``node``."""
    backend = node if isinstance(node, SimulatedNvml) else SimulatedNvml(node)
    if not isinstance(node, SimulatedNvml):
        backend.init()
    make_simulated_driver_root(backend, root)
    install_fake_nvml(root, backend, fake_nvml_library(omit), fabric_version=fabric_version, faults=faults)
    return root


def fresh_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the library pynvml loaded earlier in this process (restored after the test)."""
    import pynvml

    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
