"""``nvdra demo``: the whole GPU flow on a simulated node, in a few seconds, with nothing to install.

The scenarios are the upstream quickstart's: one GPU per pod (gpu-test1), one GPU shared by two
containers (gpu-test2) and by two pods (gpu-test3), TimeSlicing and MPS (gpu-test5), a claim with a
broken config, then a dynamic MIG slice pair. What runs is the production code (see
:mod:`nvdra.tool.demo_session`); what the demo shows after each call is read back from the
simulated node itself — the simulated GPUs' compute mode, time slice and MIG instances, the MPS
Deployment in the API, the CDI specs on disk, the checkpoint.

MPSSupport and DynamicMIG exclude each other, so the plugin runs twice: first with
``TimeSlicingSettings`` and ``MPSSupport``, then restarted with ``DynamicMIG``.
"""

from __future__ import annotations

__all__ = ["DEMO_CLAIMS", "MIG_GATES", "SHARING_GATES", "allocated_claim", "run_demo"]

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from nvdra.alloc import Quantity
from nvdra.core.sharing import TIMESLICE_KIND
from nvdra.kubeletplugin.objects import DEPLOYMENTS
from nvdra.nvml import SimulatedNvml
from nvdra.plugins.gpu.hostcmd import COMPUTE_MODES, SimulatedHostCommands
from nvdra.plugins.gpu.sharing import TimeSlicingExecutor
from nvdra.tool.demo_session import (
    NAMESPACE,
    DemoClaim,
    DemoSession,
    DemoSkip,
    Out,
    allocated_claim,
    demo_cluster,
    gpu_request,
    table,
)

SHARING_GATES = "TimeSlicingSettings=true,MPSSupport=true"
MIG_GATES = "DynamicMIG=true"
_MODE_NAMES = {v: k for k, v in COMPUTE_MODES.items()}
T = TypeVar("T")
_INTERVALS = {0: "Default", 1: "Short", 2: "Medium", 3: "Long"}


def _gpu_config(**sharing: Any) -> dict[str, Any]:
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": sharing}


GPU_TEST1 = tuple(
    DemoClaim(name=f"gpu-test1-{pod}", title="", pods=(pod,), containers=("ctr",)) for pod in ("pod0", "pod1")
)
GPU_TEST2 = DemoClaim(
    name="gpu-test2",
    title="gpu-test2: one GPU shared by two containers of a pod (the user's demo)",
    containers=("ctr0", "ctr1"),
)
GPU_TEST3 = DemoClaim(
    name="gpu-test3",
    title="gpu-test3: one claim shared by two pods (reservedFor pod0 and pod1)",
    pods=("pod0", "pod1"),
    containers=("ctr",),
)
TIME_SLICING = DemoClaim(
    name="gpu-test-timeslicing",
    title="TimeSlicing with interval Long, two containers (gpu-test5)",
    parameters=_gpu_config(strategy="TimeSlicing", timeSlicingConfig={"interval": "Long"}),
    containers=("ctr0", "ctr1"),
)
MPS = DemoClaim(
    name="gpu-test-mps",
    title="MPS, 50 % of the SMs and 10Gi pinned memory per client (gpu-test5, gpu-test-mps)",
    parameters=_gpu_config(
        strategy="MPS",
        mpsConfig={"defaultActiveThreadPercentage": 50, "defaultPinnedDeviceMemoryLimit": "10Gi"},
    ),
    containers=("ctr0", "ctr1"),
)
BAD_CONFIG = DemoClaim(
    name="bad-config",
    title="a claim whose opaque config has a typo (refused, nothing left behind)",
    parameters=_gpu_config(strategy="TimeSlicing", timeSlicingConfg={"interval": "Long"}),
)
_PROFILE_CEL = "device.attributes['gpu.nvidia.com'].profile == '{}'"
DYNAMIC_MIG = DemoClaim(
    name="gpu-test-dynamic-mig",
    title="a 1g.10gb and a 2g.20gb MIG slice of one GPU, cut at prepare (gpu-test-dynamic-mig)",
    requests=(
        gpu_request("small", device_class="mig.nvidia.com", cel=_PROFILE_CEL.format("1g.10gb")),
        gpu_request("medium", device_class="mig.nvidia.com", cel=_PROFILE_CEL.format("2g.20gb")),
    ),
    constraints=({"requests": ["small", "medium"], "matchAttribute": "gpu.nvidia.com/parentUUID"},),
    parameters={"apiVersion": "resource.nvidia.com/v1beta1", "kind": "MigDeviceConfig"},
    containers=("ctr-small", "ctr-medium"),
)
DEMO_CLAIMS = (*GPU_TEST1, GPU_TEST2, GPU_TEST3, TIME_SLICING, MPS, BAD_CONFIG, DYNAMIC_MIG)
"""Every claim the demo allocates, in order."""


def _attr(device: dict[str, Any], key: str) -> str:
    return str(next(iter(device["attributes"].get(key, {"": ""}).values())))


def _show_slices(s: DemoSession) -> None:
    devices = [d for sl in s.slices for d in sl["spec"].get("devices", [])]
    pool = s.slices[0]["spec"]["pool"]
    s.out(
        f"  {len(s.slices)} ResourceSlice(s) of driver {s.slices[0]['spec']['driver']}, pool "
        f"{pool['name']} (generation {pool['generation']}): {len(devices)} devices"
    )
    table(
        [
            {
                "DEVICE": d["name"],
                "TYPE": _attr(d, "type"),
                "PRODUCT": _attr(d, "productName"),
                "MEMORY": d.get("capacity", {}).get("memory", {}).get("value", ""),
                "UUID": _attr(d, "uuid"),
                "PCI": _attr(d, "resource.kubernetes.io/pciBusID"),
            }
            for d in devices
        ],
        s.out,
    )


def _sim(s: DemoSession) -> SimulatedNvml:
    backend = s.plugin.backend
    if not isinstance(backend, SimulatedNvml):
        raise TypeError("the demo reads state back from a simulated node only")
    return backend


def _gpu_state(s: DemoSession, uuid: str) -> str:
    """Compute mode and time slice of one simulated GPU, as nvidia-smi would report them."""
    sim = _sim(s)
    mode = _MODE_NAMES.get(sim.compute_mode(sim.index_by_uuid(uuid)), "?")
    executor = s.plugin.effects.executor(TIMESLICE_KIND) if s.plugin.effects else None
    runner = executor.runner if isinstance(executor, TimeSlicingExecutor) else None
    if not isinstance(runner, SimulatedHostCommands):
        return f"compute mode {mode}"
    value = runner.timeslice(uuid)
    return f"compute mode {mode}, time slice {value} ({_INTERVALS.get(value, '?')})"


def _prepare(s: DemoSession, demo: DemoClaim, title: str | None = None) -> dict[str, Any] | None:
    """Allocate, prepare for the claim's first pod, print what each container gets; the claim or None."""
    s.section(title or demo.title)
    claim = s.allocate(demo)
    results = claim["status"]["allocation"]["devices"]["results"]
    _, result, ms = s.prepare(claim)
    allocated = ", ".join(f"{r['device']} ({r['request']})" for r in results)
    s.out(f"  allocated {allocated}; NodePrepareResources took {ms:.1f} ms")
    if result.error:
        s.out(f"  refused: {result.error}")
        s.out(f"  CDI files left for it: {s.cdi_files(claim['metadata']['uid']) or 'none'}")
        return None
    ids = [i for d in result.devices for i in d.cdi_device_ids]
    s.out(f"  {demo.pods[0]} (containers {', '.join(demo.containers)}) gets CDI devices:")
    for i in ids:
        s.out(f"    {i}")
    return claim


def _uuids(s: DemoSession, claim: dict[str, Any]) -> list[str]:
    by_name = {d["name"]: _attr(d, "uuid") for sl in s.slices for d in sl["spec"].get("devices", [])}
    return [by_name[r["device"]] for r in claim["status"]["allocation"]["devices"]["results"]]


def _gpu_test1(s: DemoSession) -> None:
    s.section("gpu-test1: two pods, each with its own GPU (one claim per pod from a template)")
    for demo in GPU_TEST1:
        claim = s.allocate(demo)
        _, result, ms = s.prepare(claim)
        device = claim["status"]["allocation"]["devices"]["results"][0]["device"]
        ids = [i for d in result.devices for i in d.cdi_device_ids]
        s.out(f"  {demo.pods[0]}: claim {demo.name} -> {device} ({ms:.1f} ms); CDI {ids or result.error}")


def _gpu_test2(s: DemoSession) -> None:
    claim = _prepare(s, GPU_TEST2)
    if claim is None:
        return
    path = next(s.plugin.config.cdi_root.glob(f"*{claim['metadata']['uid']}.yaml"))
    text = path.read_text().splitlines()
    s.out(f"  CDI spec {path.name} ({len(text)} lines; device section):")
    for line in text[: text.index("containerEdits:") if "containerEdits:" in text else 12][:16]:
        s.out("    " + line)
    s.out(
        f"    containerEdits: {sum(1 for x in text if 'hostPath:' in x)} host paths "
        f"(device nodes, driver libraries, binaries), {sum(1 for x in text if 'hookName' in x)} "
        "nvidia-cdi-hook hooks"
    )


def _gpu_test3(s: DemoSession) -> None:
    claim = _prepare(s, GPU_TEST3)
    if claim is None:
        return
    # The kubelet prepares a claim for every pod that uses it; the plugin answers from its checkpoint.
    _, again, ms = s.prepare(claim)
    ids = [i for d in again.devices for i in d.cdi_device_ids]
    entries = sum(1 for uid in s.plugin.driver.checkpoint().claims if uid == claim["metadata"]["uid"])
    s.out(f"  pod1 prepared the same claim ({ms:.1f} ms; checkpoint entries for it: {entries}):")
    for i in ids or [again.error]:
        s.out(f"    {i}")


def _time_slicing(s: DemoSession) -> list[str]:
    claim = _prepare(s, TIME_SLICING)
    uuids = _uuids(s, claim) if claim else []
    for uuid in uuids:
        s.out(f"  simulated GPU {uuid}: {_gpu_state(s, uuid)}")
    return uuids


def _mps(s: DemoSession) -> list[str]:
    claim = _prepare(s, MPS)
    if claim is None:
        return []
    uuids = _uuids(s, claim)
    for dep in s.store.objects.list_objects(DEPLOYMENTS, NAMESPACE):
        env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        s.out(
            f"  Deployment {NAMESPACE}/{dep['metadata']['name']} on node "
            f"{dep['spec']['template']['spec']['nodeName']}, readyReplicas "
            f"{(dep.get('status') or {}).get('readyReplicas')} (the demo's stand-in kube controller)"
        )
        s.out(
            f"    MPS_ACTIVE_THREAD_PERCENTAGE={env.get('MPS_ACTIVE_THREAD_PERCENTAGE')} "
            f"MPS_PINNED_MEMORY_LIMITS={env.get('MPS_PINNED_MEMORY_LIMITS')}"
        )
    edits: dict[str, list[Any]] = s.claim_spec(claim["metadata"]["uid"]).get("containerEdits") or {}
    mps_dir = str(s.plugin.config.plugin_dir / "mps")
    mps_env = [e for e in edits.get("env") or [] if e.startswith("CUDA_MPS")]
    mounts = [m["containerPath"] for m in edits.get("mounts") or [] if m["hostPath"].startswith(mps_dir)]
    s.out(f"  the claim's CDI spec adds env {mps_env} and mounts the daemon's {mounts}")
    for uuid in uuids:
        s.out(f"  simulated GPU {uuid}: {_gpu_state(s, uuid)}")
    return uuids


def _unprepare_all(s: DemoSession, watched: list[str]) -> None:
    s.section(f"NodeUnprepareResources for the {len(s.prepared)} prepared claims")
    t0 = time.perf_counter()
    errors = s.kubelet.unprepare(list(s.prepared))
    ms = (time.perf_counter() - t0) * 1000
    s.prepared.clear()
    s.out(f"  {'ok' if not any(errors.values()) else errors} in {ms:.1f} ms")
    for uuid in watched:
        s.out(f"  simulated GPU {uuid}: {_gpu_state(s, uuid)}")
    deployments = [d["metadata"]["name"] for d in s.store.objects.list_objects(DEPLOYMENTS, NAMESPACE)]
    s.out(
        f"  MPS Deployments left: {deployments or 'none'}; CDI specs left: {s.cdi_files() or 'none'}; "
        f"checkpoint entries: {len(s.plugin.driver.checkpoint().claims)}"
    )


def _mig_rows(s: DemoSession) -> list[dict[str, str]]:
    sim = _sim(s)
    rows = []
    for gpu in sim.snapshot().gpus:
        names = {p.id: p.name.removeprefix("MIG ") for p in sim.gpu_instance_profiles(gpu.index)}
        for mig in sim.mig_devices(gpu.index):
            end = mig.placement.start + mig.placement.size - 1
            rows.append(
                {
                    "GPU": str(gpu.index),
                    "MIG MODE": "on" if gpu.mig_current else "off",
                    "GI": str(mig.gi_id),
                    "PROFILE": names.get(mig.gi_profile_id, str(mig.gi_profile_id)),
                    "MEMORY SLICES": f"{mig.placement.start}..{end}",
                    "CI": str(mig.ci_id),
                    "MIG UUID": mig.uuid,
                }
            )
    return rows


def _dynamic_mig(s: DemoSession) -> None:
    devices = [d for sl in s.slices for d in sl["spec"].get("devices", [])]
    counter_sets = [c for sl in s.slices for c in sl["spec"].get("sharedCounters") or []]
    migs = sum(1 for d in devices if _attr(d, "type") == "mig")
    first = ", ".join(c["name"] for c in counter_sets[:2])
    s.out(
        f"  {len(s.slices)} ResourceSlices: {len(devices) - migs} full GPUs and {migs} MIG placements, "
        f"all consuming {len(counter_sets)} counter sets ({first}, …)"
    )
    demo = _mig_claim(s)
    if demo is None:
        s.section(DYNAMIC_MIG.title)
        raise DemoSkip(
            "no MIG placement published: no GPU of this node can be partitioned on demand (no MIG "
            "support, or MIG mode off on GPUs that need a reset to turn it on)"
        )
    claim = _prepare(s, demo)
    if claim is None:
        return
    s.out("  MIG devices on the simulated GPUs now (NVML snapshot):")
    table(_mig_rows(s), s.out)
    s.section("NodeUnprepareResources for the MIG claim")
    errors = s.kubelet.unprepare(list(s.prepared))
    s.prepared.clear()
    mig_on = [g.index for g in _sim(s).snapshot().gpus if g.mig_current]
    s.out(
        f"  {'ok' if not any(errors.values()) else errors}; MIG devices left: {len(_mig_rows(s))}; "
        f"GPUs with MIG mode on: {mig_on or 'none'}; CDI specs left: {s.cdi_files() or 'none'}"
    )


def run_demo(out: Out, *, profile: str = "dgx-h100") -> None:
    """Run the demo, printing through ``out``. The plugin's own log goes quiet below errors: the demo
    reports refusals itself."""
    quiet = logging.getLogger("nvdra")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        _run(out, profile)
    finally:
        quiet.setLevel(level)


def _mig_claim(s: DemoSession) -> DemoClaim | None:
    """The dynamic-MIG scenario for this node: its two smallest MIG profiles on one GPU (None when the
    node publishes no MIG placement: its GPUs do not support MIG)."""
    profiles: dict[str, float] = {}
    for sl in s.slices:
        for d in sl["spec"].get("devices", []):
            if _attr(d, "type") == "mig":
                memory = d.get("capacity", {}).get("memory", {}).get("value", "0")
                profiles[_attr(d, "profile")] = float(Quantity.parse(str(memory)).value)
    plain = sorted((p for p in profiles if "+" not in p), key=lambda p: (profiles[p], p))
    ones = [p for p in plain if p.startswith("1g.")]
    twos = [p for p in plain if p.startswith("2g.")]
    if not ones or len(plain) < 2:
        return None
    small = ones[0]  # the smallest slice, and one of twice its compute (else the next size up)
    medium = twos[0] if twos else next(p for p in plain if p != small)
    return attrs.evolve(
        DYNAMIC_MIG,
        title=f"a {small} and a {medium} MIG slice of one GPU, cut at prepare (gpu-test-dynamic-mig)",
        requests=(
            gpu_request("small", device_class="mig.nvidia.com", cel=_PROFILE_CEL.format(small)),
            gpu_request("medium", device_class="mig.nvidia.com", cel=_PROFILE_CEL.format(medium)),
        ),
    )


def _scenario(s: DemoSession, run: Callable[[DemoSession], T], skipped: T) -> T:
    """Run one scenario; where the node cannot serve it, say so (and why) and go on."""
    try:
        return run(s)
    except DemoSkip as exc:
        s.out(f"  skipped on this node: {exc}")
        return skipped


def _run(out: Out, profile: str) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nvdra-demo-") as tmpdir:
        tmp = Path(tmpdir)
        out(f"nvdra demo: simulated node {profile}, in-process API server, unix sockets in {tmp}")
        with demo_cluster(tmp / "sharing", profile, SHARING_GATES, out, 0) as s:
            _show_slices(s)
            _scenario(s, _gpu_test1, None)
            _scenario(s, _gpu_test2, None)
            _scenario(s, _gpu_test3, None)
            none: list[str] = []
            watched = _scenario(s, _time_slicing, none)
            watched += _scenario(s, _mps, none)
            _scenario(s, lambda s: _prepare(s, BAD_CONFIG), None)
            _unprepare_all(s, watched)
            step = s.step
        out("\n--- the plugin stops and starts again with DynamicMIG (it excludes MPSSupport) ---")
        with demo_cluster(tmp / "mig", profile, MIG_GATES, out, step) as s:
            _scenario(s, _dynamic_mig, None)
    out(f"\ndone in {time.perf_counter() - started:.1f} s")
