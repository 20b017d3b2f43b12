"""Prepare+unprepare latency of a one-GPU claim over the real socket, beside its floor.

Three processes, as on a node: an API server (benchmarks/_apiserver.py), the real ``nvdra-gpu-plugin
--simulate dgx-h100`` console script, and this process acting as the kubelet (KubeletClient over the
plugin's unix sockets). Per pair: NodePrepareResources (the plugin GETs the claim, checkpoints, writes
the CDI spec, checkpoints) then NodeUnprepareResources.

The floor, measured in the same run, is what the contract requires done one after another: two unary
gRPC round trips on the same kind of socket (GetInfo on the plugin's registration socket, served by
the same kind of grpc server), one GET of the claim from the same API server, and four atomic 2 KiB
writes (temp file, fsync, rename, directory fsync) plus one durable unlink in the same directories.

Usage: python benchmarks/prepare_latency.py [--pairs 500] [--warmup 50]
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

from nvdra.cdi import atomic_write, remove_durably
from nvdra.kubeletplugin import ClaimRef, KubeletClient, KubernetesKubeApi

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _apiserver import claim_uid  # noqa: E402

NODE = "bench-node"


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    total = args.pairs + args.warmup
    tmp = Path(tempfile.mkdtemp(prefix="nvdra-bench-"))
    kubeconfig = tmp / "kubeconfig"
    api = subprocess.Popen(
        [sys.executable, str(HERE / "_apiserver.py"), str(kubeconfig), NODE, str(total)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert api.stdout is not None and api.stdout.readline().strip() == "ready"
    # NVDRA_PLUGIN_CMD lets a profiler wrap the plugin (e.g. "python /tmp/prof_plugin.py").
    plugin_bin = os.environ.get("NVDRA_PLUGIN_CMD") or str(Path(sys.executable).parent / "nvdra-gpu-plugin")
    reg, plugins, cdi = tmp / "registry", tmp / "plugins", tmp / "cdi"
    plugin = subprocess.Popen(
        [
            *plugin_bin.split(),
            "--simulate",
            "dgx-h100",
            "--node-name",
            NODE,
            "--kubeconfig",
            str(kubeconfig),
            "--cdi-root",
            str(cdi),
            "--kubelet-registrar-directory-path",
            str(reg),
            "--kubelet-plugins-directory-path",
            str(plugins),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(reg / "gpu.nvidia.com-reg.sock")
        with KubeletClient(reg) as kubelet:
            registered = kubelet.register(reg / "gpu.nvidia.com-reg.sock")
            pairs = []
            for i in range(total):
                ref = ClaimRef(namespace="default", name=f"bench-{i}", uid=claim_uid(i))
                t0 = time.perf_counter()
                res = registered.prepare([ref])[ref.uid]
                err = registered.unprepare([ref])[ref.uid]
                pairs.append(time.perf_counter() - t0)
                if res.error or err:
                    raise SystemExit(f"pair {i} failed: {res.error or err}")
            pairs = pairs[args.warmup :]
            floor = measure_floor(kubelet, reg / "gpu.nvidia.com-reg.sock", kubeconfig, tmp, total)
    finally:
        plugin.terminate()
        plugin.wait(10)
        api.stdin.close()  # type: ignore[union-attr]
        api.wait(10)
    report(pairs, floor)


class FloorProbe:
    """One iteration of the floor at a time, so that a benchmark can interleave it with what it measures
    (both then see the same load, which on a shared machine moves by 2-5x within a minute)."""

    def __init__(self, kubelet: KubeletClient, reg_sock: Path, kubeconfig: Path, tmp: Path) -> None:
        self.kubelet, self.reg_sock = kubelet, reg_sock
        self.kube = KubernetesKubeApi.from_kubeconfig(str(kubeconfig))
        self.state, self.spec_dir = tmp / "floor-state", tmp / "floor-cdi"
        self.state.mkdir(exist_ok=True)
        self.spec_dir.mkdir(exist_ok=True)
        self.payload = os.urandom(1024).hex().encode()  # 2 KiB, like a checkpoint or a one-GPU spec
        self.parts: dict[str, list[float]] = {"rtt": [], "get": [], "write": [], "floor": []}

    def once(self, i: int) -> float:
        """Run the floor once (GETting claim ``bench-<i>``); its seconds (also kept in ``parts``)."""
        state, spec_dir, payload = self.state, self.spec_dir, self.payload
        t0 = time.perf_counter()
        self.kubelet.get_info(self.reg_sock)
        t1 = time.perf_counter()
        self.kubelet.get_info(self.reg_sock)
        t2 = time.perf_counter()
        self.kube.get_resource_claim("default", f"bench-{i}")
        t3 = time.perf_counter()
        atomic_write(state / "checkpoint.json", payload)
        atomic_write(spec_dir / "spec.yaml", payload)
        atomic_write(state / "checkpoint.json", payload)
        atomic_write(state / "checkpoint.json", payload)
        remove_durably(spec_dir / "spec.yaml")
        t4 = time.perf_counter()
        self.parts["rtt"].append(((t1 - t0) + (t2 - t1)) / 2)
        self.parts["get"].append(t3 - t2)
        self.parts["write"].append((t4 - t3) / 5)
        self.parts["floor"].append(t4 - t0)
        return t4 - t0


def measure_floor(
    kubelet: KubeletClient, reg_sock: Path, kubeconfig: Path, tmp: Path, n: int
) -> dict[str, list[float]]:
    """Time the floor's parts, and the whole floor done sequentially, n times each."""
    probe = FloorProbe(kubelet, reg_sock, kubeconfig, tmp)
    for i in range(n):
        probe.once(i)
    return probe.parts


def report(pairs: list[float], floor: dict[str, list[float]]) -> None:
    p50, p99 = pct(pairs, 50), pct(pairs, 99)
    f50, f99 = pct(floor["floor"], 50), pct(floor["floor"], 99)
    print(f"prepare+unprepare of a one-GPU claim, {len(pairs)} pairs (dgx-h100 simulated, real sockets)")
    print(f"  nvdra     p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   mean {statistics.mean(pairs) * 1000:6.2f} ms")
    print(
        f"  floor     p50 {f50:6.2f} ms   p99 {f99:6.2f} ms   "
        "(2 gRPC round trips + claim GET + 4 atomic writes + 1 unlink, sequential)"
    )
    print(
        f"    parts p50: gRPC round trip {pct(floor['rtt'], 50):.3f} ms, "
        f"claim GET {pct(floor['get'], 50):.3f} ms, atomic write/unlink {pct(floor['write'], 50):.3f} ms"
    )
    print(f"  ratio     p50 {p50 / f50:5.2f}x   p99 {p99 / f99:5.2f}x")


if __name__ == "__main__":
    main()
