"""Run every benchmark and write one JSON summary (and, with --plot, the figure of docs/performance.md).

Parts:
- ``plugin_bench``: per claim kind (full GPU, TimeSlicing-shared GPU, dynamic MIG slice, fabric
  partition) the prepare+unprepare pair p50/p99 over the real sockets beside the contract's floor
  measured in the same run, start → registered and → slices visible, idle RSS; throughput with N
  concurrent kubelet callers; RSS over 10,000 cycles;
- ResourceSlice rendering and publishing (into the API store, validated) for the largest profiles;
- the existing benchmark scripts, run as they are and their output kept verbatim:
  ``prepare_latency.py``, ``batch.py`` (1/8/64 claims per call, 1/8 callers, claims/s beside the floor),
  ``startup.py`` (start → registered / slices visible, imports before registration, idle RSS of both
  plugins and the controller), ``many_nodes.py`` (10,000 claims across 100 simulated nodes),
  ``fabric_planner.py`` (partition planner), ``allocation.py``
  (allocator), ``dynamic_mig.py``, ``computedomain.py``.

Usage: python benchmarks/run_all.py --out bench.json [--plot docs/performance.png] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import plugin_bench  # noqa: E402

from nvdra.core.featuregates import parse_feature_gates  # noqa: E402
from nvdra.kubeletplugin import FakeKube  # noqa: E402
from nvdra.tool.devices import driver_resources, simulated_inventory, slice_objects  # noqa: E402

RENDER_CASES = [
    ("dgx-h100", "DynamicMIG=true"),
    ("dgx-h100", "FabricTopologySupport=true"),
    ("hgx-h200", "FabricTopologySupport=true"),
    ("gb200-nvl72-tray", ""),
    ("dgx-a100", ""),
]


def render_and_publish(repeat: int = 20) -> list[dict[str, Any]]:
    """Render the desired slices and create them in a FakeKube (which validates each object)."""
    rows = []
    for profile, gates in RENDER_CASES:
        inventory = simulated_inventory(profile)
        parsed = parse_feature_gates(gates)
        render, publish = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            objects = slice_objects(
                driver_resources(inventory, "n1", parsed), driver="gpu.nvidia.com", node_name="n1"
            )
            t1 = time.perf_counter()
            kube = FakeKube()
            for obj in objects:
                kube.create_resource_slice(obj)
            publish.append(time.perf_counter() - t1)
            render.append(t1 - t0)
        rows.append(
            {
                "profile": profile,
                "gates": gates,
                "slices": len(objects),
                "devices": sum(len(o["spec"].get("devices", [])) for o in objects),
                "render_p50_ms": statistics.median(render) * 1000,
                "publish_p50_ms": statistics.median(publish) * 1000,
            }
        )
    return rows


def nvl72_rack(repeat: int = 7) -> dict[str, Any]:
    """A GB200 NVL72 rack's DynamicMIG devices: 18 compute trays of 4 GPUs, rendered and created in one
    FakeKube (issue 16's goal: under 200 ms for the rack)."""
    inventory = simulated_inventory("gb200-nvl72-tray")
    gates = parse_feature_gates("DynamicMIG=true")
    times, devices = [], 0
    for _ in range(repeat):
        kube, devices = FakeKube(), 0
        t0 = time.perf_counter()
        for tray in range(18):
            node = f"tray-{tray}"
            for obj in slice_objects(
                driver_resources(inventory, node, gates), driver="gpu.nvidia.com", node_name=node
            ):
                kube.create_resource_slice(obj)
                devices += len(obj["spec"].get("devices", []))
        times.append(time.perf_counter() - t0)
    return {
        "trays": 18,
        "devices": devices,
        "p50_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
    }


def script(name: str, *args: str) -> dict[str, Any]:
    """Run one existing benchmark script; keep its output."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(HERE / name), *args], capture_output=True, text=True, check=False, timeout=1800
    )
    return {
        "script": name,
        "args": list(args),
        "returncode": done.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "output": done.stdout.strip().splitlines(),
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    """Pair p50 beside its floor per claim kind, and throughput per number of callers (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["latency"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    xs = range(len(rows))
    left.bar([x - 0.2 for x in xs], [r["pair_p50_ms"] for r in rows], 0.4, label="nvdra p50")
    left.bar([x + 0.2 for x in xs], [r["floor_p50_ms"] for r in rows], 0.4, label="floor p50")
    left.set_xticks(list(xs), [r["scenario"].split(" (")[0] for r in rows], fontsize=8)
    left.set_ylabel("prepare+unprepare pair (ms)")
    left.legend(fontsize=8)
    tput = summary["throughput"]
    right.plot([t["callers"] for t in tput], [t["pairs_per_s"] for t in tput], marker="o")
    right.set_xlabel("concurrent kubelet callers")
    right.set_ylabel("pairs / s")
    right.set_ylim(bottom=0)
    fig.suptitle("nvdra-gpu-plugin, simulated nodes, 2 cores, no GPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)


def main() -> None:
    """Run everything; write the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--plot", help="write the PNG figure here (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="fewer pairs, 2,000 cycles, smaller CD sizes")
    args = parser.parse_args()
    pairs, cycles = (100, 2000) if args.quick else (500, 10_000)
    summary: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "gpu": "none (simulated NVML)",
        },
        "latency": [plugin_bench.latency(name, pairs, 50) for name in plugin_bench.SCENARIOS],
        "throughput": plugin_bench.throughput([1, 2, 4, 8], per_caller=100 if args.quick else 200),
        "memory": plugin_bench.memory(cycles),
        "slices": render_and_publish(),
        "nvl72_dynamic_mig_rack": nvl72_rack(),
    }
    summary["scripts"] = [
        script("prepare_latency.py", "--pairs", str(pairs)),
        script("batch.py", "--rounds", "10" if args.quick else "40"),
        script("startup.py", "--runs", "3" if args.quick else "7"),
        script("many_nodes.py", *(["--nodes", "20", "--claims", "2000"] if args.quick else [])),
        script("fabric_planner.py", *(["--decisions", "500", "--arrivals", "3000"] if args.quick else [])),
        script("allocation.py"),
        script("dynamic_mig.py"),
        script("computedomain.py", *(["2", "18", "72"] if args.quick else [])),
        script("computedomain.py", "idle", "100", "10" if args.quick else "30"),
    ]
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "scripts"}, indent=1))
    for s in summary["scripts"]:
        print(f"\n== {s['script']} (rc {s['returncode']}, {s['seconds']} s)")
        print("\n".join(s["output"]))
    if args.plot:
        plot(summary, Path(args.plot))


if __name__ == "__main__":
    main()
