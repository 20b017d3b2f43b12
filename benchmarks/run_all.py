"""Run every benchmark and write one JSON summary (and, with --plot, the figure of docs/performance.md).

Parts (``--parts``, default all):
- ``latency``, ``throughput``, ``memory`` (``plugin_bench``): per claim kind (full GPU, TimeSlicing-shared
  GPU, dynamic MIG slice, fabric partition) the prepare+unprepare pair p50/p99 over the real sockets
  beside the contract's floor measured in the same run, start → registered and → slices visible, idle
  RSS; throughput with N concurrent kubelet callers; RSS over 10,000 cycles;
- ``slices``: ResourceSlice rendering and publishing (into the API store, validated) for the largest
  profiles; ``rack``: a GB200 NVL72 rack's DynamicMIG devices (18 trays, 1,872 devices) rendered and
  created in one store, render and create timed apart (issue 16's goal: < 200 ms);
- ``scripts``: the other benchmark scripts, run as they are, their output kept verbatim and their
  ``--out`` JSON where they write one: ``prepare_latency.py``, ``batch.py`` (1/8/64 claims per call,
  1/8 callers, claims/s beside the floor), ``startup.py`` (start → registered / slices visible,
  imports before registration, idle RSS of both plugins and the controller), ``many_nodes.py``
  (10,000 claims across 100 simulated nodes), ``fabric_planner.py``, ``allocation.py``,
  ``dynamic_mig.py``; ``cd``: ``computedomain.py`` (2, 18, 72 and 1,000 nodes to Ready, writes beside
  the O(N) floor; ``--quick``: 2, 18, 72, 300) and its idle request rate.

At the end it prints issue 16's figures as one table (``issue16`` in the JSON), each beside its goal.

Usage: python benchmarks/run_all.py --out bench.json [--plot docs/performance.png] [--quick] [--parts rack,cd]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import plugin_bench  # noqa: E402

from nvdra.core.featuregates import parse_feature_gates  # noqa: E402
from nvdra.kubeletplugin import FakeKube  # noqa: E402
from nvdra.kubeletplugin.publisher import ResourceSlicePublisher  # noqa: E402
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
    FakeKube, which validates each slice as the API server would (issue 16's goal: under 200 ms for the
    rack). Render (devices → slice bodies) and create are timed apart; ``p50_ms`` is their sum."""
    inventory = simulated_inventory("gb200-nvl72-tray")
    gates = parse_feature_gates("DynamicMIG=true")
    totals, renders, creates, devices, slices = [], [], [], 0, 0
    for _ in range(repeat):
        kube, devices, slices, render, create = FakeKube(), 0, 0, 0.0, 0.0
        for tray in range(18):
            node = f"tray-{tray}"
            t0 = time.perf_counter()
            objects = slice_objects(
                driver_resources(inventory, node, gates), driver="gpu.nvidia.com", node_name=node
            )
            t1 = time.perf_counter()
            for obj in objects:
                kube.create_resource_slice(obj)
            create += time.perf_counter() - t1
            render += t1 - t0
            slices += len(objects)
            devices += sum(len(o["spec"].get("devices", [])) for o in objects)
        renders.append(render)
        creates.append(create)
        totals.append(render + create)
    first, resync = nvl72_rack_published(repeat)
    return {
        "trays": 18,
        "slices": slices,
        "devices": devices,
        "p50_ms": statistics.median(totals) * 1000,
        "min_ms": min(totals) * 1000,
        "render_p50_ms": statistics.median(renders) * 1000,
        "create_p50_ms": statistics.median(creates) * 1000,
        "publisher_p50_ms": statistics.median(first) * 1000,
        "publisher_resync_p50_ms": statistics.median(resync) * 1000,
        "load": os.getloadavg()[0],
    }


def nvl72_rack_published(repeat: int) -> tuple[list[float], list[float]]:
    """The same rack through each tray's ``ResourceSlicePublisher``, as the plugin publishes: its
    render, the list of the node's slices, the split into slices within limits, the creates, and the
    check of what the server stored. Seconds per rack for the first publish and for a resync that
    finds nothing changed."""
    inventory = simulated_inventory("gb200-nvl72-tray")
    gates = parse_feature_gates("DynamicMIG=true")
    first, resync = [], []
    for _ in range(repeat):
        kube = FakeKube()
        publishers = []
        for tray in range(18):
            kube.add_node(f"tray-{tray}")
        t0 = time.perf_counter()
        for tray in range(18):
            node = f"tray-{tray}"
            publisher = ResourceSlicePublisher(kube, driver_name="gpu.nvidia.com", node_name=node)
            publisher.update(driver_resources(inventory, node, gates))
            publisher.sync_now()
            publishers.append(publisher)
        t1 = time.perf_counter()
        for tray, publisher in enumerate(publishers):
            publisher.update(driver_resources(inventory, f"tray-{tray}", gates))
            publisher.sync_now()
        resync.append(time.perf_counter() - t1)
        first.append(t1 - t0)
        assert all(p.statistics().creates == 5 and p.statistics().updates == 0 for p in publishers)
    return first, resync


def script(name: str, *args: str, json_out: bool = False) -> dict[str, Any]:
    """Run one existing benchmark script; keep its output (and its ``--out`` JSON with ``json_out``)."""
    with tempfile.TemporaryDirectory(prefix="nvdra-bench-") as tmp:
        out = Path(tmp) / "out.json"
        argv = [*args, "--out", str(out)] if json_out else list(args)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(HERE / name), *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        data = json.loads(out.read_text()) if json_out and out.exists() else None
    return {
        "script": name,
        "args": list(args),
        "returncode": done.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_after": round(os.getloadavg()[0], 1),
        "output": done.stdout.strip().splitlines(),
        "stderr_tail": done.stderr.strip().splitlines()[-5:] if done.returncode else [],
        "data": data,
    }


def _data(summary: dict[str, Any], name: str, first_arg: str | None = None) -> Any:
    """The ``--out`` JSON of one script run (None when it did not run or wrote none)."""
    for s in summary.get("scripts", []):
        if s["script"] == name and (first_arg is None or s["args"][:1] == [first_arg]):
            return s.get("data")
    return None


def issue16_table(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Issue 16's figures, each beside its floor or goal, from whatever parts ran."""
    rows: list[dict[str, str]] = []

    def add(figure: str, value: str, goal: str) -> None:
        rows.append({"figure": figure, "value": value, "goal": goal})

    def latency(latency: list[dict[str, Any]]) -> None:
        for r in latency:
            add(
                f"pair p50, {r['scenario']} (plugin_bench)",
                f"{r['pair_p50_ms']:.2f} ms = {r['ratio_p50']:.2f}x floor {r['floor_p50_ms']:.2f} ms; "
                f"p99/p50 {r['pair_p99_ms'] / r['pair_p50_ms']:.1f}",
                "<= 0.85x floor, p99 <= 2x p50" if r["scenario"].startswith("full") else "-",
            )

    def batch(batch: dict[str, Any]) -> None:
        for b in batch.get("batches", []):
            add(
                f"{b['claims_per_call']} claims in one call (batch.py)",
                f"{b['over_one_claim']:.1f}x one claim, {b['claims_per_s']:.0f} claims/s",
                "64 claims <= 8x one claim" if b["claims_per_call"] == 64 else "-",
            )
        for c in batch.get("callers", []):
            add(
                f"{c['callers']} concurrent callers (batch.py)",
                f"{c.get('over_one_caller', 1.0):.1f}x one caller, {c['claims_per_s']:.0f} claims/s",
                "8 callers <= 4x one" if c["callers"] == 8 else "-",
            )

    def startup(startup: dict[str, Any]) -> None:
        for name, p in startup.get("plugins", {}).items():
            add(
                f"{name} start -> registered / slices visible, RSS (startup.py)",
                f"{p['registered_p50_ms']:.0f} / {p['slices_visible_p50_ms']:.0f} ms, "
                f"{p['rss_idle_mib']:.1f} MiB, "
                f"{p.get('modules_before_serving', p.get('modules_before_registration', '?'))} modules",
                "<= 250 / 500 ms, <= 60 MiB",
            )
        for key, value in startup.items():
            if key.startswith("controller_rss_mib"):
                add(
                    f"CD controller RSS (startup.py{key[len('controller_rss_mib') :]})",
                    f"{value:.1f} MiB",
                    "<= 60 MiB",
                )

    def memory(mem: dict[str, Any]) -> None:
        end = next(v for k, v in mem.items() if k.startswith("rss_after_") and k != "rss_after_1000_mib")
        add(
            f"GPU plugin RSS idle / 1,000 / {mem['cycles']:,} cycles (plugin_bench)",
            f"{mem['rss_idle_mib']:.1f} / {mem['rss_after_1000_mib']:.1f} / {end:.1f} MiB",
            "<= 60 MiB, no growth 1,000 -> 10,000",
        )

    def many(many: dict[str, Any]) -> None:
        add(
            f"{many['claims']:,} claims on {many['nodes']} nodes (many_nodes.py)",
            f"{many['run_s']:.1f} s, {many['claims_per_s']:.0f} claims/s, {many['errors']} errors",
            "no error",
        )

    def rack(rack: dict[str, Any]) -> None:
        add(
            f"NVL72 rack DynamicMIG, {rack['devices']:,} devices in {rack['slices']} slices (run_all)",
            f"p50 {rack['p50_ms']:.0f} ms (render {rack['render_p50_ms']:.0f} + create "
            f"{rack['create_p50_ms']:.0f}), min {rack['min_ms']:.0f} ms; through the plugin's "
            f"publisher {rack['publisher_p50_ms']:.0f} ms, unchanged resync "
            f"{rack['publisher_resync_p50_ms']:.0f} ms; load {rack['load']:.1f}",
            "< 200 ms",
        )

    def cd(cd: dict[str, Any]) -> None:
        for r in cd.get("rows", []):
            add(
                f"{r['nodes']:,}-node ComputeDomain to Ready (computedomain.py)",
                f"{r['ready_s']:.1f} s ({r['ready_cpu_s']:.1f} s CPU, {r['ms_per_node']:.1f} ms/node), "
                f"{r['writes']} writes vs floor {r['floor']}, {r['conflicts']} conflicts",
                "O(N) writes, time printed",
            )

    sections: tuple[tuple[Callable[[Any], None], str, Any], ...] = (
        (latency, "pair latency (plugin_bench)", summary.get("latency")),
        (batch, "batch.py", _data(summary, "batch.py")),
        (startup, "startup.py", _data(summary, "startup.py")),
        (memory, "memory (plugin_bench)", summary.get("memory")),
        (many, "many_nodes.py", _data(summary, "many_nodes.py")),
        (rack, "NVL72 rack", summary.get("nvl72_dynamic_mig_rack")),
        (cd, "computedomain.py", _data(summary, "computedomain.py")),
    )
    for fill, what, data in sections:  # a part that did not run (no data) has no rows
        if not data:
            continue
        # The scripts' JSON belongs to them and may change: a missing key costs its row, not the run.
        try:
            fill(data)
        except (KeyError, TypeError, StopIteration, ZeroDivisionError) as exc:
            add(what, f"? (the output has no {exc!s})", "-")
    return rows


def plot(summary: dict[str, Any], path: Path) -> None:
    """Four panels (PNG): pair p50 beside its floor per claim kind, throughput per number of callers,
    the NVL72 rack's render + create beside the 200 ms goal, and the ComputeDomain's time to Ready and
    writes per node over its size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    (pairs_ax, tput_ax), (rack_ax, cd_ax) = axes
    for ax in axes.flat:
        ax.tick_params(labelsize=8)
    rows = summary.get("latency") or []
    if rows:
        xs = range(len(rows))
        pairs_ax.bar([x - 0.2 for x in xs], [r["pair_p50_ms"] for r in rows], 0.4, label="nvdra p50")
        pairs_ax.bar([x + 0.2 for x in xs], [r["floor_p50_ms"] for r in rows], 0.4, label="floor p50")
        names = [textwrap.fill(r["scenario"].split(" (")[0], 12) for r in rows]
        pairs_ax.set_xticks(list(xs), names, fontsize=7)
        pairs_ax.legend(fontsize=8)
    pairs_ax.set_ylabel("prepare+unprepare pair (ms)", fontsize=8)
    tput = summary.get("throughput") or []
    if tput:
        tput_ax.plot([t["callers"] for t in tput], [t["pairs_per_s"] for t in tput], marker="o")
    tput_ax.set_xlabel("concurrent kubelet callers", fontsize=8)
    tput_ax.set_ylabel("pairs / s", fontsize=8)
    tput_ax.set_ylim(bottom=0)
    rack = summary.get("nvl72_dynamic_mig_rack")
    if rack:
        rack_ax.barh([0], [rack["render_p50_ms"]], label="render (devices → slices)")
        rack_ax.barh(
            [0], [rack["create_p50_ms"]], left=[rack["render_p50_ms"]], label="create (validated store)"
        )
        rack_ax.axvline(200, color="red", linestyle="--", label="goal 200 ms")
        rack_ax.set_yticks([0], [f"NVL72 rack\n{rack['devices']:,} devices"], fontsize=8)
        rack_ax.set_xlim(0, max(220, rack["p50_ms"] * 1.1))
        rack_ax.legend(fontsize=7, loc="lower right")
    rack_ax.set_xlabel("render + publish, p50 (ms)", fontsize=8)
    cd = (_data(summary, "computedomain.py") or {}).get("rows") or []
    if cd:
        nodes = [r["nodes"] for r in cd]
        cd_ax.plot(nodes, [r["ready_s"] for r in cd], marker="o", label="time to Ready (s)")
        cd_ax.plot(nodes, [r["ready_cpu_s"] for r in cd], marker=".", label="CPU time (s)")
        cd_ax.set_xscale("log")
        cd_ax.set_yscale("log")
        writes = cd_ax.twinx()
        writes.plot(
            nodes, [r["writes"] / r["nodes"] for r in cd], color="gray", linestyle=":", label="writes/node"
        )
        writes.plot(
            nodes, [r["floor"] / r["nodes"] for r in cd], color="black", linestyle="--", label="floor/node"
        )
        writes.set_ylabel("API writes per node", fontsize=8)
        writes.tick_params(labelsize=8)
        writes.set_ylim(bottom=0)
        writes.legend(fontsize=7, loc="center right")
        cd_ax.legend(fontsize=7, loc="upper left")
    cd_ax.set_xlabel("ComputeDomain nodes (in-memory API server)", fontsize=8)
    fig.suptitle("nvdra, simulated nodes, 2 cores, no GPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)


PARTS = ("latency", "throughput", "memory", "slices", "rack", "scripts", "cd")


def main() -> None:
    """Run the chosen parts; write the summary; print issue 16's table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--plot", help="write the PNG figure here (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="fewer pairs, 2,000 cycles, smaller CD sizes")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}; known: {', '.join(PARTS)}")
    pairs, cycles = (100, 2000) if args.quick else (500, 10_000)
    summary: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "gpu": "none (simulated NVML)",
            "load_start": os.getloadavg()[0],
        },
        "quick": args.quick,
    }
    if "latency" in parts:
        summary["latency"] = [plugin_bench.latency(name, pairs, 50) for name in plugin_bench.SCENARIOS]
    if "throughput" in parts:
        summary["throughput"] = plugin_bench.throughput([1, 2, 4, 8], per_caller=100 if args.quick else 200)
    if "memory" in parts:
        summary["memory"] = plugin_bench.memory(cycles)
    if "slices" in parts:
        summary["slices"] = render_and_publish(5 if args.quick else 20)
    if "rack" in parts:
        summary["nvl72_dynamic_mig_rack"] = nvl72_rack()
    summary["scripts"] = []
    if "scripts" in parts:
        summary["scripts"] += [
            script("prepare_latency.py", "--pairs", str(pairs)),
            script("batch.py", "--rounds", "10" if args.quick else "40", json_out=True),
            script("startup.py", "--runs", "3" if args.quick else "7", json_out=True),
            script(
                "many_nodes.py", *(["--nodes", "20", "--claims", "2000"] if args.quick else []), json_out=True
            ),
            script(
                "fabric_planner.py", *(["--decisions", "500", "--arrivals", "3000"] if args.quick else [])
            ),
            script("allocation.py"),
            script("dynamic_mig.py"),
        ]
    if "cd" in parts:
        summary["scripts"] += [
            script("computedomain.py", *(["2", "18", "72", "300"] if args.quick else []), json_out=True),
            script("computedomain.py", "idle", "100", "10" if args.quick else "30"),
        ]
    summary["machine"]["load_end"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(summary, indent=2))  # kept even if the table below fails
    summary["issue16"] = issue16_table(summary)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    shown = {k: v for k, v in summary.items() if k not in ("scripts", "issue16")}
    print(json.dumps(shown, indent=1))
    for s in summary["scripts"]:
        print(f"\n== {s['script']} {' '.join(s['args'])} (rc {s['returncode']}, {s['seconds']} s)")
        print("\n".join(s["output"] + s["stderr_tail"]))
    print("\n== issue 16 (figure | nvdra now | goal)")
    for row in summary["issue16"]:
        print(f"{row['figure']:<72} | {row['value']} | {row['goal']}")
    if args.plot:
        plot(summary, Path(args.plot))


if __name__ == "__main__":
    main()
