"""CPU per claim GET of the plugin's API client (``KubernetesKubeApi.get_resource_claim``).

One API server process (``_apiserver.py``) holds the claims; a worker process per source tree (this
one, and with ``--baseline-src DIR`` another checkout's ``src``, e.g. ``git archive HEAD~1 src | tar -x``)
builds the client from the kubeconfig and, on each round, GETs ``--gets`` claims one after another. The
rounds of the trees alternate, so both see the same load; each worker reports the CPU it spent
(``time.process_time``: user+system of its process, steadier than wall time on a shared machine) and
the wall time, per GET. ``--profile`` prints a cProfile of one more round of this tree (top functions
by own time).

Usage: python benchmarks/claim_get.py [--gets 500] [--rounds 10] [--baseline-src DIR] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLAIMS = 64


def worker(kubeconfig: str) -> None:
    """Serve rounds: read ``GETS [profile]`` lines from stdin, answer ``cpu_us wall_us`` per GET."""
    from nvdra.kubeletplugin._kube import KubernetesKubeApi

    api = KubernetesKubeApi.from_kubeconfig(kubeconfig)
    names = [f"bench-{i}" for i in range(CLAIMS)]
    for _ in range(50):  # connect, discover the resource version, warm the caches
        api.get_resource_claim("default", names[0])
    for line in sys.stdin:
        words = line.split()
        gets = int(words[0])
        if len(words) > 1:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(gets):
                api.get_resource_claim("default", names[i % CLAIMS])
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            print("0 0", flush=True)
            continue
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(gets):
            claim = api.get_resource_claim("default", names[i % CLAIMS])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if claim.get("apiVersion") != "resource.k8s.io/v1":
            raise SystemExit(f"unexpected answer: {claim!r:.200}")
        print(f"{cpu * 1e6 / gets:.1f} {wall * 1e6 / gets:.1f}", flush=True)
    api.close()


def main() -> None:
    """Start the API server and the workers; alternate their rounds; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=500, help="GETs per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline-src", help="another checkout's src/ to measure beside this one")
    parser.add_argument("--profile", action="store_true", help="cProfile one round of this tree")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    tmp = Path(tempfile.mkdtemp(prefix="nvdra-cg-"))
    kubeconfig = tmp / "kubeconfig"
    server = subprocess.Popen(
        [sys.executable, str(HERE / "_apiserver.py"), str(kubeconfig), "node-0", str(CLAIMS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    if server.stdout.readline().strip() != "ready":
        raise SystemExit("the API server did not start")
    trees = {"this": os.environ.get("PYTHONPATH", "")}
    if args.baseline_src:
        trees["baseline"] = str(Path(args.baseline_src).resolve())
    workers = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--worker", str(kubeconfig)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path} if path else dict(os.environ),
        )
        for name, path in trees.items()
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in workers}
    load = os.getloadavg()[0]
    try:
        for r in range(args.rounds):
            order = list(workers) if r % 2 == 0 else list(reversed(workers))
            for name in order:
                proc = workers[name]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(f"{args.gets}\n")
                proc.stdin.flush()
                cpu, wall = proc.stdout.readline().split()
                results[name].append((float(cpu), float(wall)))
        if args.profile:
            proc = workers["this"]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{args.gets} profile\n")
            proc.stdin.flush()
            proc.stdout.readline()
    finally:
        for proc in workers.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait()
        server.stdin.close()
        server.wait()
    print(f"load {load:.1f} -> {os.getloadavg()[0]:.1f}; {args.rounds} rounds of {args.gets} claim GETs")
    for name, rows in results.items():
        cpus = [c for c, _ in rows]
        walls = [w for _, w in rows]
        print(
            f"{name:>8}: CPU per GET median {statistics.median(cpus):6.1f} us "
            f"(min {min(cpus):6.1f}, max {max(cpus):6.1f}); wall median {statistics.median(walls):6.1f} us"
        )


if __name__ == "__main__":
    main()
