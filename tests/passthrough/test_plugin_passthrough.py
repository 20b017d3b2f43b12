"""The running plugin with PassthroughSupport, DeviceMetadata and a metrics endpoint: a VFIO claim over
real sockets republishes the slice, gets its KEP-5304 metadata, and shows up in the metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nvdra.kubeletplugin import ClaimRef, FakeKube
from nvdra.plugins.gpu.metadata import CONTAINER_DIR
from nvdra.plugins.gpu.serve import RunningPlugin
from tests.plugin_harness import serving_plugin, wait_for
from tests.plugins.conftest import DRIVER, NODE, allocated_claim, opaque, result

JsonObject = dict[str, Any]


@pytest.fixture
def running(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningPlugin, FakeKube, Any]]:
    gates = "PassthroughSupport=true,DeviceMetadata=true"
    with serving_plugin(sockdir, monkeypatch, feature_gates=gates, http_endpoint="127.0.0.1:0") as cluster:
        yield cluster.plugin, cluster.store, cluster.register_and_publish()


def published(store: FakeKube) -> set[str]:
    return {d["name"] for s in store.resource_slices() for d in s["spec"]["devices"]}


def scrape(plugin: RunningPlugin, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{plugin.metrics_port}{path}", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        return str(r.read().decode())


def sample(text: str, series: str) -> float:
    """The value of ``name{label="value",...}`` in an exposition, whatever order its labels are in."""
    name, _, rest = series.partition("{")
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels == wanted
    )


def vfio_claim(store: FakeKube, device: str) -> ClaimRef:
    config = opaque({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "VfioDeviceConfig"})
    meta = store.add_claim(allocated_claim([result(device, request="vm")], config=[config]))["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def test_vfio_claim_over_sockets_republishes_and_mounts_metadata(running: Any) -> None:
    """gpu-vfio-0 prepared: gpu-0 leaves the published slice; the answer carries the metadata CDI id whose
    spec mounts a metadata file naming the PCI address; unprepare brings gpu-0 back and removes both."""
    plugin, store, reg = running
    assert {"gpu-0", "gpu-vfio-0"} <= published(store)
    ref = vfio_claim(store, "gpu-vfio-0")
    answer = reg.prepare([ref])[ref.uid]
    assert answer.error == ""
    (device,) = answer.devices
    meta_id = f"k8s.gpu.nvidia.com/metadata={ref.uid}-vm"
    assert device.cdi_device_ids == (f"k8s.gpu.nvidia.com/claim={ref.uid}-gpu-vfio-0", meta_id)
    wait_for("gpu-0 withdrawn", lambda: "gpu-0" not in published(store))
    spec_path = plugin.config.cdi_root / f"k8s.gpu.nvidia.com-metadata_{ref.uid}_vm.yaml"
    spec = spec_path.read_text()
    assert f"{CONTAINER_DIR}/{ref.name}/vm/metadata.json" in spec
    doc = json.loads((plugin.config.plugin_dir / "metadata" / ref.uid / "vm" / "metadata.json").read_text())
    address = next(g.pci_bus_id for g in plugin.inventory.gpus if g.name == "gpu-0")
    assert doc["devices"][0]["attributes"]["resource.kubernetes.io/pciBusID"] == address

    assert reg.unprepare([ref]) == {ref.uid: ""}
    wait_for("gpu-0 back", lambda: "gpu-0" in published(store))
    assert not spec_path.exists()
    assert not (plugin.config.plugin_dir / "metadata" / ref.uid).exists()


def test_metrics_endpoint_counts_requests(running: Any) -> None:
    """Every series is there at zero before any request; after three prepares and unprepares the request
    counters, the histogram and the prepared-devices gauge show them (printed)."""
    plugin, store, reg = running
    before = scrape(plugin)
    labels = f'{{driver="{DRIVER}",operation="prepare"}}'
    assert sample(before, f"nvidia_dra_requests_total{labels}") == 0
    assert (
        sample(before, f'nvidia_dra_node_prepare_errors_total{{driver="{DRIVER}",error_type="lock_acquire"}}')
        == 0
    )
    refs = [vfio_claim(store, f"gpu-vfio-{i}") for i in range(3)]
    for ref in refs:
        assert reg.prepare([ref])[ref.uid].error == ""
    during = scrape(plugin)
    assert (
        sample(during, f'nvidia_dra_prepared_devices{{node="{NODE}",driver="{DRIVER}",device_type="vfio"}}')
        == 3
    )
    assert reg.unprepare(refs) == {r.uid: "" for r in refs}
    after = scrape(plugin)
    print(
        "\n".join(line for line in after.splitlines() if "prepare" in line and not line.startswith("#"))[
            :2000
        ]
    )
    assert sample(after, f"nvidia_dra_requests_total{labels}") == 3
    assert sample(after, f"nvidia_dra_request_duration_seconds_count{labels}") == 3
    assert sample(after, f"nvidia_dra_request_duration_seconds_sum{labels}") > 0
    le = f'{{driver="{DRIVER}",operation="prepare",le="+Inf"}}'
    assert sample(after, f"nvidia_dra_request_duration_seconds_bucket{le}") == 3
    assert sample(after, f'nvidia_dra_requests_total{{driver="{DRIVER}",operation="unprepare"}}') == 1
    with pytest.raises(urllib.error.HTTPError):
        scrape(plugin, "/other")
