"""The real NVML backend's own cost, without a GPU: PynvmlBackend (nvidia-ml-py, ctypes) over the fake
``libnvidia-ml.so.1`` beside the simulated backend (the floor: the same answers without the C ABI), per
profile: one discovery and one conformance run (mutating checks included). Also the gcc build of the
fake library. On a GPU the library calls add the driver's own time on top of what is printed here.

Run: .venv/bin/python benchmarks/nvml_backends.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pynvml

from nvdra.nvml import (
    PROFILE_NAMES,
    NvmlBackend,
    PynvmlBackend,
    SimulatedNvml,
    discover_inventory,
    make_simulated_driver_root,
    nvml_session,
    run_conformance,
)
from nvdra.nvml._fakelib import build_fake_nvml, install_fake_nvml

REPEAT = 20


def _p50_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _discover(backend: NvmlBackend) -> Callable[[], object]:
    def run() -> object:
        with nvml_session(backend):
            return discover_inventory(backend)

    return run


def _conformance(backend: NvmlBackend) -> Callable[[], object]:
    return lambda: run_conformance(backend, allow_mutation=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="nvdra-bench-nvml-") as tmp:
        t0 = time.perf_counter()
        library = build_fake_nvml(Path(tmp) / "lib")
        print(f"gcc build of the fake libnvidia-ml.so.1: {(time.perf_counter() - t0) * 1000:.0f} ms")
        print(f"{'profile':18} {'discovery sim':>14} {'fake':>9} {'conformance sim':>16} {'fake':>9}")
        for name in PROFILE_NAMES:
            sim = SimulatedNvml(name)
            sim.init()
            root = make_simulated_driver_root(sim, Path(tmp) / name)
            install_fake_nvml(root, sim, library)
            sim.shutdown()
            pynvml.nvmlLib = None  # pynvml holds one library per process: load this root's copy
            pynvml._nvmlGetFunctionPointer_cache = {}
            real = PynvmlBackend(root)
            d_sim, d_real = _p50_ms(_discover(sim)), _p50_ms(_discover(real))
            c_sim, c_real = _p50_ms(_conformance(sim)), _p50_ms(_conformance(real))
            print(f"{name:18} {d_sim:11.2f} ms {d_real:6.2f} ms {c_sim:13.2f} ms {c_real:6.2f} ms")


if __name__ == "__main__":
    main()
