"""The DRA kubelet service: NodePrepareResources / NodeUnprepareResources for v1 and v1beta1.

:class:`DraService` is version-neutral; :class:`DraServicer` adapts it to one proto version.
Invariants owned here:

* every claim of a request is answered, exactly once, and no other UID is (the kubelet rejects both
  a skipped and an unknown claim): a claim that could not be fetched, has another UID than the
  kubelet named, or is not allocated gets a per-claim error; a claim the driver did not answer gets
  one; a driver exception becomes a per-claim error for every claim handed to it (logged, the
  server keeps running);
* the claims of one call are fetched concurrently and *before* taking the serialization lock (as
  the Go helper does), so the GETs of one call overlap with the driver work of another;
* group commit (:mod:`.groupcommit`): calls of one kind (prepare, unprepare) that arrive while the
  driver is busy are joined into one driver call when it is free, so a driver that writes its checkpoint
  once per call writes it once for all of them; a prepare is announced while it fetches its claims, and
  a call about to enter the driver waits for the announced ones (at most ``JOIN_WAIT_S``; a lone caller
  never waits); calls naming the same claim UID, or prepares whose allocations name the same device,
  are never joined (the driver sees them one after another, as without joining), and each caller still
  gets exactly its own claims' answers; with serialization off (the ComputeDomain plugin) nothing is
  joined either: every call enters the driver at once, so no call waits for another;
* an empty request is the liveness probe: answered empty at once, no lock, no driver call;
* start gate: the sockets may be served before the driver is built (:class:`StartGate`). A call that
  arrives earlier waits for it until shortly before its gRPC deadline; it fails with ``UNAVAILABLE``
  (retryable: the kubelet calls again) when the driver is not ready by then, when start-up failed or
  when the plugin is stopping. No claim is fetched and no driver entered before the gate opens;
* each call gets a monotonically increasing request id used in its log lines; request and response
  are logged at DEBUG.
"""

from __future__ import annotations

__all__ = ["DraService", "DraServicer", "PluginNotReady", "StartGate", "add_dra_servicers"]

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

from nvdra.core import errors
from nvdra.kubeletplugin import _grpc
from nvdra.kubeletplugin.groupcommit import Arrival, GroupCommit
from nvdra.kubeletplugin.serialize import RequestSerializer
from nvdra.kubeletplugin.types import ClaimRef, DraDriver, JsonObject, KubeApi, PrepareResult

_log = logging.getLogger(__name__)

_Fetched = tuple[ClaimRef, JsonObject | None, str]  # (claim, object or None, error)
_Answer = TypeVar("_Answer")


class DraService:
    """Fetches, checks and serializes claims around a :class:`DraDriver`.

    Args:
        driver: the driver.
        kube: the API adapter used to GET the claims.
        serializer: serialization of driver calls (default: in-process lock).
        fetch_workers: threads for concurrent claim GETs within one call.
    """

    def __init__(
        self,
        driver: DraDriver,
        kube: KubeApi,
        *,
        serializer: RequestSerializer | None = None,
        fetch_workers: int = 8,
    ) -> None:
        self.driver = driver
        self.kube = kube
        self.serializer = serializer if serializer is not None else RequestSerializer()
        self._fetch_workers = fetch_workers
        self._pool = futures.ThreadPoolExecutor(
            max_workers=fetch_workers, thread_name_prefix="nvdra-claim-get"
        )
        self._ids = itertools.count(1)
        self._prepares: GroupCommit[JsonObject, PrepareResult] = GroupCommit(
            self.serializer, self._driver_prepare
        )
        self._unprepares: GroupCommit[ClaimRef, str] = GroupCommit(self.serializer, self._driver_unprepare)

    def _driver_prepare(self, claims: list[JsonObject]) -> Mapping[str, PrepareResult]:
        return self.driver.prepare_resource_claims(claims)  # self.driver looked up per call

    def _driver_unprepare(self, claims: list[ClaimRef]) -> Mapping[str, str]:
        return self.driver.unprepare_resource_claims(claims)

    def next_request_id(self) -> int:
        """A new request id (thread-safe: ``itertools.count`` advances atomically under the GIL)."""
        return next(self._ids)

    def close(self) -> None:
        """Release the fetch threads and the lock file (idempotent)."""
        self._pool.shutdown(wait=True)
        self.serializer.close()

    # -- prepare -------------------------------------------------------------------------------

    def prepare(self, claims: Sequence[ClaimRef], request_id: int = 0) -> dict[str, PrepareResult]:
        """Prepare ``claims``; returns exactly one result per claim UID."""
        if not claims:
            return {}
        results: dict[str, PrepareResult] = {}
        ready: list[tuple[ClaimRef, JsonObject]] = []
        arrival = self._prepares.expect()
        try:
            for ref, obj, error in self._fetch_all(claims):
                if obj is None:
                    _log.warning("[req %d] claim %s: %s", request_id, ref, error)
                    results[ref.uid] = PrepareResult(error=error)
                else:
                    ready.append((ref, obj))
            if ready:
                results.update(self._prepare_fetched(ready, request_id, arrival))
        finally:
            self._prepares.arrived(arrival)
        return {c.uid: results[c.uid] for c in claims}

    def _fetch_all(self, claims: Sequence[ClaimRef]) -> list[_Fetched]:
        # The claims are dealt out in equal shares, the first share fetched in the calling thread: a
        # one-claim call (the common case) pays no thread hand-off, and an n-claim call one hand-off
        # per helper rather than per claim (a 64-claim call created and waited on 63 futures).
        shares = min(self._fetch_workers + 1, len(claims))
        pending = [self._pool.submit(self._fetch_each, claims[i::shares]) for i in range(1, shares)]
        fetched: list[_Fetched | None] = [None] * len(claims)
        fetched[0::shares] = self._fetch_each(claims[0::shares])
        for i, share in enumerate(pending, start=1):
            fetched[i::shares] = share.result()
        return [f for f in fetched if f is not None]

    def _fetch_each(self, claims: Sequence[ClaimRef]) -> list[_Fetched]:
        return [self._fetch(c) for c in claims]

    def _fetch(self, ref: ClaimRef) -> _Fetched:
        where = f"ResourceClaim {ref.namespace}/{ref.name}"
        try:
            obj = self.kube.get_resource_claim(ref.namespace, ref.name)
        except errors.KubeNotFound:
            return ref, None, f"fetch {where}: not found"
        except Exception as exc:  # any adapter failure is this claim's error, never the server's
            return ref, None, f"fetch {where}: {exc}"
        actual_uid = (obj.get("metadata") or {}).get("uid", "")
        if actual_uid != ref.uid:
            return ref, None, f"{where}: UID mismatch: expected {ref.uid}, got {actual_uid or '<none>'}"
        if not (obj.get("status") or {}).get("allocation"):
            return ref, None, f"{where} ({ref.uid}) is not allocated"
        return ref, obj, ""

    def _prepare_fetched(
        self, ready: Sequence[tuple[ClaimRef, JsonObject]], request_id: int, arrival: Arrival
    ) -> dict[str, PrepareResult]:
        try:
            keys = [ref.uid for ref, _ in ready] + [key for _, obj in ready for key in _device_keys(obj)]
            answered = self._prepares.run([obj for _, obj in ready], keys, arrival)
        except Exception as exc:
            _log.exception("[req %d] driver prepare failed", request_id)
            message = f"prepare failed: {type(exc).__name__}: {exc}"
            return {ref.uid: PrepareResult(error=message) for ref, _ in ready}
        return {
            ref.uid: answered.get(ref.uid)
            or PrepareResult(error=f"driver returned no result for claim {ref}")
            for ref, _ in ready
        }

    # -- unprepare -----------------------------------------------------------------------------

    def unprepare(self, claims: Sequence[ClaimRef], request_id: int = 0) -> dict[str, str]:
        """Unprepare ``claims``; returns one error message per claim UID ("" = success)."""
        if not claims:
            return {}
        try:
            answered = self._unprepares.run(list(claims), (c.uid for c in claims))
        except Exception as exc:
            _log.exception("[req %d] driver unprepare failed", request_id)
            return {c.uid: f"unprepare failed: {type(exc).__name__}: {exc}" for c in claims}
        return {c.uid: _unprepare_answer(answered, c) for c in claims}


def _unprepare_answer(answered: Mapping[str, str], claim: ClaimRef) -> str:
    if claim.uid not in answered:
        return f"driver returned no result for claim {claim}"
    return answered[claim.uid]


class PluginNotReady(errors.SystemError_):
    """A DRA call found no driver to serve it: still starting past its deadline, start-up failed, or
    stopping. Answered as gRPC ``UNAVAILABLE``, which the kubelet retries."""


class StartGate:
    """The :class:`DraService` of a plugin whose sockets may be served before its driver is built.

    :meth:`open` hands the service over once the driver is ready; :meth:`fail` ends the wait of every
    call for good (start-up failed, or the plugin is stopping). Whichever comes first wins.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._service: DraService | None = None
        self._failure = ""

    def open(self, service: DraService) -> None:
        """Let the waiting and all later calls through to ``service``.

        Raises:
            PluginNotReady: the gate already failed (the plugin is stopping).
        """
        with self._cond:
            if self._failure:
                raise PluginNotReady(self._failure)
            self._service = service
            self._cond.notify_all()

    def fail(self, reason: str) -> None:
        """Fail every waiting and later call with ``reason`` (no effect once open or failed)."""
        with self._cond:
            if self._service is None and not self._failure:
                self._failure = reason
                self._cond.notify_all()

    def wait(self, timeout: float | None) -> DraService:
        """The service; waits up to ``timeout`` seconds (None: until the gate opens or fails).

        Raises:
            PluginNotReady: the gate failed, or ``timeout`` passed while the driver was still starting.
        """
        service = self._service
        if service is not None:  # the steady state: no lock
            return service
        with self._cond:
            self._cond.wait_for(lambda: self._service is not None or bool(self._failure), timeout)
            if self._service is not None:
                return self._service
            if self._failure:
                raise PluginNotReady(self._failure)
        raise PluginNotReady(f"the plugin is still starting: its driver was not ready within {timeout:.1f} s")


def _wait_budget(remaining: float | None) -> float | None:
    """How long a call may wait for the start gate: up to shortly before its deadline (None: none)."""
    if remaining is None:
        return None
    return max(0.0, remaining - min(1.0, remaining / 10))


class DraServicer:
    """Adapts a :class:`DraService` to one DRA proto version (the generated service's method names)."""

    def __init__(self, gate: StartGate, api: _grpc.DraApi) -> None:
        self.gate = gate
        self.api = api

    def _service(self, context: grpc.ServicerContext) -> DraService:
        """The service once the driver is ready; aborts the call with UNAVAILABLE when it is not."""
        try:
            return self.gate.wait(_wait_budget(context.time_remaining()))
        except PluginNotReady as exc:
            _log.warning("%s DRA call refused: %s", self.api.name, exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def _call(
        self,
        method: str,
        request: Any,
        context: grpc.ServicerContext,
        run: Callable[[DraService, Sequence[ClaimRef], int], Mapping[str, _Answer]],
        error_of: Callable[[_Answer], str],
    ) -> Mapping[str, _Answer]:
        """One DRA call: ``run(service, claims, request id)`` once the driver is ready, its failed claims
        logged. A call without claims (the kubelet's liveness probe) is answered at once, even before."""
        claims = _grpc.claims_from_pb(request)
        if not claims:
            return {}
        service = self._service(context)
        rid = service.next_request_id()
        debug = _log.isEnabledFor(logging.DEBUG)
        if debug:  # the claims' names are not built for a message that is not logged
            _log.debug("[req %d] %s %s request: %s", rid, self.api.name, method, _names(claims))
        results = run(service, claims, rid)
        failed = {uid: error_of(r) for uid, r in results.items() if error_of(r)}
        if failed:
            _log.warning("[req %d] %s failed claims: %s", rid, method, failed)
        if debug:
            _log.debug("[req %d] %s response: %s", rid, method, results)
        return results

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        """gRPC NodePrepareResources."""
        results = self._call("NodePrepareResources", request, context, DraService.prepare, lambda r: r.error)
        return _grpc.prepare_response_to_pb(self.api, results)

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        """gRPC NodeUnprepareResources."""
        results = self._call("NodeUnprepareResources", request, context, DraService.unprepare, lambda e: e)
        return _grpc.unprepare_response_to_pb(self.api, results)


def _device_keys(claim: JsonObject) -> list[str]:
    """``device:<driver>/<pool>/<device>`` for each device the claim's allocation names."""
    results = (((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get(
        "results"
    ) or []
    return [
        f"device:{r.get('driver')}/{r.get('pool')}/{r.get('device')}" for r in results if isinstance(r, dict)
    ]


def _names(claims: Iterable[ClaimRef]) -> list[str]:
    return [str(c) for c in claims]


def add_dra_servicers(server: grpc.Server, gate: StartGate, versions: Iterable[str]) -> None:
    """Serve ``gate``'s service on ``server`` for each DRA version name (``"v1"``, ``"v1beta1"``).

    Raises:
        ConfigError: an unknown version name.
    """
    for version in versions:
        api = _grpc.DRA_APIS.get(version)
        if api is None:
            raise errors.ConfigError("api_versions", version, ", ".join(_grpc.DRA_APIS))
        api.add_to_server(DraServicer(gate, api), server)
