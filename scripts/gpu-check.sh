#!/usr/bin/env bash
# Read-only checks of the real NVML backend on a GPU machine (changes no GPU setting: no MIG mode,
# MIG instances, compute mode or persistence). Needs nvidia-ml-py, attrs and PyYAML; nvdra from src/
# (the GPU plugin's start-up check also needs the plugin's dependencies: pip install .).
# NVDRA_GPU_TEST_DRIVER_ROOT=<generated root with the fake library> runs it all without a GPU.
# Usage: scripts/gpu-check.sh [OUTDIR]
set -u
out="${1:-/tmp/nvdra-gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# The driver root to load libnvidia-ml.so.1 from (as --nvidia-driver-root); empty = the system loader.
if [ -z "${NVDRA_GPU_TEST_DRIVER_ROOT+set}" ] && [ -d /usr/local/nvidia ]; then
  export NVDRA_GPU_TEST_DRIVER_ROOT=/usr/local/nvidia
fi
nvidia-smi -L > "$out/nvidia-smi-L.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider -m gpu tests/nvml/test_hardware.py -o addopts="" 2>&1 | tee "$out/pytest-gpu.txt"
python3 - <<'PY' 2>&1 | tee "$out/events-and-slice.txt"
import json, os, time
from nvdra.core.errors import NvmlError
from nvdra.core.resourceslice import render_gpu_devices
from nvdra.nvml import PynvmlBackend, discover_inventory
from nvdra.nvml.health import HealthMonitor

b = PynvmlBackend(driver_root=os.environ.get("NVDRA_GPU_TEST_DRIVER_ROOT") or None)
b.init()
inv = discover_inventory(b)
print("devices:", json.dumps(render_gpu_devices(inv), indent=1))
for i in range(b.device_count()):
    print(f"gpu {i}: supported event mask 0x{b.supported_event_types(i):x}")
events = []
mon = HealthMonitor(b, [(g.index, g.uuid) for g in inv.gpus], events.append, wait_ms=500, probe_interval=1.0)
mon.start()
time.sleep(2.0)
mon.stop()
print("events seen in 2 s of monitoring (expect none on a healthy GPU):", events)
b.shutdown()
PY
