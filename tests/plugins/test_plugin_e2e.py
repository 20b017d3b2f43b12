"""The GPU plugin in-process (``serve``) against an HTTP API server, driven over its real unix sockets.

The plugin builds its own ``kubernetes`` client from a real kubeconfig pointing at :class:`ApiServer`;
the test plays the kubelet with :class:`KubeletClient` (registration, NodePrepare/NodeUnprepare over
DRA v1 and v1beta1) and probes the liveness port with the standard gRPC health stub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from nvdra.kubeletplugin import ClaimRef
from nvdra.kubeletplugin._proto import grpc_health_v1_pb2, grpc_health_v1_pb2_grpc
from tests.plugin_harness import Cluster, serving_plugin, wait_for
from tests.plugins.conftest import (
    DRIVER,
    NODE,
    allocated_claim,
    gpu_config,
    opaque,
    result,
    spec_files,
)

JsonObject = dict[str, Any]

BASE_ATTRIBUTES = frozenset(
    {
        "architecture",
        "brand",
        "cudaComputeCapability",
        "cudaDriverVersion",
        "driverVersion",
        "productName",
        "resource.kubernetes.io/pciBusID",
        "type",
        "uuid",
    }
)


@pytest.fixture
def cluster(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """The plugin serving a simulated dgx-h100 as node n1, registered with nobody yet."""
    with serving_plugin(sockdir, monkeypatch, healthcheck_port=0) as cluster:
        yield cluster


def test_slice_is_published_only_after_registration(cluster: Cluster) -> None:
    """No ResourceSlice before NotifyRegistrationStatus; afterwards one slice with gpu-0 … gpu-7."""
    assert cluster.kubelet.discover() == [cluster.registration_socket]
    info = cluster.kubelet.get_info(cluster.registration_socket)
    assert info.name == DRIVER
    assert cluster.store.resource_slices() == []
    assert not [c for c in cluster.store.calls() if c.resource == "resourceslices"]

    cluster.register()
    slices = wait_for("the ResourceSlice", cluster.store.resource_slices)

    assert len(slices) == 1
    spec = slices[0]["spec"]
    assert spec["driver"] == DRIVER
    assert spec["nodeName"] == NODE
    assert spec["pool"]["name"] == NODE
    assert spec["pool"]["resourceSliceCount"] == 1
    assert [d["name"] for d in spec["devices"]] == [f"gpu-{i}" for i in range(8)]
    owners = slices[0]["metadata"]["ownerReferences"]
    assert [(o["apiVersion"], o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("v1", "Node", NODE, cluster.node_uid)
    ]


def test_slice_attributes_are_upstreams(cluster: Cluster) -> None:
    """Every published GPU carries exactly upstream's attribute set (pcieRoot/addressingMode if known)."""
    cluster.register()
    devices = wait_for("the ResourceSlice", cluster.store.resource_slices)[0]["spec"]["devices"]
    gpus = {g.name: g for g in cluster.plugin.inventory.gpus}

    for device in devices:
        gpu = gpus[device["name"]]
        expected = set(BASE_ATTRIBUTES)
        if gpu.pcie_root:
            expected.add("resource.kubernetes.io/pcieRoot")
        if gpu.addressing_mode is not None:
            expected.add("addressingMode")
        assert set(device["attributes"]) == expected, device["name"]
        attributes = device["attributes"]
        assert attributes["uuid"] == {"string": gpu.uuid}
        assert attributes["type"] == {"string": "gpu"}
        assert attributes["resource.kubernetes.io/pciBusID"] == {"string": gpu.pci_bus_id}
        assert attributes["productName"] == {"string": "NVIDIA H100 80GB HBM3"}


@pytest.mark.parametrize("api", ["v1", "v1beta1"])
def test_prepare_and_unprepare_over_each_api_version(
    cluster: Cluster, api: str, cdi_schema: Callable[[Path], JsonObject]
) -> None:
    """Prepare returns the CDI id and writes a schema-valid spec; unprepare removes it (v1 and v1beta1)."""
    plugin = cluster.register(api)
    assert plugin.api_version == api
    ref = cluster.add_claim(allocated_claim([result("gpu-3")]))

    answer = plugin.prepare([ref])[ref.uid]

    assert answer.error == ""
    assert [(d.device_name, d.pool_name, d.requests) for d in answer.devices] == [("gpu-3", NODE, ("gpu",))]
    assert answer.devices[0].cdi_device_ids == (f"k8s.gpu.nvidia.com/claim={ref.uid}-gpu-3",)
    (spec,) = spec_files(cluster.config.cdi_root)
    doc = cdi_schema(spec)
    assert [d["name"] for d in doc["devices"]] == [f"{ref.uid}-gpu-3"]
    assert plugin.prepare([ref])[ref.uid] == answer

    assert plugin.unprepare([ref]) == {ref.uid: ""}
    assert spec_files(cluster.config.cdi_root) == []
    assert plugin.unprepare([ref]) == {ref.uid: ""}


def test_bad_config_fails_only_that_claim(cluster: Cluster) -> None:
    """In one NodePrepareResources call a claim with a bad config fails; the other is prepared."""
    plugin = cluster.register()
    good = cluster.add_claim(allocated_claim([result("gpu-0")]))
    bad = cluster.add_claim(
        allocated_claim([result("gpu-1")], config=[opaque(gpu_config(sharing={"strategy": "MPS"}))])
    )

    answers = plugin.prepare([good, bad])

    assert answers[good.uid].error == ""
    assert "MPSSupport" in answers[bad.uid].error and "sharing.strategy" in answers[bad.uid].error
    assert answers[bad.uid].devices == ()
    assert [p.name for p in spec_files(cluster.config.cdi_root)] == [
        f"k8s.gpu.nvidia.com-claim_{good.uid}.yaml"
    ]
    assert set(cluster.plugin.driver.checkpoint().claims) == {good.uid}


def test_claim_with_another_uid_is_refused(cluster: Cluster) -> None:
    """A claim whose stored UID differs from the kubelet's (deleted and recreated) is not prepared."""
    plugin = cluster.register()
    stored = cluster.add_claim(allocated_claim([result("gpu-2")], name="recreated"))
    stale = attrs.evolve(stored, uid="00000000-0000-0000-0000-0000000000aa")

    answer = plugin.prepare([stale])

    assert set(answer) == {stale.uid}
    assert "UID mismatch" in answer[stale.uid].error
    assert spec_files(cluster.config.cdi_root) == []
    assert cluster.plugin.driver.checkpoint().claims == {}


def test_missing_claim_is_refused(cluster: Cluster) -> None:
    """A claim the API server does not have fails with an error naming it."""
    plugin = cluster.register()
    ghost = ClaimRef(namespace="default", name="ghost", uid="00000000-0000-0000-0000-0000000000bb")

    assert "ghost" in plugin.prepare([ghost])[ghost.uid].error
    assert spec_files(cluster.config.cdi_root) == []


def test_liveness_port_answers_serving(cluster: Cluster) -> None:
    """The healthcheck port answers grpc.health.v1 Check with SERVING; unknown services are NOT_FOUND."""
    port = cluster.plugin.liveness_port
    assert port is not None and port > 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = grpc_health_v1_pb2_grpc.HealthStub(channel)
        for service in ("", "liveness"):
            answer = stub.Check(grpc_health_v1_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == grpc_health_v1_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(grpc_health_v1_pb2.HealthCheckRequest(service="other"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
