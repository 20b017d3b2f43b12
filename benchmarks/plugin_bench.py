"""The GPU plugin process measured from outside, as a node runs it: latency per claim kind, throughput,
start-up, memory.

Three processes per scenario: an API server (this file run with ``--serve-api``, a FakeKube behind the
toolkit's HTTP ApiServer), the real ``nvdra-gpu-plugin --simulate PROFILE`` console script, and this
process acting as the kubelet (KubeletClient over the plugin's unix sockets).

Per scenario (claim kind):

- start → registered: from spawning the plugin until the kubelet stand-in's NotifyRegistrationStatus
  returns (it registers as soon as the registration socket appears); start → slices visible: until the
  API server lists the node's ResourceSlices with every device;
- prepare+unprepare pair p50/p99 of one claim over the sockets, beside the contract's floor measured in
  the same run (``prepare_latency.measure_floor``: two gRPC round trips, the claim GET, four atomic
  writes and one durable unlink, sequential); the simulated hardware work itself costs ~nothing;
- plugin RSS (``/proc/<pid>/status`` VmRSS) when idle after start, and after the cycles.

Usage: python benchmarks/plugin_bench.py [--pairs 300] [--warmup 50] [--cycles 0] [--callers 1,2,4,8]
       [--parts latency,throughput,memory]

The plugin's CDI root is made under the scenario's temp dir (on its disk), or under
``$NVDRA_BENCH_CDI_DIR`` when set: ``NVDRA_BENCH_CDI_DIR=/dev/shm`` puts it on tmpfs, as ``/var/run/cdi``
is on most nodes (the driver then writes specs without an I/O thread). batch.py follows it too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nvdra.kubeletplugin import ClaimRef, KubeletClient, KubernetesKubeApi

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from prepare_latency import measure_floor, pct  # noqa: E402

NODE = "bench-node"

SCENARIOS: dict[str, dict[str, Any]] = {
    "full-gpu": {"profile": "dgx-h100", "gates": "", "devices": ["gpu-0"], "parameters": None},
    "shared-gpu (TimeSlicing)": {
        "profile": "dgx-h100",
        "gates": "TimeSlicingSettings=true",
        "devices": ["gpu-0"],
        "parameters": {
            "apiVersion": "resource.nvidia.com/v1beta1",
            "kind": "GpuConfig",
            "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}},
        },
    },
    "dynamic MIG 1g.10gb": {
        "profile": "dgx-h100",
        "gates": "DynamicMIG=true",
        "devices": ["gpu-0-mig-1g10gb-19-3"],
        "parameters": None,
    },
    "fabric partition (4 GPUs, SharedNVSwitch)": {
        "profile": "hgx-h200",
        "gates": "FabricTopologySupport=true",
        "devices": ["gpu-0", "gpu-1", "gpu-2", "gpu-3"],
        "parameters": {
            "apiVersion": "resource.nvidia.com/v1beta1",
            "kind": "GpuConfig",
            "fabricTopologyConfig": {"virtualizationModel": "SharedNVSwitch"},
        },
    },
}


def claim_uid(group: int, i: int) -> str:
    """The UID of claim ``i`` of device group ``group`` (deterministic, so the kubelet can name it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nvdra-plugin-bench-{group}-{i}"))


def claim_name(group: int, i: int) -> str:
    """Group 0 is named like prepare_latency's claims (``bench-<i>``), whose floor GETs them."""
    return f"bench-{i}" if group == 0 else f"bench-{group}-{i}"


def claim_ref(group: int, i: int) -> ClaimRef:
    """The kubelet's reference to claim ``i`` of ``group``."""
    return ClaimRef(namespace="default", name=claim_name(group, i), uid=claim_uid(group, i))


def serve_api(spec_path: str) -> None:
    """``--serve-api``: serve the claims described in ``spec_path``; print "ready"; run until stdin closes."""
    from nvdra.kubeletplugin import ApiServer, FakeKube
    from nvdra.tool.demo import allocated_claim

    spec = json.loads(Path(spec_path).read_text())
    store = FakeKube()
    store.add_node(NODE)
    for group, devices in enumerate(spec["groups"]):
        for i in range(spec["count"]):
            claim = allocated_claim(
                name=claim_name(group, i),
                namespace="default",
                devices=devices,
                parameters=spec["parameters"],
                node=NODE,
            )
            claim["metadata"]["uid"] = claim_uid(group, i)
            if spec.get("admin"):  # adminAccess: many claims may observe one device at once
                claim["spec"]["devices"]["requests"][0]["exactly"]["adminAccess"] = True
                for result in claim["status"]["allocation"]["devices"]["results"]:
                    result["adminAccess"] = True
            store.add_claim(claim)
    with ApiServer(store) as api:
        api.write_kubeconfig(spec["kubeconfig"])
        print("ready", flush=True)
        sys.stdin.read()


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Node:
    """An API server and a plugin process for one scenario; a context manager."""

    def __init__(self, scenario: Mapping[str, Any], groups: Sequence[Sequence[str]], count: int) -> None:
        self.scenario = scenario
        self.tmp = Path(tempfile.mkdtemp(prefix="nvdra-pb-"))
        self.kubeconfig = self.tmp / "kubeconfig"
        spec = {
            "groups": [list(g) for g in groups],
            "count": count,
            "parameters": scenario["parameters"],
            "admin": bool(scenario.get("admin")),
            "kubeconfig": str(self.kubeconfig),
        }
        (self.tmp / "claims.json").write_text(json.dumps(spec))
        self.api = subprocess.Popen(
            [sys.executable, __file__, "--serve-api", str(self.tmp / "claims.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.api.stdout is not None and self.api.stdout.readline().strip() == "ready"
        self.reg = self.tmp / "registry"
        self.reg_sock = self.reg / "gpu.nvidia.com-reg.sock"
        self.plugin: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        memory = os.environ.get("NVDRA_BENCH_CDI_DIR")
        self.cdi_root = (
            Path(tempfile.mkdtemp(prefix="nvdra-pb-cdi-", dir=memory)) if memory else self.tmp / "cdi"
        )

    def start_plugin(self, *, env: Mapping[str, str] | None = None, stderr: Any = subprocess.DEVNULL) -> None:
        """Spawn the plugin process (the clock for the start-up figures starts here).

        ``env``: extra environment variables (``PYTHONPROFILEIMPORTTIME``); ``stderr``: where its log goes.
        """
        plugin_bin = os.environ.get("NVDRA_PLUGIN_CMD") or str(
            Path(sys.executable).parent / "nvdra-gpu-plugin"
        )
        args = [
            *plugin_bin.split(),
            *("--simulate", self.scenario["profile"], "--node-name", NODE),
            *("--kubeconfig", str(self.kubeconfig), "--cdi-root", str(self.cdi_root)),
            *("--kubelet-registrar-directory-path", str(self.reg)),
            *("--kubelet-plugins-directory-path", str(self.tmp / "plugins")),
            *("--feature-gates", self.scenario["gates"]),
        ]
        self.started_at = time.perf_counter()
        self.plugin = subprocess.Popen(args, stderr=stderr, env={**os.environ, **(env or {})})

    def close(self) -> None:
        """Stop both processes."""
        if self.plugin is not None:
            self.plugin.terminate()
            self.plugin.wait(10)
        assert self.api.stdin is not None
        self.api.stdin.close()
        self.api.wait(10)
        if self.tmp not in self.cdi_root.parents:  # a CDI root in memory is not left there
            shutil.rmtree(self.cdi_root, ignore_errors=True)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_up(node: Node, kubelet: KubeletClient, **spawn: Any) -> tuple[Any, dict[str, float]]:
    """Start the plugin, register it as soon as its socket appears, wait for its slices.

    ``spawn``: passed to :meth:`Node.start_plugin`.
    """
    node.start_plugin(**spawn)
    while not node.reg_sock.exists():
        if time.perf_counter() - node.started_at > 30:
            raise TimeoutError("the plugin did not create its registration socket")
        time.sleep(0.002)
    plugin = kubelet.register(node.reg_sock)
    registered = time.perf_counter() - node.started_at
    kube = KubernetesKubeApi.from_kubeconfig(str(node.kubeconfig))
    while not kube.list_resource_slices(driver="gpu.nvidia.com", node_name=NODE):
        if time.perf_counter() - node.started_at > 30:
            raise TimeoutError("no ResourceSlice appeared")
        time.sleep(0.005)
    visible = time.perf_counter() - node.started_at
    return plugin, {"start_to_registered_ms": registered * 1000, "start_to_slices_visible_ms": visible * 1000}


def pairs(plugin: Any, refs: Sequence[ClaimRef]) -> list[float]:
    """Prepare then unprepare each claim in turn; seconds per pair."""
    out = []
    for ref in refs:
        t0 = time.perf_counter()
        res = plugin.prepare([ref])[ref.uid]
        err = plugin.unprepare([ref])[ref.uid]
        out.append(time.perf_counter() - t0)
        if res.error or err:
            raise SystemExit(f"pair {ref} failed: {res.error or err}")
    return out


def latency(name: str, n_pairs: int, warmup: int) -> dict[str, Any]:
    """One scenario: start-up, pair latency beside the floor, idle RSS."""
    scenario = SCENARIOS[name]
    total = n_pairs + warmup
    with Node(scenario, [scenario["devices"]], total) as node, KubeletClient(node.reg) as kubelet:
        plugin, startup = start_up(node, kubelet)
        assert node.plugin is not None
        time.sleep(0.5)
        idle = rss_mib(node.plugin.pid)
        measured = pairs(plugin, [claim_ref(0, i) for i in range(total)])[warmup:]
        floor = measure_floor(kubelet, node.reg_sock, node.kubeconfig, node.tmp, n_pairs)
    p50, f50 = pct(measured, 50), pct(floor["floor"], 50)
    return {
        "scenario": name,
        "profile": scenario["profile"],
        "devices": len(scenario["devices"]),
        "pairs": len(measured),
        "pair_p50_ms": p50,
        "pair_p99_ms": pct(measured, 99),
        "floor_p50_ms": f50,
        "floor_p99_ms": pct(floor["floor"], 99),
        "ratio_p50": p50 / f50,
        "rss_idle_mib": idle,
        **startup,
    }


def concurrently(callers: int, work: Callable[[int], list[float]]) -> tuple[list[list[float]], float]:
    """Run ``work(g)`` for callers g = 0..callers-1 at once, each on its own thread; returns each
    caller's result and the wall seconds from the first start to the last end."""
    results: list[list[float]] = [[] for _ in range(callers)]

    def run(g: int) -> None:
        results[g] = work(g)

    threads = [threading.Thread(target=run, args=(g,)) for g in range(callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def throughput(callers: Sequence[int], per_caller: int) -> list[dict[str, Any]]:
    """Pairs per second with N concurrent kubelet callers, each cycling claims of its own GPU."""
    rows = []
    groups = [[f"gpu-{g}"] for g in range(max(callers))]
    with (
        Node(SCENARIOS["full-gpu"], groups, per_caller) as node,
        KubeletClient(node.reg) as kubelet,
    ):
        plugin, _ = start_up(node, kubelet)
        pairs(plugin, [claim_ref(0, i) for i in range(20)])  # warm up
        for n in callers:
            results, wall = concurrently(
                n, lambda g: pairs(plugin, [claim_ref(g, i) for i in range(per_caller)])
            )
            flat = [x for r in results for x in r]
            rows.append(
                {
                    "callers": n,
                    "pairs_per_s": len(flat) / wall,
                    "pair_p50_ms": pct(flat, 50),
                    "pair_p99_ms": pct(flat, 99),
                }
            )
    return rows


def memory(cycles: int) -> dict[str, Any]:
    """RSS idle, after 1,000 cycles (warm) and after ``cycles`` prepare/unprepare cycles."""
    distinct = 1000
    with Node(SCENARIOS["full-gpu"], [["gpu-0"]], distinct) as node, KubeletClient(node.reg) as kubelet:
        plugin, _ = start_up(node, kubelet)
        assert node.plugin is not None
        time.sleep(0.5)
        idle = rss_mib(node.plugin.pid)
        refs = [claim_ref(0, i % distinct) for i in range(cycles)]
        pairs(plugin, refs[:distinct])
        warm = rss_mib(node.plugin.pid)
        pairs(plugin, refs[distinct:])
        end = rss_mib(node.plugin.pid)
    return {
        "cycles": cycles,
        "rss_idle_mib": idle,
        "rss_after_1000_mib": warm,
        f"rss_after_{cycles}_mib": end,
        "growth_after_warmup_mib": end - warm,
    }


def main() -> None:
    """Run every part, print a table, write JSON to --out when given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-api", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=10_000, help="0 skips the memory run")
    parser.add_argument("--callers", default="1,2,4,8")
    parser.add_argument("--parts", default="latency,throughput,memory", help="which parts to run")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.serve_api:
        serve_api(args.serve_api)
        return
    parts = set(args.parts.split(","))
    summary: dict[str, Any] = {"load": os.getloadavg()[0]}
    summary["latency"] = (
        [latency(name, args.pairs, args.warmup) for name in SCENARIOS] if "latency" in parts else []
    )
    for row in summary["latency"]:
        print(
            f"{row['scenario']:<44} pair p50 {row['pair_p50_ms']:6.2f} ms  p99 {row['pair_p99_ms']:6.2f} ms  "
            f"floor p50 {row['floor_p50_ms']:5.2f} ms  ratio {row['ratio_p50']:4.2f}x  "
            f"registered {row['start_to_registered_ms']:4.0f} ms  "
            f"slices {row['start_to_slices_visible_ms']:4.0f} ms  "
            f"idle RSS {row['rss_idle_mib']:5.1f} MiB"
        )
    callers = [int(n) for n in args.callers.split(",")]
    summary["throughput"] = throughput(callers, per_caller=100) if "throughput" in parts else []
    for row in summary["throughput"]:
        print(
            f"{row['callers']} concurrent callers: {row['pairs_per_s']:6.0f} pairs/s  "
            f"p50 {row['pair_p50_ms']:.2f} ms"
        )
    if args.cycles and "memory" in parts:
        summary["memory"] = memory(args.cycles)
        print("memory:", json.dumps(summary["memory"]))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
