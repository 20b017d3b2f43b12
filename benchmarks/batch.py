"""Claims per second for batched and concurrent kubelet calls, beside the floor of one claim.

One API server, the real ``nvdra-gpu-plugin --simulate dgx-h100`` process and this process as the
kubelet (as in plugin_bench.py). Every claim is an admin-access claim of one GPU, so eight claims may
hold each of the 8 GPUs at once and a call can carry 64 claims.

- batches: one caller; each round is one NodePrepareResources call with N claims (N = 1, 8, 64: N/8
  claims on each GPU when N >= 8) and one NodeUnprepareResources call with the same claims;
- concurrency: C callers (C = 1, 8), each cycling one-claim prepare+unprepare pairs on its own GPU;
- the floor of one claim, one iteration after each round (``prepare_latency.FloorProbe``: two gRPC round
  trips, the claim GET, four atomic writes and a durable unlink, one after another).

For each row: the round's p50, that p50 over the one-claim round's p50 (the goals: 64 claims at most 8 times,
8 callers at most 4 times), claims prepared+unprepared per second, and the CPU the plugin process and the
API server process spent per claim (user+system, from /proc; the machine is shared, so CPU per claim is
steadier than wall time).

Usage: python benchmarks/batch.py [--rounds 40] [--out batch.json]   (NVDRA_BENCH_CDI_DIR=/dev/shm: the
CDI root on tmpfs, see plugin_bench.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plugin_bench import Node, claim_ref, concurrently, start_up
from prepare_latency import FloorProbe, pct

from nvdra.kubeletplugin import ClaimRef, KubeletClient

GPUS = 8
SCENARIO: dict[str, Any] = {"profile": "dgx-h100", "gates": "", "parameters": None, "admin": True}
SETTLE_S = 3.0  # pause before each concurrency part (see there)


def cpu_s(pid: int) -> float:
    """User+system CPU seconds a process has used so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_trip(plugin: Any, refs: Sequence[ClaimRef]) -> float:
    """One prepare call and one unprepare call with ``refs``; seconds."""
    t0 = time.perf_counter()
    prepared = plugin.prepare(list(refs))
    unprepared = plugin.unprepare(list(refs))
    elapsed = time.perf_counter() - t0
    failed = [uid for uid, res in prepared.items() if res.error] + [uid for uid, e in unprepared.items() if e]
    if failed or len(prepared) != len(refs):
        raise SystemExit(f"{len(failed)} of {len(refs)} claims failed, e.g. {failed[:1]}")
    return elapsed


def batch_refs(size: int, round_no: int) -> list[ClaimRef]:
    """The claims of one call of ``size``: ``size / 8`` per GPU (one on gpu-0 for size 1)."""
    if size == 1:
        return [claim_ref(0, round_no * 8)]
    per_gpu = size // GPUS
    return [claim_ref(g, round_no * 8 + k) for g in range(GPUS) for k in range(per_gpu)]


def main() -> None:
    """Run both parts; print the table; write JSON to --out when given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    total_rounds = args.rounds + args.warmup
    groups = [[f"gpu-{g}"] for g in range(GPUS)]
    summary: dict[str, Any] = {"load_start": os.getloadavg()[0], "batches": [], "callers": []}
    with Node(SCENARIO, groups, total_rounds * 8) as node, KubeletClient(node.reg) as kubelet:
        plugin, _ = start_up(node, kubelet)
        assert node.plugin is not None
        pids = {"plugin": node.plugin.pid, "api": node.api.pid}
        probe = FloorProbe(kubelet, node.reg_sock, node.kubeconfig, node.tmp)
        base = 0.0
        for size in (1, 8, 64):
            times, floors = [], []
            cpu = {"plugin": 0.0, "api": 0.0}
            for r in range(total_rounds):  # each round beside one floor, so both see the same load
                before = {k: cpu_s(pid) for k, pid in pids.items()}
                times.append(round_trip(plugin, batch_refs(size, r)))
                if r >= args.warmup:
                    for k, pid in pids.items():
                        cpu[k] += cpu_s(pid) - before[k]
                floors.append(probe.once(0))
            times, floors = times[args.warmup :], floors[args.warmup :]
            print(f"  ({size} claims per call: done)", file=sys.stderr, flush=True)
            p50 = pct(times, 50)
            base = base or p50
            row = {
                "claims_per_call": size,
                "round_p50_ms": p50,
                "round_p99_ms": pct(times, 99),
                "floor_p50_ms": pct(floors, 50),
                "over_floor": p50 / pct(floors, 50),
                "over_one_claim": p50 / base,
                "claims_per_s": size * len(times) / sum(times),
                "plugin_cpu_ms_per_claim": cpu["plugin"] * 1000 / (size * len(times)),
                "api_cpu_ms_per_claim": cpu["api"] * 1000 / (size * len(times)),
            }
            summary["batches"].append(row)
        for callers in (1, 8):
            # Right after the 64-claim rounds the disk is still writing back thousands of created and
            # removed spec files (one-claim pairs measured then are ~25% slower; the plugin itself is
            # idle): let it settle, so that the one-caller figure the ratios divide by is steady state.
            time.sleep(SETTLE_S)
            before = {k: cpu_s(pid) for k, pid in pids.items()}

            def cycle(g: int) -> list[float]:
                return [round_trip(plugin, [claim_ref(g, r * 8 + 1)]) for r in range(total_rounds)]

            results, wall = concurrently(callers, cycle)
            used = {k: (cpu_s(pid) - before[k]) * 1000 / (callers * total_rounds) for k, pid in pids.items()}
            flat = [x for r in results for x in r[args.warmup :]]
            summary["callers"].append(
                {
                    "callers": callers,
                    "pair_p50_ms": pct(flat, 50),
                    "pair_p99_ms": pct(flat, 99),
                    "claims_per_s": callers * total_rounds / wall,
                    "plugin_cpu_ms_per_claim": used["plugin"],
                    "api_cpu_ms_per_claim": used["api"],
                }
            )
        one = summary["callers"][0]["pair_p50_ms"]
        for row in summary["callers"]:
            row["over_one_caller"] = row["pair_p50_ms"] / one
    summary["load_end"] = os.getloadavg()[0]
    print(f"load {summary['load_start']:.1f} → {summary['load_end']:.1f}")
    for row in summary["batches"]:
        print(
            f"{row['claims_per_call']:>3} claims per call: round p50 {row['round_p50_ms']:7.2f} ms "
            f"p99 {row['round_p99_ms']:7.2f} ms  {row['over_one_claim']:5.2f}x one claim  "
            f"{row['claims_per_s']:7.0f} claims/s  (floor of one claim beside it "
            f"{row['floor_p50_ms']:.2f} ms: {row['over_floor']:.2f}x)  CPU per claim: plugin "
            f"{row['plugin_cpu_ms_per_claim']:.2f} ms, API server {row['api_cpu_ms_per_claim']:.2f} ms"
        )
    for row in summary["callers"]:
        print(
            f"{row['callers']:>3} concurrent callers: pair p50 {row['pair_p50_ms']:7.2f} ms "
            f"p99 {row['pair_p99_ms']:7.2f} ms  {row['over_one_caller']:5.2f}x one caller  "
            f"{row['claims_per_s']:7.0f} claims/s  CPU per claim: plugin "
            f"{row['plugin_cpu_ms_per_claim']:.2f} ms, API server {row['api_cpu_ms_per_claim']:.2f} ms"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
