"""The plugins' Prometheus series on prometheus-client: names, labels, zero start, histogram, path routing."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nvdra.plugins.metrics import BUCKETS, ERROR_TYPES, PluginMetrics, start_metrics_server

DRIVER = "gpu.nvidia.com"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


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


def test_server_answers_only_on_the_metrics_path() -> None:
    m = PluginMetrics(driver=DRIVER, node="n1")
    server, port = start_metrics_server("127.0.0.1:0", "custom", m)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/custom", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "nvidia_dra_requests_total" in r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
