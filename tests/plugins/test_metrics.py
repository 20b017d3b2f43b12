"""The plugins' Prometheus series on prometheus-client: names, labels, zero start, histogram, path routing."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from nvdra.core.errors import HostError
from nvdra.kubeletplugin.types import ClaimRef, PrepareResult
from nvdra.plugins.metrics import (
    BUCKETS,
    ERROR_TYPES,
    InstrumentedDriver,
    PluginMetrics,
    start_metrics_server,
)
from tests.exposition import assert_not_found, key, samples, scrape, serving

DRIVER = "gpu.nvidia.com"


def test_every_series_starts_at_zero_without_created_samples() -> None:
    m = PluginMetrics(driver=DRIVER, node="n1", prepared_devices=lambda: {"mig": 2})
    got = samples(m.render())
    for op in ("prepare", "unprepare"):
        assert got[key("nvidia_dra_requests_total", driver=DRIVER, operation=op)] == 0
        assert got[key("nvidia_dra_requests_inflight", driver=DRIVER, operation=op)] == 0
        assert got[key("nvidia_dra_request_duration_seconds_count", driver=DRIVER, operation=op)] == 0
        for error_type in ERROR_TYPES:
            assert got[key(f"nvidia_dra_node_{op}_errors_total", driver=DRIVER, error_type=error_type)] == 0
    assert got[key("nvidia_dra_prepared_devices", node="n1", driver=DRIVER, device_type="mig")] == 2
    assert got[key("nvidia_dra_prepared_devices", node="n1", driver=DRIVER, device_type="gpu")] == 0
    assert not any(name.endswith("_created") for name, _ in got)


def test_requests_errors_and_histogram_buckets_count() -> None:
    m = PluginMetrics(driver=DRIVER, node="n1")
    started = m.begin("prepare")
    assert samples(m.render())[key("nvidia_dra_requests_inflight", driver=DRIVER, operation="prepare")] == 1
    m.end("prepare", started)
    m.error("unprepare", "unprepare_devices", 3)
    got = samples(m.render())
    assert got[key("nvidia_dra_requests_total", driver=DRIVER, operation="prepare")] == 1
    assert got[key("nvidia_dra_requests_inflight", driver=DRIVER, operation="prepare")] == 0
    le = f"{BUCKETS[-1]:g}"
    bucket = key("nvidia_dra_request_duration_seconds_bucket", driver=DRIVER, operation="prepare", le=le)
    assert got[bucket] == 1
    errors = key("nvidia_dra_node_unprepare_errors_total", driver=DRIVER, error_type="unprepare_devices")
    assert got[errors] == 3


def test_a_taken_metrics_port_names_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(HostError) as err:
            start_metrics_server(endpoint, "/metrics", PluginMetrics(driver=DRIVER, node="n1"))
    assert str(err.value) == (
        f"metrics server: cannot listen on {endpoint} (--http-endpoint): Address already in use"
    )


def test_server_answers_only_on_the_metrics_path() -> None:
    m = PluginMetrics(driver=DRIVER, node="n1")
    with serving(m, "custom") as port:
        assert "nvidia_dra_requests_total" in scrape(port, "/custom")
        assert_not_found(port, "/metrics")


class _HalfFailing:
    """Prepare answers one error per batch; unprepare raises."""

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> Mapping[str, PrepareResult]:
        return {c["uid"]: PrepareResult(error="no" if i == 0 else "") for i, c in enumerate(claims)}

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        raise RuntimeError("gone")

    def handle_error(self, error: BaseException, message: str) -> None:
        """Nothing to do."""


def test_instrumented_driver_counts_failed_claims_and_raised_batches() -> None:
    m = PluginMetrics(driver=DRIVER, node="n1")
    driver = InstrumentedDriver(_HalfFailing(), m)
    assert driver.prepare_resource_claims([{"uid": "a"}, {"uid": "b"}, {"uid": "c"}])["a"].error == "no"
    with pytest.raises(RuntimeError):
        driver.unprepare_resource_claims([ClaimRef(namespace="ns", name=n, uid=n) for n in "xy"])
    got = samples(m.render())
    prepare = key("nvidia_dra_node_prepare_errors_total", driver=DRIVER, error_type="prepare_devices")
    unprepare = key("nvidia_dra_node_unprepare_errors_total", driver=DRIVER, error_type="unprepare_devices")
    assert (got[prepare], got[unprepare]) == (1, 2)
    for op in ("prepare", "unprepare"):
        assert got[key("nvidia_dra_requests_total", driver=DRIVER, operation=op)] == 1
        assert got[key("nvidia_dra_requests_inflight", driver=DRIVER, operation=op)] == 0
