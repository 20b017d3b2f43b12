"""Prometheus metrics of the kubelet plugins (upstream's ``nvidia_dra`` series, upstream-driver §4.10).

Served as the text exposition format (version 0.0.4) by a stdlib HTTP server on ``--http-endpoint``
at ``--metrics-path``. Series, all pre-initialised to zero so dashboards see them before the first
request:

- ``nvidia_dra_requests_total{driver,operation}`` (counter; operation prepare|unprepare);
- ``nvidia_dra_request_duration_seconds{driver,operation}`` (histogram, buckets 0.05 s * 2^k, k=0..8);
- ``nvidia_dra_requests_inflight{driver,operation}`` (gauge);
- ``nvidia_dra_prepared_devices{node,driver,device_type}`` (gauge, read from the checkpoint at scrape);
- ``nvidia_dra_node_prepare_errors_total`` / ``nvidia_dra_node_unprepare_errors_total``
  ``{driver,error_type}`` (error_type lock_acquire|prepare_devices|unprepare_devices|publish_resources).

:class:`InstrumentedDriver` wraps any :class:`~nvdra.kubeletplugin.types.DraDriver` (GPU or
ComputeDomain plugin) to count its calls; a call counts one request per claim batch, as upstream.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nvdra.kubeletplugin.types import ClaimRef, DraDriver, PrepareResult

__all__ = ["BUCKETS", "ERROR_TYPES", "InstrumentedDriver", "PluginMetrics", "start_metrics_server"]

BUCKETS: tuple[float, ...] = tuple(0.05 * 2**k for k in range(9))
ERROR_TYPES = ("lock_acquire", "prepare_devices", "unprepare_devices", "publish_resources")
OPERATIONS = ("prepare", "unprepare")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NS = "nvidia_dra"


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class PluginMetrics:
    """The series of one plugin process.

    Args:
        driver: DRA driver name (label ``driver``).
        node: node name (label ``node`` of ``prepared_devices``).
        device_types: the ``device_type`` values to pre-initialise.
        prepared_devices: called at scrape time: prepared device count per type.
    """

    def __init__(
        self,
        *,
        driver: str,
        node: str,
        device_types: Sequence[str] = ("gpu", "mig", "vfio", "unknown"),
        prepared_devices: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.driver = driver
        self.node = node
        self.device_types = tuple(device_types)
        self.prepared_devices = prepared_devices
        self._lock = threading.Lock()
        self._requests = dict.fromkeys(OPERATIONS, 0)
        self._inflight = dict.fromkeys(OPERATIONS, 0)
        self._buckets = {op: [0] * len(BUCKETS) for op in OPERATIONS}
        self._sum = dict.fromkeys(OPERATIONS, 0.0)
        self._errors = {op: dict.fromkeys(ERROR_TYPES, 0) for op in OPERATIONS}

    def begin(self, operation: str) -> float:
        """A request starts; returns its start time for :meth:`end`."""
        with self._lock:
            self._inflight[operation] += 1
        return time.perf_counter()

    def end(self, operation: str, started: float) -> None:
        """A request ended (successfully or not)."""
        elapsed = time.perf_counter() - started
        with self._lock:
            self._inflight[operation] -= 1
            self._requests[operation] += 1
            self._sum[operation] += elapsed
            for i, bound in enumerate(BUCKETS):
                if elapsed <= bound:
                    self._buckets[operation][i] += 1

    def error(self, operation: str, error_type: str, count: int = 1) -> None:
        """Count errors of a kind (``operation`` prepare|unprepare)."""
        with self._lock:
            self._errors[operation][error_type] += count

    def render(self) -> str:
        """The exposition text."""
        d = self.driver
        with self._lock:
            lines = [
                f"# HELP {_NS}_requests_total Number of prepare/unprepare requests handled.",
                f"# TYPE {_NS}_requests_total counter",
            ]
            lines += [
                f"{_NS}_requests_total{_labels(driver=d, operation=op)} {self._requests[op]}"
                for op in OPERATIONS
            ]
            lines += [
                f"# HELP {_NS}_request_duration_seconds Duration of prepare/unprepare requests.",
                f"# TYPE {_NS}_request_duration_seconds histogram",
            ]
            for op in OPERATIONS:
                for bound, count in zip(BUCKETS, self._buckets[op], strict=True):
                    lines.append(
                        f"{_NS}_request_duration_seconds_bucket"
                        f"{_labels(driver=d, operation=op, le=_num(bound))} {count}"
                    )
                lines.append(
                    f"{_NS}_request_duration_seconds_bucket{_labels(driver=d, operation=op, le='+Inf')} "
                    f"{self._requests[op]}"
                )
                lab = _labels(driver=d, operation=op)
                lines.append(f"{_NS}_request_duration_seconds_sum{lab} {self._sum[op]!r}")
                lines.append(f"{_NS}_request_duration_seconds_count{lab} {self._requests[op]}")
            lines += [
                f"# HELP {_NS}_requests_inflight Requests being handled now.",
                f"# TYPE {_NS}_requests_inflight gauge",
            ]
            lines += [
                f"{_NS}_requests_inflight{_labels(driver=d, operation=op)} {self._inflight[op]}"
                for op in OPERATIONS
            ]
            for op in OPERATIONS:
                name = f"{_NS}_node_{op}_errors_total"
                lines += [f"# HELP {name} Errors while handling {op} requests.", f"# TYPE {name} counter"]
                lines += [
                    f"{name}{_labels(driver=d, error_type=t)} {self._errors[op][t]}" for t in ERROR_TYPES
                ]
        counts = dict(self.prepared_devices()) if self.prepared_devices is not None else {}
        lines += [
            f"# HELP {_NS}_prepared_devices Devices prepared, from the checkpoint.",
            f"# TYPE {_NS}_prepared_devices gauge",
        ]
        for device_type in sorted(set(self.device_types) | set(counts)):
            lines.append(
                f"{_NS}_prepared_devices{_labels(node=self.node, driver=d, device_type=device_type)} "
                f"{counts.get(device_type, 0)}"
            )
        return "\n".join(lines) + "\n"


class InstrumentedDriver:
    """A DRA driver whose calls are counted in :class:`PluginMetrics` (delegates everything)."""

    def __init__(self, driver: DraDriver, metrics: PluginMetrics) -> None:
        self.driver = driver
        self.metrics = metrics

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> Mapping[str, PrepareResult]:
        """Prepare, timing the call and counting per-claim failures as ``prepare_devices``."""
        started = self.metrics.begin("prepare")
        try:
            results = self.driver.prepare_resource_claims(claims)
        except Exception:
            self.metrics.error("prepare", "prepare_devices", max(1, len(claims)))
            raise
        finally:
            self.metrics.end("prepare", started)
        failed = sum(1 for r in results.values() if r.error)
        if failed:
            self.metrics.error("prepare", "prepare_devices", failed)
        return results

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        """Unprepare, timing the call and counting per-claim failures as ``unprepare_devices``."""
        started = self.metrics.begin("unprepare")
        try:
            errors = self.driver.unprepare_resource_claims(claims)
        except Exception:
            self.metrics.error("unprepare", "unprepare_devices", max(1, len(claims)))
            raise
        finally:
            self.metrics.end("unprepare", started)
        failed = sum(1 for e in errors.values() if e)
        if failed:
            self.metrics.error("unprepare", "unprepare_devices", failed)
        return errors

    def handle_error(self, error: BaseException, message: str) -> None:
        """Background errors are slice publishing errors here: count, then delegate."""
        self.metrics.error("prepare", "publish_resources")
        self.driver.handle_error(error, message)


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port or 0)


def start_metrics_server(
    endpoint: str, path: str, metrics: PluginMetrics
) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Serve ``metrics`` at ``http://<endpoint><path>`` on a daemon thread; returns (server, port).

    ``endpoint`` is ``[host]:port`` (``:8080`` = every address; port 0 = any free port).
    """
    route = path if path.startswith("/") else "/" + path

    class Handler(http.server.BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # one response = two writes; avoid a delayed-ACK stall

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != route:
                self.send_error(404, f"metrics are at {route}")
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # scrapes every few seconds would flood the plugin log

    host, port = _split_endpoint(endpoint)
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="nvdra-metrics", daemon=True).start()
    return server, server.server_address[1]
