"""Start-up of the kubelet plugins measured from outside: start → registered, → slices visible, and what
each process imports before it serves its sockets (``python -X importtime``).

For each plugin (``nvdra-gpu-plugin --simulate dgx-h100``, ``nvdra-cd-plugin --simulate dgx-h100``):
an API server process (plugin_bench's ``--serve-api``), the plugin's console script, and this process as
the kubelet, which registers the plugin as soon as its registration socket appears.

- start → registered: spawning the plugin until the kubelet stand-in's NotifyRegistrationStatus returns
  (and, inside it, start → socket: until the registration socket exists);
- start → slices visible: until the API server reports the driver's first ResourceSlice of the node, on a
  watch opened before the spawn (event-driven: polling the in-memory API server every few ms would take
  CPU from the plugin on a 2-core box while it builds its driver after registering);
- floor, in the same run: the interpreter alone (``python -c pass``) and the interpreter importing only
  grpc (what serving a socket needs at the least) — the part of the start-up no plugin code can remove;
  and the kubelet stand-in's own share of "registered": its first call on a new gRPC channel to the
  running plugin (a new client, GetInfo), which the real kubelet (Go) pays far less of;
- one more start with ``PYTHONPROFILEIMPORTTIME=1``: the modules imported before the plugin logged that
  it serves its sockets (from then on the kubelet can register it; the driver is built afterwards),
  grouped by top-level package (the sum of each module's own import time), and the heavy packages
  (``kubernetes``, ``yaml``, ``cel``, ``prometheus_client``...) named if any was imported then.

And the ComputeDomain controller's RSS (``nvdra-cd-controller`` against the same kind of API server,
3 s after its start), without and with its metrics served on ``--http-endpoint`` (scraped once).

``--baseline-src DIR`` also measures another checkout's ``src`` (e.g. ``git archive HEAD~3 src | tar -x``)
in the same run, interleaved with this one, so that a change is measured beside what it replaces.

Usage: python benchmarks/startup.py [--runs 7] [--baseline-src DIR] [--out startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from nvdra.kubeletplugin import KubeletClient, KubernetesKubeApi
from nvdra.kubeletplugin.objects import RESOURCE_SLICES

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from plugin_bench import NODE, SCENARIOS, Node, rss_mib  # noqa: E402

HEAVY = ("kubernetes", "yaml", "celpy", "cel", "prometheus_client", "cryptography", "jsonschema")
PLUGINS = {
    "gpu": {"script": "nvdra-gpu-plugin", "driver": "gpu.nvidia.com"},
    "cd": {"script": "nvdra-cd-plugin", "driver": "compute-domain.nvidia.com"},
}
SERVING_LOG = "DRA plugin {driver} on node"  # the helper's line once both sockets are served


def spawn(node: Node, plugin: str, *, env: dict[str, str] | None = None, stderr: Any = None) -> float:
    """Start ``plugin`` against ``node``'s API server; the start time (perf_counter)."""
    script = str(Path(sys.executable).parent / PLUGINS[plugin]["script"])
    args = [
        script,
        *("--simulate", "dgx-h100", "--node-name", NODE),
        *("--kubeconfig", str(node.kubeconfig), "--cdi-root", str(node.tmp / "cdi")),
        *("--kubelet-registrar-directory-path", str(node.reg)),
        *("--kubelet-plugins-directory-path", str(node.tmp / "plugins")),
    ]
    started = time.perf_counter()
    node.plugin = subprocess.Popen(
        args, stderr=stderr if stderr is not None else subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    return started


def one_start(plugin: str, *, env: dict[str, str] | None = None, stderr: Any = None) -> dict[str, float]:
    """A fresh API server and plugin; milliseconds to registered and to slices visible."""
    driver = PLUGINS[plugin]["driver"]
    with Node(SCENARIOS["full-gpu"], [["gpu-0"]], 1) as node, KubeletClient(node.reg) as kubelet:
        kube = KubernetesKubeApi.from_kubeconfig(str(node.kubeconfig))
        slices = kube.watch_objects(RESOURCE_SLICES, timeout_s=60)
        sock = node.reg / f"{driver}-reg.sock"
        started = spawn(node, plugin, env=env, stderr=stderr)
        while not sock.exists():
            if time.perf_counter() - started > 60:
                raise TimeoutError(f"{plugin}: no registration socket after 60 s")
            time.sleep(0.001)
        socket_up = time.perf_counter() - started
        kubelet.register(sock)
        registered = time.perf_counter() - started
        with KubeletClient(node.reg) as fresh:  # the stand-in's own cost: a new channel and one call
            t0 = time.perf_counter()
            fresh.get_info(sock)
            stand_in = time.perf_counter() - t0
        for event in slices:
            spec = event.object.get("spec") or {}
            if event.type == "ADDED" and spec.get("driver") == driver and spec.get("nodeName") == NODE:
                break
        else:
            raise TimeoutError(f"{plugin}: no ResourceSlice after 60 s")
        visible = time.perf_counter() - started
        slices.close()
        kube.close()
        time.sleep(1.0)  # settled: publishing done, threads started
        assert node.plugin is not None
        rss = rss_mib(node.plugin.pid)
    return {
        "socket_ms": socket_up * 1000,
        "registered_ms": registered * 1000,
        "slices_visible_ms": visible * 1000,
        "rss_mib": rss,
        "stand_in_first_call_ms": stand_in * 1000,
    }


def controller_rss(env: dict[str, str], settle: float = 3.0, *, metrics: bool = False) -> float:
    """VmRSS (MiB) of ``nvdra-cd-controller`` against an API server, ``settle`` seconds after its start
    (``metrics``: serving them on ``--http-endpoint``, scraped once before the reading)."""
    with Node(SCENARIOS["full-gpu"], [["gpu-0"]], 1) as node:
        port = 0
        if metrics:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        args = [
            str(Path(sys.executable).parent / "nvdra-cd-controller"),
            *("--kubeconfig", str(node.kubeconfig), "--pod-name", "bench"),
            *("--leader-election-enabled", "false", "--image-name", "bench"),
            *(("--http-endpoint", f"127.0.0.1:{port}") if metrics else ()),
        ]
        proc = subprocess.Popen(args, stderr=subprocess.DEVNULL, env={**os.environ, **env})
        try:
            time.sleep(settle)
            if proc.poll() is not None:
                raise RuntimeError(f"nvdra-cd-controller exited with {proc.returncode}")
            if metrics:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                    answer.read()
            return rss_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def interpreter_ms(code: str) -> float:
    """Milliseconds to run ``python -c code`` to its end."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - t0) * 1000


def import_breakdown(plugin: str, env: dict[str, str]) -> dict[str, Any]:
    """Imports the plugin completed before it served its sockets (the kubelet can register it from
    then on; what it imports afterwards, while building its driver, does not delay registration), by
    top-level package (ms)."""
    with tempfile.TemporaryFile("w+") as err:
        one_start(plugin, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, stderr=err)
        err.seek(0)
        lines = err.read().splitlines()
    by_package: dict[str, float] = defaultdict(float)
    modules: list[str] = []
    marker = SERVING_LOG.format(driver=PLUGINS[plugin]["driver"])
    serving = False
    for line in lines:
        if marker in line:
            serving = True
            break
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        self_us, _, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        modules.append(name)
        by_package[name.split(".")[0]] += int(self_us) / 1000  # each module's own time, by package
    if not serving:
        raise RuntimeError(f"{plugin}: the log has no {marker!r} line")
    tops = {m.split(".")[0] for m in modules}
    return {
        "modules_before_serving": len(modules),
        "heavy_before_serving": sorted(t for t in tops if t in HEAVY),
        "total_import_ms": sum(by_package.values()),
        "top_level_ms": dict(sorted(by_package.items(), key=lambda kv: -kv[1])[:12]),
    }


def main() -> None:
    """Measure both plugins; print a table; write JSON to --out when given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--plugins", default="gpu,cd")
    parser.add_argument("--baseline-src", help="another checkout's src/ to measure beside this one")
    parser.add_argument("--out")
    args = parser.parse_args()
    summary: dict[str, Any] = {"load": os.getloadavg(), "plugins": {}}
    floor_pass = [interpreter_ms("pass") for _ in range(args.runs)]
    floor_grpc = [interpreter_ms("import grpc") for _ in range(args.runs)]
    summary["floor"] = {
        "python_pass_ms": statistics.median(floor_pass),
        "python_import_grpc_ms": statistics.median(floor_grpc),
    }
    print(
        f"load {summary['load'][0]:.1f}; floor: python -c pass {summary['floor']['python_pass_ms']:.0f} ms, "
        f"python -c 'import grpc' {summary['floor']['python_import_grpc_ms']:.0f} ms (median of {args.runs})"
    )
    variants: dict[str, dict[str, str]] = {"this": {}}
    if args.baseline_src:
        variants["baseline"] = {"PYTHONPATH": str(Path(args.baseline_src).resolve())}
    for plugin in args.plugins.split(","):
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for env in variants.values():
            one_start(plugin, env=env)  # warm the page cache
        for _ in range(args.runs):  # interleaved, so that both see the same load
            for name, env in variants.items():
                runs[name].append(one_start(plugin, env=env))
        for name, env in variants.items():
            reg = statistics.median(r["registered_ms"] for r in runs[name])
            sock = statistics.median(r["socket_ms"] for r in runs[name])
            rss = statistics.median(r["rss_mib"] for r in runs[name])
            stand_in = statistics.median(r["stand_in_first_call_ms"] for r in runs[name])
            vis = statistics.median(r["slices_visible_ms"] for r in runs[name])
            breakdown = import_breakdown(plugin, env)
            summary["plugins"][f"{plugin} ({name})"] = {
                "runs": runs[name],
                "registered_p50_ms": reg,
                "socket_p50_ms": sock,
                "slices_visible_p50_ms": vis,
                "rss_idle_mib": rss,
                "stand_in_first_call_p50_ms": stand_in,
                "registered_over_grpc_floor": reg / summary["floor"]["python_import_grpc_ms"],
                **breakdown,
            }
            low = (
                min(r["registered_ms"] for r in runs[name]),
                min(r["slices_visible_ms"] for r in runs[name]),
            )
            print(
                f"{PLUGINS[plugin]['script']:<17} {name:<8} start → socket p50 {sock:5.0f} ms  "
                f"→ registered p50 {reg:5.0f} ms  "
                f"→ slices visible p50 {vis:5.0f} ms  (min {low[0]:.0f} / {low[1]:.0f} ms)  "
                f"idle RSS {rss:.1f} MiB  (stand-in's first call on a new channel {stand_in:.0f} ms)"
            )
            heavy = ", ".join(breakdown["heavy_before_serving"]) or "none"
            count = breakdown["modules_before_serving"]
            print(f"  imported before serving the sockets: {count} modules; heavy: {heavy}")
            print(
                f"  import time before serving {breakdown['total_import_ms']:.0f} ms; by package (ms): "
                + ", ".join(f"{k} {v:.0f}" for k, v in breakdown["top_level_ms"].items())
            )
    for name, env in variants.items():
        for metrics, label in ((False, name), (True, f"{name}, metrics served")):
            summary[f"controller_rss_mib ({label})"] = rss = controller_rss(env, metrics=metrics)
            print(f"nvdra-cd-controller {label:<22} RSS {rss:.1f} MiB after 3 s")
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
