"""10,000 claims prepared and unprepared across 100 simulated nodes, every answer checked.

One process: an in-memory API store (FakeKube) shared by 100 GPU plugins (``serve()`` with
``--simulate dgx-h100``, each with its own sockets, checkpoint and CDI directory, node ``node-<n>``),
and a kubelet stand-in per node calling them over their real unix sockets. Each node gets
``claims / nodes`` one-GPU claims, on its 8 GPUs in turn; a node prepares them in calls of 8 (one per
GPU) and unprepares each call's claims before the next. Nodes run in parallel on a thread pool.

Printed: the time to start the plugins, the time for all claims, claims per second, and the number of
errors (the goal: none), with the load average.

Usage: python benchmarks/many_nodes.py [--nodes 100] [--claims 10000] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from nvdra.kubeletplugin import ClaimRef, FakeKube, KubeletClient
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
from nvdra.tool.demo import allocated_claim

GPUS = 8


def node_claims(store: FakeKube, node: str, count: int) -> list[ClaimRef]:
    """``count`` allocated one-GPU claims on ``node``, round-robin over its GPUs."""
    refs = []
    for i in range(count):
        claim = allocated_claim(
            name=f"{node}-c{i}", namespace="default", devices=[f"gpu-{i % GPUS}"], node=node
        )
        uid = store.add_claim(claim)["metadata"]["uid"]
        refs.append(ClaimRef(namespace="default", name=claim["metadata"]["name"], uid=uid))
    return refs


def run_node(plugin: Any, refs: list[ClaimRef]) -> list[str]:
    """Prepare and unprepare ``refs`` in calls of 8; the errors."""
    errors = []
    for start in range(0, len(refs), GPUS):
        batch = refs[start : start + GPUS]
        prepared = plugin.prepare(batch)
        errors += [f"prepare {uid}: {r.error}" for uid, r in prepared.items() if r.error]
        errors += [f"prepare {r.uid}: no answer" for r in batch if r.uid not in prepared]
        unprepared = plugin.unprepare(batch)
        errors += [f"unprepare {uid}: {e}" for uid, e in unprepared.items() if e]
    return errors


def main() -> None:
    """Start the nodes, run the claims, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--claims", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="nvdra-many-"))
    store = FakeKube()
    per_node = args.claims // args.nodes
    load_start = os.getloadavg()[0]
    with ExitStack() as stack:
        t0 = time.perf_counter()
        nodes = []
        for n in range(args.nodes):
            name = f"node-{n}"
            store.add_node(name)
            root = base / name
            config = PluginConfig(
                node_name=name,
                cdi_root=root / "cdi",
                simulate="dgx-h100",
                kubelet_registrar_directory_path=root / "reg",
                kubelet_plugins_directory_path=root / "plugins",
            )
            stack.enter_context(serve(config, kube=store))
            kubelet = stack.enter_context(KubeletClient(config.kubelet_registrar_directory_path))
            plugin = kubelet.register(config.kubelet_registrar_directory_path / "gpu.nvidia.com-reg.sock")
            nodes.append((plugin, node_claims(store, name, per_node)))
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(lambda node: run_node(*node), nodes))
        elapsed = time.perf_counter() - t1
    errors = [e for r in results for e in r]
    summary = {
        "nodes": args.nodes,
        "claims": per_node * args.nodes,
        "start_s": started,
        "run_s": elapsed,
        "claims_per_s": per_node * args.nodes / elapsed,
        "errors": len(errors),
        "first_errors": errors[:3],
        "load": [load_start, os.getloadavg()[0]],
    }
    print(
        f"{summary['claims']} claims on {args.nodes} nodes: plugins started in {started:.1f} s; all claims "
        f"prepared and unprepared in {elapsed:.1f} s ({summary['claims_per_s']:.0f} claims/s); "
        f"{len(errors)} errors; load {load_start:.1f} -> {summary['load'][1]:.1f}"
    )
    for e in errors[:3]:
        print("  ", e)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
