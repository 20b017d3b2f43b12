"""``nvdra demo``: the whole GPU flow on a simulated node, in a few seconds, with nothing to install.

What runs is the production code: :func:`nvdra.plugins.gpu.serve.serve` starts the plugin exactly as
``nvdra-gpu-plugin --simulate dgx-h100`` does, against an in-process Kubernetes API server (HTTP, the
real ``kubernetes`` client adapter), on real unix sockets in a temporary directory. A
:class:`~nvdra.kubeletplugin.KubeletClient` then does what the kubelet does: registers the plugin,
and calls NodePrepareResources / NodeUnprepareResources for allocated claims.

Each claim is allocated by :mod:`nvdra.alloc` (the scheduler's rules, the chart's DeviceClasses)
against the slices the plugin published and the claims allocated before it.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, RegisteredPlugin
from nvdra.plugins.gpu.config import DRIVER_NAME, PluginConfig
from nvdra.plugins.gpu.serve import RunningPlugin, serve

__all__ = ["DemoClaim", "allocated_claim", "run_demo"]

Out = Callable[[str], None]
NODE = "demo-node"


@attrs.frozen(kw_only=True)
class DemoClaim:
    """A claim of the demo: which containers use it, how many GPUs, which opaque config."""

    name: str
    title: str
    containers: tuple[str, ...]
    count: int = 1
    parameters: Mapping[str, Any] | None = None


def allocated_claim(
    *,
    name: str,
    namespace: str,
    devices: Sequence[str],
    request: str = "gpu",
    parameters: Mapping[str, Any] | None = None,
    node: str = NODE,
) -> dict[str, Any]:
    """A ResourceClaim as the scheduler leaves it: spec, and ``status.allocation`` naming ``devices``."""
    config = []
    if parameters is not None:
        config = [
            {
                "source": "FromClaim",
                "requests": [request],
                "opaque": {"driver": DRIVER_NAME, "parameters": dict(parameters)},
            }
        ]
    exactly = {"deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": len(devices)}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {
            "devices": {
                "requests": [{"name": request, "exactly": exactly}],
                "config": [{"requests": c["requests"], "opaque": c["opaque"]} for c in config],
            }
        },
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": request, "driver": DRIVER_NAME, "pool": node, "device": d}
                        for d in devices
                    ],
                    "config": config,
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                    ]
                },
            }
        },
    }


DEMO_CLAIMS = (
    DemoClaim(name="single-gpu", title="one GPU for one container", containers=("ctr0",)),
    DemoClaim(
        name="shared-gpu",
        title="one GPU shared by two containers of a pod (the user's gpu-test2 demo)",
        containers=("ctr0", "ctr1"),
    ),
    DemoClaim(
        name="bad-config",
        title="a claim whose opaque config has a typo (rejected, nothing left behind)",
        containers=("ctr0",),
        parameters={
            "apiVersion": "resource.nvidia.com/v1beta1",
            "kind": "GpuConfig",
            "sharing": {"strategy": "TimeSlicing", "timeSlicingConfg": {"interval": "Long"}},
        },
    ),
)


@contextmanager
def _demo_cluster(tmp: Path, profile: str) -> Iterator[tuple[FakeKube, RunningPlugin]]:
    store = FakeKube()
    store.add_node(NODE)
    with ApiServer(store) as api:
        config = PluginConfig(
            node_name=NODE,
            kubeconfig=str(api.write_kubeconfig(tmp / "kubeconfig")),
            cdi_root=tmp / "cdi",
            simulate=profile,
            kubelet_registrar_directory_path=tmp / "plugins_registry",
            kubelet_plugins_directory_path=tmp / "plugins",
        )
        with serve(config) as plugin:
            yield store, plugin


def _wait_for_slices(store: FakeKube, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slices = store.resource_slices()
        if slices:
            return slices
        time.sleep(0.01)
    raise TimeoutError("no ResourceSlice was published within 5 s of registration")


def _table(rows: Sequence[Mapping[str, str]], out: Out) -> None:
    if not rows:
        return
    cols = [c for c in rows[0] if any(r[c] for r in rows)]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    for line in [dict(zip(cols, cols, strict=True)), *rows]:
        out("    " + "  ".join(line[c].ljust(widths[c]) for c in cols).rstrip())


def _show_slices(slices: list[dict[str, Any]], out: Out) -> list[str]:
    devices = [d for s in slices for d in s["spec"].get("devices", [])]
    s0 = slices[0]
    pool = s0["spec"]["pool"]
    out(
        f"  ResourceSlice {s0['metadata']['name']} (driver {s0['spec']['driver']}, pool "
        f"{pool['name']}, generation {pool['generation']}): {len(devices)} devices"
    )

    def attr(d: dict[str, Any], key: str) -> str:
        return str(next(iter(d["attributes"].get(key, {"": ""}).values())))

    _table(
        [
            {
                "DEVICE": d["name"],
                "TYPE": attr(d, "type"),
                "PRODUCT": attr(d, "productName"),
                "MEMORY": d.get("capacity", {}).get("memory", {}).get("value", ""),
                "UUID": attr(d, "uuid"),
                "PCI": attr(d, "resource.kubernetes.io/pciBusID"),
            }
            for d in devices
        ],
        out,
    )
    return [d["name"] for d in devices if attr(d, "type") == "gpu"]


def _show_spec(path: Path, out: Out) -> None:
    text = path.read_text().splitlines()
    out(f"  CDI spec {path.name} ({len(text)} lines; device section):")
    for line in text[: text.index("containerEdits:") if "containerEdits:" in text else 12][:16]:
        out("    " + line)
    out(
        f"    containerEdits: {sum(1 for x in text if 'hostPath:' in x)} host paths "
        f"(device nodes, driver libraries, binaries), {sum(1 for x in text if 'hookName' in x)} "
        "nvidia-cdi-hook hooks"
    )


def _prepare_all(
    kubelet: RegisteredPlugin, store: FakeKube, slices: list[dict[str, Any]], tmp: Path, out: Out
) -> list[ClaimRef]:
    from nvdra.plugins.explain import allocate_claim

    refs: list[ClaimRef] = []
    held: list[dict[str, Any]] = []
    for i, demo in enumerate(DEMO_CLAIMS, start=1):
        # allocated_claim() gives the spec; the allocator replaces its placeholder allocation.
        draft = allocated_claim(
            name=demo.name, namespace="default", devices=[""] * demo.count, parameters=demo.parameters
        )
        claim = allocate_claim(draft, slices, node_name=NODE, allocated_claims=held)
        devices = [r["device"] for r in claim["status"]["allocation"]["devices"]["results"]]
        store.add_claim(claim)
        ref = ClaimRef(namespace="default", name=demo.name, uid=claim["metadata"]["uid"])
        t0 = time.perf_counter()
        result = kubelet.prepare([ref])[ref.uid]
        ms = (time.perf_counter() - t0) * 1000
        out(f"\n[{i + 2}] claim {demo.name!r}: {demo.title}")
        out(f"  allocated {', '.join(devices)}; NodePrepareResources took {ms:.1f} ms")
        if result.error:
            out(f"  refused: {result.error}")
            left = sorted(p.name for p in (tmp / "cdi").glob(f"*{ref.uid}*"))
            out(f"  CDI files left for it: {left or 'none'}")
            continue
        refs.append(ref)
        held.append(claim)
        for ctr in demo.containers:
            ids = [i for d in result.devices for i in d.cdi_device_ids]
            out(f"  container {ctr} gets CDI devices {ids}")
        if demo.name == "shared-gpu":
            _show_spec(next((tmp / "cdi").glob(f"*{ref.uid}.yaml")), out)
    return refs


def run_demo(out: Out, *, profile: str = "dgx-h100") -> None:
    """Run the demo, printing through ``out``. The plugin's own log goes quiet below errors: the demo
    reports refusals itself."""
    logging.getLogger("nvdra").setLevel(logging.ERROR)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nvdra-demo-") as tmpdir:
        tmp = Path(tmpdir)
        out(f"nvdra demo: simulated node {profile!r}, in-process API server, unix sockets in {tmp}")
        with (
            _demo_cluster(tmp, profile) as (store, plugin),
            KubeletClient(tmp / "plugins_registry") as kubelet,
        ):
            gpus = plugin.inventory.gpus
            out(
                f"\n[1] nvdra-gpu-plugin started: {len(gpus)} x {gpus[0].product_name}, driver "
                f"{plugin.inventory.driver_version}; sockets: {', '.join(p.name for p in kubelet.discover())}"
            )
            t0 = time.perf_counter()
            registered = kubelet.register(kubelet.discover()[0])
            slices = _wait_for_slices(store)
            out(
                f"\n[2] the kubelet registered it ({registered.api_version}); slices published "
                f"{(time.perf_counter() - t0) * 1000:.0f} ms later"
            )
            _show_slices(slices, out)
            refs = _prepare_all(registered, store, slices, tmp, out)
            t0 = time.perf_counter()
            errors = registered.unprepare(refs)
            left = sorted(p.name for p in (tmp / "cdi").iterdir())
            ms = (time.perf_counter() - t0) * 1000
            entries = len(plugin.driver.checkpoint().claims)
            status = "ok" if not any(errors.values()) else str(errors)
            out(
                f"\n[{len(DEMO_CLAIMS) + 3}] NodeUnprepareResources for {len(refs)} claims: {status} in "
                f"{ms:.1f} ms; CDI specs left: {left or 'none'}; checkpoint entries: {entries}"
            )
    out(f"\ndone in {time.perf_counter() - started:.1f} s")
