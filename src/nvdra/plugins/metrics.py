"""Prometheus metrics of the kubelet plugins and the ComputeDomain controller (``nvidia_dra`` series).

Built on ``prometheus-client`` (the ecosystem's library: its exposition format, histogram maths and
WSGI server), one :class:`~prometheus_client.CollectorRegistry` per process, served on
``--http-endpoint`` at ``--metrics-path`` only (:func:`start_metrics_server`). This is the one module
that imports the library (the import-linter contract in pyproject.toml), so both kinds of process
share one server start and one set of settings.

The plugins' series (:class:`PluginMetrics`, upstream-driver §4.10), all present at zero before the
first request so dashboards see them:

- ``nvidia_dra_requests_total{driver,operation}`` (counter; operation prepare|unprepare);
- ``nvidia_dra_request_duration_seconds{driver,operation}`` (histogram, buckets 0.05 s * 2^k, k=0..8);
- ``nvidia_dra_requests_inflight{driver,operation}`` (gauge);
- ``nvidia_dra_prepared_devices{node,driver,device_type}`` (gauge, read from the checkpoint at scrape);
- ``nvidia_dra_node_prepare_errors_total`` / ``nvidia_dra_node_unprepare_errors_total``
  ``{driver,error_type}`` (error_type lock_acquire|prepare_devices|unprepare_devices|publish_resources).

The controller's series (:class:`ControllerMetrics`):

- ``nvidia_dra_compute_domain_info{status}`` (gauge: domains per status, Ready and NotReady present at
  zero, set at the end of each pass);
- ``nvidia_dra_controller_passes_total`` (counter: reconcile passes);
- ``nvidia_dra_controller_writes_total{verb,kind}`` (counter: API writes attempted);
- ``nvidia_dra_controller_write_errors_total{verb,kind,code}`` (counter: failed writes by HTTP status).

Counters carry no ``_created`` series (upstream's Go client has none; the library's switch for it is
process-wide and is turned off when the first :class:`PluginMetrics` or :class:`ControllerMetrics` is
built).

:class:`InstrumentedDriver` wraps any :class:`~nvdra.kubeletplugin.types.DraDriver` (GPU or
ComputeDomain plugin) to count its calls; a call counts one request per claim batch, as upstream.
"""

from __future__ import annotations

__all__ = [
    "BUCKETS",
    "DOMAIN_STATUSES",
    "ERROR_TYPES",
    "ControllerMetrics",
    "InstrumentedDriver",
    "PluginMetrics",
    "start_metrics_server",
]

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from nvdra.kubeletplugin.types import ClaimRef, DraDriver, PrepareResult

if TYPE_CHECKING:  # annotations only: importing this module (the plugins do) loads neither at run time
    from nvdra.core.errors import KubeApiError
    from nvdra.imex import Action

BUCKETS: tuple[float, ...] = tuple(0.05 * 2**k for k in range(9))
ERROR_TYPES = ("lock_acquire", "prepare_devices", "unprepare_devices", "publish_resources")
DOMAIN_STATUSES = ("Ready", "NotReady")
OPERATIONS = ("prepare", "unprepare")
_NS = "nvidia_dra"
_R = TypeVar("_R")


class _PreparedDevices(Collector):
    """``prepared_devices``: read from the plugin (its checkpoint) at scrape time."""

    def __init__(
        self,
        *,
        node: str,
        driver: str,
        device_types: Sequence[str],
        read: Callable[[], Mapping[str, int]] | None,
    ) -> None:
        self._node, self._driver, self._types, self._read = node, driver, tuple(device_types), read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = dict(self._read()) if self._read is not None else {}
        family = GaugeMetricFamily(
            f"{_NS}_prepared_devices",
            "Devices prepared, from the checkpoint.",
            labels=("node", "driver", "device_type"),
        )
        for device_type in sorted(set(self._types) | set(counts)):
            family.add_metric((self._node, self._driver, device_type), counts.get(device_type, 0))
        yield family


class PluginMetrics:
    """The series of one plugin process, in a registry of its own (:attr:`registry`).

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
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library
        self.driver = driver
        self.node = node
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        labels = ("driver", "operation")
        self._requests = prometheus_client.Counter(
            f"{_NS}_requests", "Number of prepare/unprepare requests handled.", labels, registry=self.registry
        )
        self._duration = prometheus_client.Histogram(
            f"{_NS}_request_duration_seconds",
            "Duration of prepare/unprepare requests.",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._inflight = prometheus_client.Gauge(
            f"{_NS}_requests_inflight", "Requests being handled now.", labels, registry=self.registry
        )
        self._errors = {
            op: prometheus_client.Counter(
                f"{_NS}_node_{op}_errors",
                f"Errors while handling {op} requests.",
                ("driver", "error_type"),
                registry=self.registry,
            )
            for op in OPERATIONS
        }
        # Children exist (at zero) before the first request, and a request's are looked up once here
        # rather than by label values four times a call (each lookup takes the metric's lock).
        self._series = {
            op: (
                self._inflight.labels(driver, op),
                self._requests.labels(driver, op),
                self._duration.labels(driver, op),
            )
            for op in OPERATIONS
        }
        for op in OPERATIONS:
            for error_type in ERROR_TYPES:
                self._errors[op].labels(driver, error_type)
        self.registry.register(
            _PreparedDevices(node=node, driver=driver, device_types=device_types, read=prepared_devices)
        )

    def begin(self, operation: str) -> float:
        """A request starts; returns its start time for :meth:`end`."""
        self._series[operation][0].inc()
        return time.perf_counter()

    def end(self, operation: str, started: float) -> None:
        """A request ended (successfully or not)."""
        inflight, requests, duration = self._series[operation]
        inflight.dec()
        requests.inc()
        duration.observe(time.perf_counter() - started)

    def error(self, operation: str, error_type: str, count: int = 1) -> None:
        """Count errors of a kind (``operation`` prepare|unprepare)."""
        self._errors[operation].labels(self.driver, error_type).inc(count)

    def render(self) -> str:
        """The text exposition of every series (what a scrape returns)."""
        return prometheus_client.generate_latest(self.registry).decode()


class InstrumentedDriver:
    """A DRA driver whose calls are counted in :class:`PluginMetrics` (delegates everything)."""

    def __init__(self, driver: DraDriver, metrics: PluginMetrics) -> None:
        self.driver = driver
        self.metrics = metrics

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> Mapping[str, PrepareResult]:
        """Prepare, timing the call and counting per-claim failures as ``prepare_devices``."""
        return self._counted(
            "prepare",
            len(claims),
            lambda: self.driver.prepare_resource_claims(claims),
            lambda r: bool(r.error),
        )

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        """Unprepare, timing the call and counting per-claim failures as ``unprepare_devices``."""
        return self._counted(
            "unprepare", len(claims), lambda: self.driver.unprepare_resource_claims(claims), bool
        )

    def _counted(
        self, operation: str, claims: int, call: Callable[[], Mapping[str, _R]], failed: Callable[[_R], bool]
    ) -> Mapping[str, _R]:
        """One timed request of ``operation``; a raise counts every claim of the batch (at least one) as
        ``<operation>_devices``, an answer each claim whose result ``failed``."""
        error_type = f"{operation}_devices"
        started = self.metrics.begin(operation)
        try:
            results = call()
        except Exception:
            self.metrics.error(operation, error_type, max(1, claims))
            raise
        finally:
            self.metrics.end(operation, started)
        bad = sum(1 for r in results.values() if failed(r))
        if bad:
            self.metrics.error(operation, error_type, bad)
        return results

    def handle_error(self, error: BaseException, message: str) -> None:
        """Background errors are slice publishing errors here: count, then delegate."""
        self.metrics.error("prepare", "publish_resources")
        self.driver.handle_error(error, message)


class ControllerMetrics:
    """The ComputeDomain controller's series, in a registry of its own (:attr:`registry`).

    The controller calls :meth:`record` per write and :meth:`pass_done` per pass; the read-only
    properties (:attr:`passes`, :attr:`writes`, :attr:`failures`, :attr:`conflicts`, :attr:`domains`)
    read the same counters back for tests and simulations.
    """

    def __init__(self) -> None:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self._domains = prometheus_client.Gauge(
            f"{_NS}_compute_domain_info", "ComputeDomains per status.", ("status",), registry=self.registry
        )
        self._passes = prometheus_client.Counter(
            f"{_NS}_controller_passes", "Reconcile passes.", registry=self.registry
        )
        self._writes = prometheus_client.Counter(
            f"{_NS}_controller_writes", "API writes attempted.", ("verb", "kind"), registry=self.registry
        )
        self._errors = prometheus_client.Counter(
            f"{_NS}_controller_write_errors",
            "API writes that failed, by HTTP status.",
            ("verb", "kind", "code"),
            registry=self.registry,
        )
        self._status = {status: self._domains.labels(status) for status in DOMAIN_STATUSES}

    def record(self, action: Action, error: KubeApiError | None) -> None:
        """Count one write and, when it failed, its status code."""
        self._writes.labels(action.verb, action.kind).inc()
        if error is not None:
            self._errors.labels(action.verb, action.kind, str(error.status)).inc()

    def pass_done(self, statuses: Iterable[str]) -> None:
        """A pass ended having seen domains of these statuses (one item per domain)."""
        seen = collections.Counter(statuses)
        self._passes.inc()
        for status, gauge in self._status.items():
            gauge.set(seen[status])

    @property
    def passes(self) -> int:
        """Passes so far."""
        return int(sum(n for _, n in self._samples(self._passes)))

    @property
    def writes(self) -> dict[tuple[str, str], int]:
        """Writes so far per (verb, kind)."""
        return {(v["verb"], v["kind"]): int(n) for v, n in self._samples(self._writes)}

    @property
    def failures(self) -> dict[tuple[str, str, int], int]:
        """Failed writes so far per (verb, kind, HTTP status)."""
        return {(v["verb"], v["kind"], int(v["code"])): int(n) for v, n in self._samples(self._errors)}

    @property
    def conflicts(self) -> int:
        """409s seen so far."""
        return sum(n for (_, _, code), n in self.failures.items() if code == 409)

    @property
    def domains(self) -> dict[str, int]:
        """Domains per status at the end of the last pass (Ready and NotReady always present)."""
        return {v["status"]: int(n) for v, n in self._samples(self._domains)}

    def render(self) -> str:
        """The text exposition of every series (what a scrape returns)."""
        return prometheus_client.generate_latest(self.registry).decode()

    @staticmethod
    def _samples(metric: MetricWrapperBase) -> Iterator[tuple[dict[str, str], float]]:
        """(labels, value) of each sample of ``metric`` (no ``_created`` samples: they are off)."""
        return ((s.labels, s.value) for family in metric.collect() for s in family.samples)


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port or 0)


class _QuietHandler(WSGIRequestHandler):
    """No access log: scrapes every few seconds would flood the plugin log."""

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


def start_metrics_server(
    endpoint: str, path: str, metrics: PluginMetrics | ControllerMetrics
) -> tuple[WSGIServer, int]:
    """Serve ``metrics`` at ``http://<endpoint><path>`` on a daemon thread; returns (server, port).

    ``endpoint`` is ``[host]:port`` (``:8080`` = every address; port 0 = any free port); any other path
    answers 404 naming the metrics path.
    """
    route = path if path.startswith("/") else "/" + path
    exposition = prometheus_client.make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        if environ.get("PATH_INFO", "") != route:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return iter([f"metrics are at {route}\n".encode()])
        return iter(exposition(environ, start_response))

    host, port = _split_endpoint(endpoint)
    try:
        server = make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:  # the port is taken, or the address is not this host's
        from nvdra.core.errors import HostError

        reason = exc.strerror or exc
        raise HostError(f"metrics server: cannot listen on {endpoint} (--http-endpoint): {reason}") from exc
    threading.Thread(target=server.serve_forever, name="nvdra-metrics", daemon=True).start()
    return server, server.server_address[1]
