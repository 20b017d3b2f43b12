"""What the metrics tests share: an exposition parsed into families and keyed samples, and a registry
served on a free port and scraped the way Prometheus does."""

from __future__ import annotations

__all__ = ["Key", "Samples", "assert_not_found", "key", "parse", "samples", "scrape", "serving"]

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nvdra.plugins.metrics import ControllerMetrics, PluginMetrics, start_metrics_server

Key = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[Key, float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, every sample keyed by (name, sorted labels)) of an exposition."""
    families = list(text_string_to_metric_families(text))
    keyed = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return {f.name: f.type for f in families}, keyed


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return parse(text)[1]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


@contextlib.contextmanager
def serving(metrics: PluginMetrics | ControllerMetrics, path: str) -> Iterator[int]:
    """``metrics`` served at ``path`` on a free local port (the port), shut down on the way out."""
    server, port = start_metrics_server("127.0.0.1:0", path, metrics)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def scrape(port: int, path: str) -> str:
    """The exposition at ``path``, checked to be served as text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return str(answer.read().decode())


def assert_not_found(port: int, path: str) -> None:
    """Any path but the metrics path answers 404."""
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
    assert err.value.code == 404
