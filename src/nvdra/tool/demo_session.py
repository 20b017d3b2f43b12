"""The machinery of ``nvdra demo``: a simulated cluster, the kubelet's calls, and readable output.

One :class:`DemoSession` is one run of the GPU plugin: :func:`demo_cluster` starts it exactly as
``nvdra-gpu-plugin --simulate PROFILE`` does (:func:`nvdra.plugins.gpu.serve.serve`), against an
in-process API server (HTTP, the real ``kubernetes`` client adapter) on real unix sockets; a
:class:`~nvdra.kubeletplugin.KubeletClient` registers it and calls NodePrepareResources /
NodeUnprepareResources as the kubelet does. Claims are allocated by :mod:`nvdra.alloc` (the
scheduler's rules, the chart's DeviceClasses) against the slices the plugin published and the claims
allocated before them.

What the demo does not run is the rest of Kubernetes. :class:`FakeKubeController` stands in for the
Deployment controller and the kubelet running the MPS daemon's pod: it marks every MPS control-daemon
Deployment ready shortly after it appears, which is all the plugin waits for.
"""

from __future__ import annotations

__all__ = [
    "NAMESPACE",
    "NODE",
    "DemoClaim",
    "DemoSession",
    "DemoSkip",
    "FakeKubeController",
    "allocated_claim",
    "demo_cluster",
    "gpu_request",
    "table",
]

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import yaml

from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, RegisteredPlugin
from nvdra.kubeletplugin.objects import DEPLOYMENTS
from nvdra.kubeletplugin.types import PrepareResult
from nvdra.plugins.gpu.config import DRIVER_NAME, PluginConfig
from nvdra.plugins.gpu.serve import RunningPlugin, serve

Out = Callable[[str], None]
NODE = "demo-node"
NAMESPACE = "nvdra"  # where the plugin runs, and so where its MPS daemons go
JsonObject = dict[str, Any]


def allocated_claim(
    *,
    name: str,
    namespace: str,
    devices: Sequence[str],
    parameters: Mapping[str, Any] | None = None,
    node: str = NODE,
) -> JsonObject:
    """A ResourceClaim as the scheduler leaves it: request "gpu", ``status.allocation`` naming ``devices``."""
    request = "gpu"
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


def gpu_request(
    name: str = "gpu", *, device_class: str = "gpu.nvidia.com", count: int = 1, cel: str | None = None
) -> JsonObject:
    """A ``resource.k8s.io/v1`` DeviceRequest (``exactly``), optionally with one CEL selector."""
    exactly: JsonObject = {"deviceClassName": device_class, "allocationMode": "ExactCount", "count": count}
    if cel is not None:
        exactly["selectors"] = [{"cel": {"expression": cel}}]
    return {"name": name, "exactly": exactly}


@attrs.frozen(kw_only=True)
class DemoClaim:
    """A claim of the demo: its requests, constraints and opaque config, and who uses it."""

    name: str
    title: str
    requests: tuple[JsonObject, ...] = (gpu_request(),)
    constraints: tuple[JsonObject, ...] = ()
    parameters: Mapping[str, Any] | None = None
    pods: tuple[str, ...] = ("pod",)
    containers: tuple[str, ...] = ("ctr0",)

    def draft(self, namespace: str = "default") -> JsonObject:
        """The ResourceClaim as a user writes it (no status); the config applies to every request."""
        devices: JsonObject = {"requests": [dict(r) for r in self.requests]}
        if self.constraints:
            devices["constraints"] = [dict(c) for c in self.constraints]
        if self.parameters is not None:
            devices["config"] = [{"opaque": {"driver": DRIVER_NAME, "parameters": dict(self.parameters)}}]
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": self.name, "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": {"devices": devices},
        }


class DemoSkip(Exception):
    """This node cannot serve a scenario's claim; the message says why."""


class FakeKubeController:
    """Marks MPS control-daemon Deployments ready, as the Deployment controller and kubelet would.

    A daemon thread polls the store every ``period`` seconds; ``ready`` counts the Deployments it
    marked. Use as a context manager.
    """

    def __init__(self, store: FakeKube, namespace: str = NAMESPACE, *, period: float = 0.02) -> None:
        self.store = store
        self.namespace = namespace
        self.period = period
        self.ready: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-kube-controller", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for dep in self.store.objects.list_objects(DEPLOYMENTS, self.namespace):
                if (dep.get("status") or {}).get("readyReplicas"):
                    continue
                dep["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
                self.store.objects.update_object(DEPLOYMENTS, dep, status=True)
                self.ready.append(dep["metadata"]["name"])

    def __enter__(self) -> FakeKubeController:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


@attrs.define
class DemoSession:
    """One plugin run of the demo: the API store, the plugin, the registered kubelet connection."""

    out: Out
    tmp: Path
    store: FakeKube
    plugin: RunningPlugin
    kubelet: RegisteredPlugin
    slices: list[JsonObject]
    step: int
    held: list[JsonObject] = attrs.Factory(list)
    """Allocated claims whose devices the allocator must not hand out again."""
    prepared: list[ClaimRef] = attrs.Factory(list)
    """Claims prepared successfully and not yet unprepared."""

    def section(self, title: str) -> None:
        """Print the next numbered section heading."""
        self.step += 1
        self.out(f"\n[{self.step}] {title}")

    def allocate(self, demo: DemoClaim) -> JsonObject:
        """Allocate ``demo`` as the scheduler would, reserve it for its pods, and store it in the API.

        When the node is full, the claims prepared so far are unprepared first (their pods end), as a
        small node would have to; when even the empty node cannot serve the claim, :class:`DemoSkip`
        says why (the allocator's first reason).
        """
        from nvdra.tool.explain import AllocationFailed, allocate_claim

        draft = demo.draft()
        try:
            claim = allocate_claim(draft, self.slices, node_name=NODE, allocated_claims=self.held)
        except AllocationFailed:
            if not self.prepared:
                raise DemoSkip(self.why_not(draft)) from None
            self.out(
                f"  (the node is full: the {len(self.prepared)} claims prepared above are unprepared first)"
            )
            self.release()
            try:
                claim = allocate_claim(draft, self.slices, node_name=NODE, allocated_claims=self.held)
            except AllocationFailed:
                raise DemoSkip(self.why_not(draft)) from None
        claim["status"]["reservedFor"] = [
            {"resource": "pods", "name": pod, "uid": str(uuid.uuid4())} for pod in demo.pods
        ]
        self.store.add_claim(claim)
        return claim

    def release(self) -> None:
        """NodeUnprepareResources for every prepared claim; their devices are free again."""
        errors = self.kubelet.unprepare(list(self.prepared))
        failed = {uid: e for uid, e in errors.items() if e}
        if failed:
            self.out(f"  unprepare failed: {failed}")
        self.prepared.clear()
        self.held.clear()

    def why_not(self, claim: JsonObject) -> str:
        """The allocator's reason this node cannot serve ``claim``, in one line."""
        from nvdra.tool.explain import explain_claims

        diag, _ = explain_claims([("", claim)], self.slices, node_name=NODE, allocated_claims=self.held)
        for req in diag.requests:
            if req.needs != "all" and req.eligible >= int(req.needs):
                continue
            reasons = [v.reason for v in req.verdicts if not v.ok]
            common = max(set(reasons), key=reasons.count) if reasons else "no candidate device"
            return (
                f"request {req.request} needs {req.needs} device(s), {req.eligible} of the node's "
                f"{len(req.verdicts)} qualify (most: {common})"
            )
        return diag.outcome.error or "the allocator found no allocation"

    def prepare(self, claim: JsonObject) -> tuple[ClaimRef, PrepareResult, float]:
        """NodePrepareResources for one claim; returns the result and how long it took (ms)."""
        meta = claim["metadata"]
        ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
        t0 = time.perf_counter()
        result = self.kubelet.prepare([ref])[ref.uid]
        ms = (time.perf_counter() - t0) * 1000
        if not result.error and ref not in self.prepared:
            self.held.append(claim)
            self.prepared.append(ref)
        return ref, result, ms

    def cdi_files(self, uid: str = "") -> list[str]:
        """CDI spec files in the plugin's CDI root (of one claim, if ``uid`` is given)."""
        root = self.plugin.config.cdi_root
        return sorted(p.name for p in (root.glob(f"*{uid}*") if uid else root.iterdir()))

    def claim_spec(self, uid: str) -> JsonObject:
        """The claim's CDI spec, parsed."""
        path = next(self.plugin.config.cdi_root.glob(f"*{uid}.yaml"))
        loaded: JsonObject = yaml.safe_load(path.read_text())
        return loaded


@contextmanager
def demo_cluster(tmp: Path, profile: str, gates: str, out: Out, step: int) -> Iterator[DemoSession]:
    """An API server, the plugin on ``profile`` with ``gates``, and the kubelet that registered it."""
    tmp.mkdir(parents=True, exist_ok=True)
    store = FakeKube()
    store.add_node(NODE)
    with ApiServer(store) as api, FakeKubeController(store):
        config = PluginConfig(
            node_name=NODE,
            namespace=NAMESPACE,
            kubeconfig=str(api.write_kubeconfig(tmp / "kubeconfig")),
            cdi_root=tmp / "cdi",
            simulate=profile,
            feature_gates=gates,
            kubelet_registrar_directory_path=tmp / "plugins_registry",
            kubelet_plugins_directory_path=tmp / "plugins",
        )
        with serve(config) as plugin, KubeletClient(tmp / "plugins_registry") as kubelet:
            gpus = plugin.inventory.gpus
            out(
                f"\n[{step + 1}] nvdra-gpu-plugin started ({gates or 'default gates'}): {len(gpus)} x "
                f"{gpus[0].product_name}, driver {plugin.inventory.driver_version}; "
                f"sockets: {', '.join(p.name for p in kubelet.discover())}"
            )
            t0 = time.perf_counter()
            registered = kubelet.register(kubelet.discover()[0])
            slices = _wait_for_slices(store)
            out(
                f"\n[{step + 2}] the kubelet registered it ({registered.api_version}); slices published "
                f"{(time.perf_counter() - t0) * 1000:.0f} ms later"
            )
            yield DemoSession(
                out=out, tmp=tmp, store=store, plugin=plugin, kubelet=registered, slices=slices, step=step + 2
            )


def _wait_for_slices(store: FakeKube, timeout: float = 5.0) -> list[JsonObject]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        slices = store.resource_slices()
        # The publisher writes a pool's slices one by one: wait until the pool is complete.
        if slices and len(slices) == slices[0]["spec"]["pool"]["resourceSliceCount"]:
            return slices
        time.sleep(0.01)
    raise TimeoutError("no ResourceSlice was published within 5 s of registration")


def table(rows: Sequence[Mapping[str, str]], out: Out, indent: str = "    ") -> None:
    """Left-aligned columns; columns empty in every row are dropped."""
    if not rows:
        return
    cols = [c for c in rows[0] if any(r[c] for r in rows)]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    for line in [dict(zip(cols, cols, strict=True)), *rows]:
        out(indent + "  ".join(line[c].ljust(widths[c]) for c in cols).rstrip())
