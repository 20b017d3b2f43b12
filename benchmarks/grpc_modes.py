"""What grpc's asyncio server would save per unary call, beside the sync server the plugin uses.

A measurement for issue 16, not a migration: the plugin's DRA server is ``grpc.server`` with a
``ThreadPoolExecutor`` (``kubeletplugin/sockets.py``: 8 workers, ``grpc.so_reuseport`` 0), which hands
each unary call from grpc's polling thread to a pool thread and back. Three servers, each in its own
process on its own unix socket, serve the DRA v1 ``NodePrepareResources`` with a handler that spends
``--work-ms`` of CPU (a calibrated Python loop) and answers one claim with one device:

- ``sync``: ``grpc.server(ThreadPoolExecutor(8), options=[("grpc.so_reuseport", 0)])``, as today;
- ``aio-loop``: ``grpc.aio.server`` (same options), the handler's work done on the event loop;
- ``aio-exec``: ``grpc.aio.server``, the work handed to an 8-thread pool with ``run_in_executor`` (what
  blocking work such as fsyncs or the claim GET would need).

This process is the kubelet: grpc's sync channel (one per socket, shared by the callers, as
``KubeletClient`` keeps it), ``--calls`` calls per phase from 1 caller, then from 8 concurrent callers.
The modes are interleaved over ``--rounds`` rounds (the order rotates each round; the machine is
shared). Per mode and phase: p50/p99 round trip (all rounds pooled), calls per second, the server's
CPU per call (``getrusage(RUSAGE_SELF)`` of the server process, asked over its stdin before and after
the phase) and its voluntary + involuntary context switches per call (``/proc/<pid>/task/*/status``
summed over its threads: ``/proc/<pid>/status`` alone counts only the main thread); medians of the
rounds. ``--strace`` then counts each server's system calls a call (``strace -f -c`` over one more
1-caller phase), futex calls first: where the thread hand-offs show.

Usage: python benchmarks/grpc_modes.py [--rounds 6] [--calls 1000] [--work-ms 0.3] [--strace]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import IO, Any

import grpc
import grpc.aio

from nvdra.kubeletplugin._proto import dra_v1_pb2, dra_v1_pb2_grpc

MODES = ("sync", "aio-loop", "aio-exec")
WORKERS = 8  # the DRA server's handler threads (PluginOptions.grpc_workers)
OPTIONS = [("grpc.so_reuseport", 0)]  # what UnixSocketServer passes
CALLERS = (1, 8)
WARMUP_CALLS = 200


def spin(iterations: int) -> int:
    """Pure-Python CPU work: ``iterations`` multiply-adds."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def calibrate(seconds: float) -> int:
    """Iterations of :func:`spin` that cost ``seconds`` of this thread's CPU (cheapest of 5 tries)."""
    iterations = 20_000
    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        spin(iterations)
        best = min(best, (time.thread_time() - start) / iterations)
    return max(1, round(seconds / best))


def answer(request: Any, iterations: int) -> Any:
    """Do the work, then answer every claim of ``request`` with one prepared device."""
    spin(iterations)
    response = dra_v1_pb2.NodePrepareResourcesResponse()
    for claim in request.claims:
        response.claims[claim.uid].devices.append(
            dra_v1_pb2.Device(
                request_names=["gpu"],
                pool_name="node-a",
                device_name="gpu-0",
                cdi_device_ids=[f"k8s.gpu.nvidia.com/claim={claim.uid}-gpu-0"],
            )
        )
    return response


def answer_cpu_us(iterations: int) -> float:
    """This thread's CPU for one :func:`answer` of a one-claim request, median of 21, in µs."""
    request = request_for(0)
    costs = []
    for _ in range(21):
        start = time.thread_time()
        answer(request, iterations)
        costs.append((time.thread_time() - start) * 1e6)
    return statistics.median(costs)


def unprepare_answer(request: Any) -> Any:
    """Every claim of a NodeUnprepareResources request unprepared (not called by the benchmark)."""
    response = dra_v1_pb2.NodeUnprepareResourcesResponse()
    for claim in request.claims:
        response.claims[claim.uid].error = ""
    return response


class SyncServicer:
    """The DRA v1 service on grpc's sync server: the handler runs on a pool thread."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Prepare: the work, then the one-device answer."""
        return answer(request, self.iterations)

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Unprepare: nothing to undo."""
        return unprepare_answer(request)


class LoopServicer:
    """The DRA v1 service on grpc's asyncio server, the work done on the event loop."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations

    async def NodePrepareResources(self, request: Any, context: object) -> Any:
        """Prepare: the work on the loop, then the one-device answer."""
        return answer(request, self.iterations)

    async def NodeUnprepareResources(self, request: Any, context: object) -> Any:
        """Unprepare: nothing to undo."""
        return unprepare_answer(request)


class ExecutorServicer:
    """The DRA v1 service on grpc's asyncio server, the work handed to a thread pool."""

    def __init__(self, iterations: int, pool: futures.ThreadPoolExecutor) -> None:
        self.iterations = iterations
        self.pool = pool

    async def NodePrepareResources(self, request: Any, context: object) -> Any:
        """Prepare: the work and the answer on a pool thread, awaited on the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, answer, request, self.iterations)

    async def NodeUnprepareResources(self, request: Any, context: object) -> Any:
        """Unprepare: nothing to undo."""
        return unprepare_answer(request)


def control(on_eof: Callable[[], None]) -> None:
    """Answer each stdin line with this process's CPU seconds and context switches; at EOF, stop."""
    for _ in sys.stdin:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"{usage.ru_utime + usage.ru_stime:.6f} {usage.ru_nvcsw} {usage.ru_nivcsw}", flush=True)
    on_eof()


def serve_sync(socket: Path, iterations: int) -> None:
    """Serve with ``grpc.server`` as ``UnixSocketServer`` builds it, until stdin closes."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="nvdra-dra"), options=OPTIONS
    )
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(SyncServicer(iterations), server)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    print(f"ready {answer_cpu_us(iterations):.0f}", flush=True)
    control(lambda: None)
    server.stop(None).wait(5.0)


async def serve_aio(socket: Path, iterations: int, *, executor: bool) -> None:
    """Serve with ``grpc.aio.server``, the work on the loop or on a pool, until stdin closes."""
    server = grpc.aio.server(options=OPTIONS)
    pool = futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="nvdra-work")
    servicer: object = ExecutorServicer(iterations, pool) if executor else LoopServicer(iterations)
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    work_us = answer_cpu_us(iterations)
    threading.Thread(target=control, args=(lambda: loop.call_soon_threadsafe(done.set),), daemon=True).start()
    print(f"ready {work_us:.0f}", flush=True)
    await done.wait()
    await server.stop(None)
    pool.shutdown()


def serve(mode: str, socket: Path, work_ms: float) -> None:
    """The server process of one mode."""
    iterations = calibrate(work_ms / 1000)
    if mode == "sync":
        serve_sync(socket, iterations)
    else:
        asyncio.run(serve_aio(socket, iterations, executor=mode == "aio-exec"))


class Server:
    """A server process of one mode, and the client's channel to it."""

    def __init__(self, mode: str, directory: Path, work_ms: float) -> None:
        self.mode = mode
        socket = directory / f"{mode}.sock"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode, "--socket", str(socket), "--work-ms", str(work_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._stdin: IO[str] = _pipe(self.process.stdin)
        self._stdout: IO[str] = _pipe(self.process.stdout)
        ready = self._stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise SystemExit(f"{mode} server did not start (exit status {self.process.wait()})")
        self.work_us = float(ready[1])
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.stub: Any = dra_v1_pb2_grpc.DRAPluginStub(self.channel)

    def usage(self) -> tuple[float, int, int]:
        """The server's CPU seconds (getrusage), and its voluntary and involuntary context switches
        summed over its threads' ``/proc`` status."""
        self._stdin.write("usage\n")
        self._stdin.flush()
        cpu = float(self._stdout.readline().split()[0])
        voluntary = involuntary = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                text = (task / "status").read_text()
            except FileNotFoundError:  # a thread that just ended
                continue
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
        return cpu, voluntary, involuntary

    def close(self) -> None:
        """Close the channel and let the server stop."""
        self.channel.close()
        self._stdin.close()
        self.process.wait(timeout=30)


def _pipe(stream: IO[str] | None) -> IO[str]:
    if stream is None:
        raise SystemExit("no pipe to the server process")
    return stream


def request_for(caller: int) -> Any:
    """A one-claim NodePrepareResources request (each caller its own claim)."""
    return dra_v1_pb2.NodePrepareResourcesRequest(
        claims=[dra_v1_pb2.Claim(namespace="default", name=f"claim-{caller}", uid=f"uid-{caller:04d}")]
    )


def call(stub: Any, callers: int, calls: int) -> tuple[list[float], float]:
    """``calls`` prepares from ``callers`` threads at once: round trips in ms, and the wall time in s."""
    per_caller = calls // callers
    latencies: list[list[float]] = [[] for _ in range(callers)]
    start = threading.Barrier(callers + 1)

    def caller(index: int) -> None:
        request = request_for(index)
        uid = f"uid-{index:04d}"
        out = latencies[index]
        start.wait()
        for _ in range(per_caller):
            t0 = time.perf_counter_ns()
            response = stub.NodePrepareResources(request, timeout=45)
            out.append((time.perf_counter_ns() - t0) / 1e6)
            if len(response.claims[uid].devices) != 1:
                raise SystemExit(f"unexpected answer: {response}")

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    start.wait()
    wall0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall0
    return [value for chunk in latencies for value in chunk], wall


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Phase:
    """What one mode measured with one number of callers, over the rounds."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.rates: list[float] = []
        self.cpu_us: list[float] = []
        self.voluntary: list[float] = []
        self.involuntary: list[float] = []

    def cpu_ratio(self, other: Phase) -> float:
        """Median over the rounds of this phase's CPU a call over ``other``'s in the same round."""
        return statistics.median(a / b for a, b in zip(self.cpu_us, other.cpu_us, strict=True))

    def add(self, server: Server, callers: int, calls: int) -> None:
        """Run one phase against ``server`` and record it."""
        cpu0, vol0, invol0 = server.usage()
        latencies, wall = call(server.stub, callers, calls)
        cpu1, vol1, invol1 = server.usage()
        done = len(latencies)
        self.latencies.extend(latencies)
        self.rates.append(done / wall)
        self.cpu_us.append((cpu1 - cpu0) * 1e6 / done)
        self.voluntary.append((vol1 - vol0) / done)
        self.involuntary.append((invol1 - invol0) / done)


def syscalls(server: Server, calls: int, directory: Path) -> dict[str, float]:
    """The server's system calls per call by name, and ``total`` (``strace -f -c`` over one 1-caller phase,
    attached one second before it; strace slows the calls, the counts are what matters)."""
    out = directory / f"{server.mode}.strace"
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-qq", "-o", str(out), "-p", str(server.process.pid)], stderr=subprocess.PIPE
    )
    time.sleep(1.0)
    latencies, _ = call(server.stub, 1, calls)
    tracer.send_signal(signal.SIGINT)
    _, err = tracer.communicate(timeout=30)
    if tracer.returncode not in (0, -signal.SIGINT) or not out.exists():
        raise SystemExit(f"strace of the {server.mode} server failed: {err.decode().strip()}")
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        fields = line.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) >= 5 and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3]) / len(latencies)
    if "total" not in counts:
        raise SystemExit(f"no summary in {out}: {out.read_text()[:300]!r}")
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    """Start the three servers, interleave the rounds, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1000, help="calls per phase (a multiple of 8)")
    parser.add_argument("--work-ms", type=float, default=0.3, help="the handler's CPU per call")
    parser.add_argument(
        "--strace", action="store_true", help="also count the servers' system calls a call (strace -f -c)"
    )
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--socket", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.socket, args.work_ms)
        return
    with tempfile.TemporaryDirectory(prefix="nvdra-grpc-modes-") as tmp:
        servers = [Server(mode, Path(tmp), args.work_ms) for mode in MODES]
        try:
            phases = {(s.mode, c): Phase() for s in servers for c in CALLERS}
            for server in servers:
                for callers in CALLERS:
                    call(server.stub, callers, WARMUP_CALLS)
            load0 = os.getloadavg()[0]
            for round_ in range(args.rounds):
                shift = round_ % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    for callers in CALLERS:
                        phases[server.mode, callers].add(server, callers, args.calls)
            load1 = os.getloadavg()[0]
            traced = {s.mode: syscalls(s, args.calls, Path(tmp)) for s in servers} if args.strace else {}
        finally:
            for server in servers:
                server.close()
    print(
        f"{args.rounds} rounds x {args.calls} calls a phase, handler work {args.work_ms} ms, "
        f"load {load0:.1f} -> {load1:.1f}; medians of the rounds, p50/p99 of all calls; the handler's CPU "
        + ", ".join(f"{s.mode} {s.work_us:.0f} us" for s in servers)
    )
    rows: list[tuple[str, Callable[[Phase], str]]] = [
        ("round trip p50 ms", lambda p: f"{pct(p.latencies, 0.5):.3f}"),
        ("round trip p99 ms", lambda p: f"{pct(p.latencies, 0.99):.3f}"),
        ("calls/s", lambda p: f"{statistics.median(p.rates):.0f}"),
        ("server CPU us/call", lambda p: f"{statistics.median(p.cpu_us):.0f}"),
        (
            "ctx switches/call vol+invol",
            lambda p: f"{statistics.median(p.voluntary):.1f}+{statistics.median(p.involuntary):.1f}",
        ),
    ]
    for callers in CALLERS:
        sync = phases["sync", callers]
        print(f"\n{callers} caller{'s' if callers > 1 else ''}:")
        print(f"{'':30}" + "".join(f"{mode:>14}" for mode in MODES))
        for label, cell in rows:
            print(f"{label:30}" + "".join(f"{cell(phases[mode, callers]):>14}" for mode in MODES))
        ratios = (phases[mode, callers].cpu_ratio(sync) for mode in MODES)
        print(f"{'CPU / sync, same round':30}" + "".join(f"{r:>14.2f}" for r in ratios))
    if traced:
        print(f"\nstrace -f -c, 1 caller, {args.calls} calls:")
        print(f"{'':30}" + "".join(f"{mode:>14}" for mode in MODES))
        print(f"{'futex calls/call':30}" + "".join(f"{traced[m].get('futex', 0):>14.1f}" for m in MODES))
        print(f"{'system calls/call':30}" + "".join(f"{traced[m]['total']:>14.1f}" for m in MODES))
        for mode in MODES:
            ranked = sorted(((n, c) for n, c in traced[mode].items() if n != "total"), key=lambda x: -x[1])
            print(f"  {mode}: " + ", ".join(f"{name} {count:.1f}" for name, count in ranked[:6]))


if __name__ == "__main__":
    main()
