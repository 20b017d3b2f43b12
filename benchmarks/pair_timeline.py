"""Where the wall-clock of a full-GPU prepare+unprepare pair goes inside the plugin (p50 per step).

Runs ``prepare_latency.py`` with the plugin started through this script, which wraps the steps of the
critical path (gRPC handler, claim GET, group commit, driver, checkpoint save, spec write/removal, the
encoders) with ``perf_counter_ns`` spans and writes them out when the plugin exits. Then prints, for each
kind of call, the p50 of each step (steps on another thread than the handler's are marked), when the
I/O thread started after the handler's entry, and the p50 time between a handler's return and the next
handler's entry (gRPC both ways and the kubelet stand-in: what the floor's round trip measures).

The spans cost a few microseconds each; compare steps with each other, not with an unwrapped run.

Usage: python benchmarks/pair_timeline.py [--pairs 300] [--warmup 50]
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HANDLERS = ("DraServicer.NodePrepareResources", "DraServicer.NodeUnprepareResources")
STEPS = [
    ("nvdra.kubeletplugin.service", "DraServicer.NodePrepareResources"),
    ("nvdra.kubeletplugin.service", "DraServicer.NodeUnprepareResources"),
    ("nvdra.kubeletplugin.service", "DraService._fetch"),
    ("nvdra.kubeletplugin.groupcommit", "GroupCommit.run"),
    ("nvdra.kubeletplugin._grpc", "claims_from_pb"),
    ("nvdra.kubeletplugin._grpc", "prepare_response_to_pb"),
    ("nvdra.kubeletplugin._grpc", "unprepare_response_to_pb"),
    ("nvdra.plugins.gpu.driver", "GpuDriver.prepare_resource_claims"),
    ("nvdra.plugins.gpu.driver", "GpuDriver.unprepare_resource_claims"),
    ("nvdra.plugins.gpu.driver", "GpuDriver._refresh"),
    ("nvdra.plugins.gpu.driver", "GpuDriver._plan"),
    ("nvdra.plugins.gpu.driver", "GpuDriver._apply"),
    ("nvdra.plugins.gpu.driver", "GpuDriver.device_status"),
    ("nvdra.plugins.gpu.driver", "_run_each"),
    ("nvdra.plugins.state", "CheckpointStore.save"),
    ("nvdra.core.checkpoint", "CheckpointEncoder.encode"),
    ("nvdra.plugins.gpu.cdi", "GpuClaimSpecs.write"),
    ("nvdra.plugins.gpu.cdi", "GpuClaimSpecs.remove"),
    ("nvdra.cdi.writer", "encode_spec"),
    ("nvdra.cdi.writer", "fsync_directory"),
]
Span = tuple[str, int, int, int]  # step, start ns, end ns, thread id


def run_plugin(out: str, argv: list[str]) -> int:
    """The GPU plugin with every step of STEPS timed; the spans go to ``out`` as JSON at exit."""
    spans: list[Span] = []

    def timed(step: str, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return call(*args, **kwargs)
            finally:
                spans.append((step, start, time.perf_counter_ns(), threading.get_ident()))

        return wrapper

    for module, step in STEPS:
        owner: Any = importlib.import_module(module)
        *path, name = step.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, timed(step, getattr(owner, name)))
    atexit.register(lambda: Path(out).write_text(json.dumps(spans)))
    from nvdra.plugins.gpu.main import main

    sys.argv = ["nvdra-gpu-plugin", *argv]
    return main() or 0


def report(spans: list[Span], warmup: int) -> None:
    """Print each call kind's step p50s, the I/O thread's start and the time between calls."""
    spans.sort(key=lambda s: s[1])
    calls = [s for s in spans if s[0] in HANDLERS][2 * warmup :]
    for kind in HANDLERS:
        steps: dict[str, list[float]] = {}
        for _, t0, t1, tid in (c for c in calls if c[0] == kind):
            steps.setdefault("whole handler", []).append((t1 - t0) / 1e3)
            io_start = None
            for s in spans:
                if s[1] < t0 or s[2] > t1 or s[1] == t0:
                    continue
                name = s[0] if s[3] == tid else f"{s[0]} [I/O thread]"
                steps.setdefault(name, []).append((s[2] - s[1]) / 1e3)
                if s[0] == "_run_each" and s[3] != tid and io_start is None:
                    io_start = (s[1] - t0) / 1e3
            if io_start is not None:
                steps.setdefault("I/O thread starts after the handler's entry", []).append(io_start)
        print(f"{kind.split('.')[1]} ({len(steps.get('whole handler', []))} calls), p50 in µs:")
        for name, values in sorted(steps.items(), key=lambda kv: -statistics.median(kv[1])):
            print(f"  {statistics.median(values):8.0f}  {name}")
    gaps = [(calls[i + 1][1] - calls[i][2]) / 1e3 for i in range(len(calls) - 1)]
    print(f"between a handler's return and the next handler's entry: p50 {statistics.median(gaps):.0f} µs")


def main() -> None:
    """Run prepare_latency.py through the timed plugin, then report."""
    if sys.argv[1:2] == ["--plugin"]:
        sys.exit(run_plugin(sys.argv[2], sys.argv[3:]))
    sys.path.insert(0, str(HERE))
    import prepare_latency

    warmup = 50
    if "--warmup" in sys.argv:
        warmup = int(sys.argv[sys.argv.index("--warmup") + 1])
    out = Path(tempfile.mkdtemp(prefix="nvdra-timeline-")) / "spans.json"
    os.environ["NVDRA_PLUGIN_CMD"] = f"{sys.executable} {Path(__file__).resolve()} --plugin {out}"
    prepare_latency.main()
    report(json.loads(out.read_text()), warmup)


if __name__ == "__main__":
    main()
