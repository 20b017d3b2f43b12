"""The GPU plugin end to end against API servers of Kubernetes 1.32 to 1.36, each serving one version.

Each mode is an in-memory API server playing a release and serving a single ``resource.k8s.io``
version (v1-only, v1beta2-only, v1beta1-only); the plugin discovers it, publishes its slices at that
version's path in that version's shape and the release's counter layout, and prepares a claim it reads
at that version over the DRA gRPC API of that release's kubelet (v1beta1 before 1.34, v1 after).
DynamicMIG runs where partitionable devices exist (1.33 on).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
from tests.plugin_harness import plugin_config, wait_for
from tests.plugins.conftest import DRIVER, NODE, allocated_claim, result

JsonObject = dict[str, Any]

MODES = [
    pytest.param(("v1",), (1, 36), id="v1-only-1.36"),
    pytest.param(("v1beta2",), (1, 33), id="v1beta2-only-1.33"),
    pytest.param(("v1beta1",), (1, 32), id="v1beta1-only-1.32"),
]
DYNAMIC_MIG_MODES = [
    pytest.param(("v1",), (1, 35), id="v1-only-1.35"),
    pytest.param(("v1",), (1, 34), id="v1-only-1.34"),
    pytest.param(("v1beta2",), (1, 33), id="v1beta2-only-1.33"),
    pytest.param(("v1beta1",), (1, 34), id="v1beta1-only-1.34"),
]


class WireLog:
    """The (method, path, body) of every request the API server answered."""

    def __init__(self, server: ApiServer) -> None:
        self.requests: list[tuple[str, str, JsonObject]] = []
        inner = server.route

        def route(method: str, path: str, query: dict[str, str], body: JsonObject) -> tuple[int, JsonObject]:
            self.requests.append((method, path, body))
            return inner(method, path, query, body)

        server.route = route  # type: ignore[method-assign]

    def resource_paths(self) -> set[str]:
        """The resource.k8s.io version segments requests went to (discovery excluded)."""
        return {p.split("/")[3] for _, p, _ in self.requests if p.startswith("/apis/resource.k8s.io/")}

    def slice_bodies(self) -> list[JsonObject]:
        """Every ResourceSlice body the plugin wrote."""
        return [b for m, p, b in self.requests if m in ("POST", "PUT") and "/resourceslices" in p]


@contextlib.contextmanager
def run_plugin(
    served: tuple[str, ...], release: tuple[int, int], gates: str = ""
) -> Iterator[tuple[FakeKube, WireLog, Any, PluginConfig]]:
    store = FakeKube(served_versions=served, kubernetes_version=release)
    store.add_node(NODE)
    with tempfile.TemporaryDirectory(prefix="nvdra-ver-") as tmp, ApiServer(store) as server:
        base = Path(tmp)
        wire = WireLog(server)
        config = plugin_config(base, server, healthcheck_port=0, feature_gates=gates)
        with serve(config) as _plugin, KubeletClient(config.kubelet_registrar_directory_path) as kubelet:
            # Kubelets before 1.34 speak the v1beta1 DRA gRPC API only.
            api = "v1" if release >= (1, 34) else "v1beta1"
            registered = kubelet.register(
                config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock", api=api
            )
            assert registered.api_version == api
            yield store, wire, registered, config


def complete_pool(store: FakeKube) -> list[JsonObject]:
    """The stored slices once as many as their resourceSliceCount exist, else []."""
    slices = store.resource_slices()
    counts = {s["spec"]["pool"]["resourceSliceCount"] for s in slices}
    return slices if len(counts) == 1 and counts == {len(slices)} else []


def prepare(store: FakeKube, registered: Any, device: str) -> tuple[str, tuple[str, ...]]:
    claim = store.add_claim(allocated_claim([result(device)]))
    meta = claim["metadata"]
    ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    answer = registered.prepare([ref])[ref.uid]
    return answer.error, tuple(i for d in answer.devices for i in d.cdi_device_ids)


@pytest.mark.parametrize(("served", "release"), MODES)
def test_plugin_publishes_and_prepares_at_the_only_served_version(
    served: tuple[str, ...], release: tuple[int, int]
) -> None:
    """Slices and claims travel at the one served version, in its shape; a GPU claim is prepared."""
    (version,) = served
    with run_plugin(served, release) as (store, wire, registered, _):
        slices = wait_for("the ResourceSlice", store.resource_slices)
        assert [d["name"] for d in slices[0]["spec"]["devices"]] == [f"gpu-{i}" for i in range(8)]
        error, ids = prepare(store, registered, "gpu-3")
        assert error == "" and len(ids) == 1
        assert wire.resource_paths() == {version}
        (body,) = wire.slice_bodies()
        assert body["apiVersion"] == f"resource.k8s.io/{version}"
        device = body["spec"]["devices"][0]
        if version == "v1beta1":
            assert set(device) == {"name", "basic"} and "attributes" in device["basic"]
        else:
            assert "basic" not in device and "attributes" in device


@pytest.mark.parametrize(("served", "release"), DYNAMIC_MIG_MODES)
def test_dynamic_mig_publishes_the_releases_layout_and_prepares_a_mig_device(
    served: tuple[str, ...], release: tuple[int, int]
) -> None:
    """DynamicMIG: counters apart from 1.35, beside each GPU's devices before; a candidate is created."""
    (version,) = served
    with run_plugin(served, release, gates="DynamicMIG=true") as (store, wire, registered, _):
        slices = wait_for("the whole pool", lambda: complete_pool(store))
        specs = [s["spec"] for s in slices]
        if release >= (1, 35):
            assert sorted(len(s.get("sharedCounters") or []) for s in specs) == [0] * 8 + [8]
            assert all(not (s.get("sharedCounters") and s.get("devices")) for s in specs)
        else:
            assert len(specs) == 8
            assert all(len(s["sharedCounters"]) == 1 and len(s["devices"]) == 26 for s in specs)
        error, ids = prepare(store, registered, "gpu-0-mig-1g10gb-19-0")
        assert error == "" and len(ids) == 1
        assert wire.resource_paths() == {version}
        if version == "v1beta1":
            consumer = next(b for b in wire.slice_bodies() if b["spec"].get("devices"))["spec"]["devices"][0]
            assert "consumesCounters" in consumer["basic"]


def test_dynamic_mig_on_1_32_publishes_nothing_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    """1.32 has no partitionable devices: no slice is written and the error names release and gate."""
    with run_plugin(("v1beta1",), (1, 32), gates="DynamicMIG=true") as (store, wire, _, _):
        wait_for("the refusal", lambda: "older than Kubernetes 1.33" in caplog.text)
        assert store.resource_slices() == [] and wire.slice_bodies() == []
        assert "DRAPartitionableDevices" in caplog.text
