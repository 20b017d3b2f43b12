"""Where the GPU plugin's CPU of a one-claim prepare+unprepare pair goes (issue 16), over all its threads.

The set-up of batch.py's concurrency part (the real plugin process, admin-access claims of one GPU, C
callers each cycling pairs on its own GPU). For the measured pairs it prints the plugin's CPU per pair,
user and system apart, and its context switches per pair (voluntary: a thread blocked, on the GIL, a
lock, a queue or I/O; involuntary: preempted), summed over every thread from /proc/PID/task. With
``--perf`` the pairs also run under ``perf record`` (if installed) and the samples are summed by where
they fell: the kernel (scheduler/context switch, futex, fsync and the file system), libpython, grpc's C
core, libc; with ``--py-spy`` (if installed in the venv) the samples of the thread holding the GIL are
summed by function (nvdra's, inclusive). The samplers cost the plugin CPU themselves (perf ~40% more, py-spy
more still): take the CPU and switch figures from a run without them. cProfile sees only the main thread.

Usage: python benchmarks/plugin_cpu.py [--pairs 150] [--callers 1,8] [--perf] [--py-spy]
(NVDRA_BENCH_CDI_DIR=/dev/shm: the CDI root on tmpfs, see plugin_bench.py)
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batch import GPUS, SCENARIO, round_trip
from plugin_bench import Node, claim_ref, concurrently, start_up

from nvdra.kubeletplugin import KubeletClient

WARMUP = 10
_KERNEL_GROUPS = (  # first match wins, on the sample's kernel call chain
    ("fsync + file system", re.compile(r"fsync|ext4|jbd2|vfs_|do_sys_open|path_|d_lookup|rename|unlink")),
    ("futex (locks, GIL, queues)", re.compile(r"futex")),
    ("sockets / epoll", re.compile(r"sock|tcp|unix_|epoll|poll")),
)


def threads(pid: int, per_thread: dict[str, int] | None = None) -> dict[str, int]:
    """User and system ticks and context switches, summed over the process's threads; each thread's
    voluntary switches go into ``per_thread`` (by thread id) when given."""
    out: collections.Counter[str] = collections.Counter()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out["user"] += int(fields[11])
        out["sys"] += int(fields[12])
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                out[key.split("_")[0]] += int(value)
            if key == "voluntary_ctxt_switches" and per_thread is not None:
                per_thread[task] = int(value)
    return dict(out)


def thread_names(pid: int) -> dict[str, str]:
    """Thread id → Python thread name, from ``py-spy dump`` (Python 3.11 gives threads no OS names)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {}
    dump = subprocess.run([str(spy), "dump", "-p", str(pid)], capture_output=True, text=True, check=False)
    found = re.findall(r'^Thread (\S+) \([^)]*\): "([^"]*)"', dump.stdout, re.MULTILINE)
    return {str(int(tid, 0)): name for tid, name in found}


def perf_summary(data: Path) -> list[tuple[str, float]]:
    """Share of the samples by where they fell (``perf script`` call chains)."""
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip,sym,dso"], capture_output=True, text=True, check=False
    ).stdout
    shares: collections.Counter[str] = collections.Counter()
    for sample in script.split("\n\n"):
        frames = [f.strip() for f in sample.strip().splitlines() if f.strip()]
        if not frames:
            continue
        leaf = frames[0]
        if "[kernel.kallsyms]" in leaf:
            chain = " ".join(f for f in frames if "[kernel.kallsyms]" in f)
            group = next((name for name, pat in _KERNEL_GROUPS if pat.search(chain)), "other kernel")
            shares["kernel: " + group] += 1
        else:
            dso = leaf.rsplit("(", 1)[-1].rstrip(")")
            shares[Path(dso).name.split(".so")[0] or dso] += 1
    total = sum(shares.values()) or 1
    return [(name, n / total) for name, n in shares.most_common(12)]


def spy_summary(raw: Path, top: int = 15) -> list[tuple[str, float]]:
    """Share of the GIL holder's samples by function, inclusive (py-spy's raw output)."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = {re.sub(r":\d+\)", ")", f) for f in stack.split(";")[1:]}
        total += int(count)
        for frame in frames:
            inclusive[frame] += int(count)
    mine = [(f, n / max(total, 1)) for f, n in inclusive.most_common() if "nvdra/" in f]
    return mine[:top]


def measure(node: Node, plugin: object, callers: int, pairs: int, args: argparse.Namespace) -> None:
    """``pairs`` pairs per caller after the warm-up; prints the figures."""
    assert node.plugin is not None
    pid = node.plugin.pid
    work = Path(tempfile.mkdtemp(prefix="nvdra-cpu-"))
    samplers = []
    if args.perf and shutil.which("perf"):
        cmd = ["perf", "record", "-q", "-F", "1999", "-g", "-p", str(pid), "-o", str(work / "perf.data")]
        samplers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    spy = Path(sys.executable).parent / "py-spy"
    if args.py_spy and spy.exists():
        cmd = [str(spy), "record", "-p", str(pid), "-r", "500", "-f", "raw", "-o", str(work / "spy.txt")]
        samplers.append(subprocess.Popen([*cmd, "--gil", "--threads"], stdout=subprocess.DEVNULL))
    if samplers:
        time.sleep(1.0)  # attached before the first measured pair
    switched: dict[str, int] = {}
    before, t0 = threads(pid, switched), time.perf_counter()

    def cycle(g: int) -> list[float]:
        return [round_trip(plugin, [claim_ref(g, r * 8 + 2)]) for r in range(WARMUP, WARMUP + pairs)]

    concurrently(callers, cycle)
    wall, switched_before = time.perf_counter() - t0, dict(switched)
    after = threads(pid, switched)
    for sampler in samplers:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(60)
    names = thread_names(pid)  # after the pairs: the handler pool starts its threads as calls come
    n = callers * pairs
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    per = {k: (after[k] - before.get(k, 0)) / n for k in after}
    cpu_ms = (per["user"] + per["sys"]) * tick_ms
    print(
        f"{callers} callers, {n} pairs in {wall:.1f} s: plugin CPU {cpu_ms:.2f} ms "
        f"a pair (user {per['user'] * tick_ms:.2f}, system {per['sys'] * tick_ms:.2f}); context switches "
        f"a pair {per['voluntary']:.1f} voluntary, {per['nonvoluntary']:.1f} involuntary; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    by_thread = sorted(((v - switched_before.get(t, 0)) / n, t) for t, v in switched.items())
    print(
        "  voluntary switches a pair by thread: "
        + ", ".join(f"{names.get(t, t)} {each:.1f}" for each, t in reversed(by_thread) if each >= 0.5)
    )
    if (work / "perf.data").exists():
        print("  perf samples by where they fell:")
        for name, share in perf_summary(work / "perf.data"):
            print(f"    {share * 100:5.1f}%  {name}")
    if (work / "spy.txt").exists():
        print("  GIL holder's samples in nvdra functions (inclusive, py-spy):")
        for name, share in spy_summary(work / "spy.txt"):
            print(f"    {share * 100:5.1f}%  {name}")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Start the plugin, warm up, measure each number of callers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=150, help="measured pairs per caller")
    parser.add_argument("--callers", default="1,8")
    parser.add_argument("--perf", action="store_true", help="sample with perf record (if installed)")
    parser.add_argument("--py-spy", action="store_true", help="sample the GIL holder with py-spy")
    args = parser.parse_args()
    groups = [[f"gpu-{g}"] for g in range(GPUS)]
    with Node(SCENARIO, groups, (WARMUP + args.pairs) * 8 + 16) as node, KubeletClient(node.reg) as kubelet:
        plugin, _ = start_up(node, kubelet)
        for r in range(WARMUP):
            for g in range(GPUS):
                round_trip(plugin, [claim_ref(g, r * 8 + 1)])
        for callers in (int(c) for c in args.callers.split(",")):
            time.sleep(1.0)
            measure(node, plugin, callers, args.pairs, args)


if __name__ == "__main__":
    main()
