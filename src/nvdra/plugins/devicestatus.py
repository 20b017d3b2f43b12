"""Device status in the claim (KEP-4817, feature DRAResourceClaimDeviceStatus, beta and on since 1.32/1.33).

After a claim is prepared, the plugin writes one ``status.devices[]`` entry per allocated device of its
driver (``driver``, ``pool``, ``device``, ``shareID`` for a share, a ``Ready`` condition and ``data``
saying what the device is); after unprepare it removes its entries again. Other drivers' entries are
never touched. Writes go through the ``/status`` subresource as an update guarded by the claim's
``resourceVersion``; a 409 (someone else wrote the claim) is retried on a fresh copy, a few times.

A status write that fails does not fail the prepare: the container gets its devices, the status is a
report. It is logged, and the next prepare or unprepare of the claim writes again.

With ``background=True`` (the plugin's setting) the writes leave the kubelet's critical path: the entries
are computed when the call is answered and written by one worker thread, in order, the newest pending
write of a claim replacing an older one (a prepare's entries then its unprepare's removal of the same
claim write only the removal). A prepare+unprepare pair otherwise waits for up to three API requests
throttled by the client's rate limiter under the serialization lock (docs/performance.md).

:class:`ClaimStatusReporter` wraps any :class:`~nvdra.kubeletplugin.types.DraDriver`; the driver says
what each prepared claim's entries are (``describe``).
"""

from __future__ import annotations

__all__ = ["ClaimStatusReporter", "ClaimStatusWriter", "ready_condition"]

import datetime
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nvdra.core.errors import KubeApiError, KubeConflict, KubeNotFound
from nvdra.kubeletplugin.objects import RESOURCE_CLAIMS, ObjectApi
from nvdra.kubeletplugin.types import ClaimRef, DraDriver, JsonObject, PrepareResult, device_status_key

log = logging.getLogger(__name__)
Describe = Callable[[str], Sequence[JsonObject]]
"""Claim UID → the status entries of its prepared devices (empty when the driver knows no such claim)."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(message: str, *, status: str = "True", reason: str = "Prepared") -> JsonObject:
    """A ``metav1.Condition`` of type ``Ready`` (the time is filled in when written)."""
    return {"type": "Ready", "status": status, "reason": reason, "message": message}


def _with_times(entry: JsonObject, before: Mapping[str, Any] | None) -> JsonObject:
    """Conditions get their ``lastTransitionTime``; a condition whose status did not change keeps it."""
    old = {c.get("type"): c for c in (before or {}).get("conditions") or []}
    conditions = []
    for c in entry.get("conditions") or []:
        prior = old.get(c.get("type"))
        same = (
            prior is not None and prior.get("status") == c.get("status") and prior.get("lastTransitionTime")
        )
        conditions.append({**c, "lastTransitionTime": prior["lastTransitionTime"] if same else _now()})  # type: ignore[index]
    return {**entry, "conditions": conditions} if conditions else dict(entry)


def merged_devices(
    current: Sequence[Mapping[str, Any]], driver_name: str, mine: Sequence[JsonObject]
) -> list[JsonObject]:
    """``status.devices`` with this driver's entries replaced by ``mine`` (others kept, in order)."""
    before = {device_status_key(d): d for d in current if d.get("driver") == driver_name}
    others = [dict(d) for d in current if d.get("driver") != driver_name]
    return others + [_with_times(e, before.get(device_status_key(e))) for e in mine]


class ClaimStatusReporter:
    """A DRA driver that also reports its devices in each claim's ``status.devices`` (delegates the rest).

    Args:
        driver: the wrapped driver.
        api: where claims are read and their status written.
        driver_name: whose entries these are.
        describe: the entries of a prepared claim, by UID.
        retries: attempts per write when the claim changed under us (409).
        background: write from a worker thread after the call is answered (stop it with :meth:`close`).
    """

    def __init__(
        self,
        driver: DraDriver,
        api: ObjectApi,
        *,
        driver_name: str,
        describe: Describe,
        retries: int = 5,
        background: bool = False,
    ) -> None:
        self.driver = driver
        self.driver_name = driver_name
        self.describe = describe
        self.writer = ClaimStatusWriter(api, driver_name=driver_name, retries=retries)
        self._queue: _WriteQueue | None = _WriteQueue(self.writer) if background else None

    def _write(self, claim: Mapping[str, Any], mine: Sequence[JsonObject]) -> None:
        if self._queue is None:
            self.writer.write(claim, mine)
        else:
            self._queue.put(claim, list(mine))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued write is done; False when ``timeout`` seconds were not enough."""
        return True if self._queue is None else self._queue.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the worker."""
        if self._queue is not None:
            self._queue.close(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> Mapping[str, PrepareResult]:
        """Prepare, then write each prepared claim's device entries."""
        results = self.driver.prepare_resource_claims(claims)
        for claim in claims:
            uid = str((claim.get("metadata") or {}).get("uid", ""))
            result = results.get(uid)
            if result is not None and not result.error:
                self._write(claim, list(self.describe(uid)))
        return results

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        """Unprepare, then remove this driver's entries from each unprepared claim."""
        errors = self.driver.unprepare_resource_claims(claims)
        for ref in claims:
            if not errors.get(ref.uid):
                self._write({"metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid}}, [])
        return errors

    def handle_error(self, error: BaseException, message: str) -> None:
        """Delegated."""
        self.driver.handle_error(error, message)


class _WriteQueue:
    """One worker thread writing claims' status entries in order; a claim's newest write replaces its
    pending one (its place in the queue kept)."""

    def __init__(self, writer: ClaimStatusWriter) -> None:
        self._writer = writer
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[Mapping[str, Any], list[JsonObject]]] = {}  # insertion-ordered
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nvdra-claim-status", daemon=True)
        self._thread.start()

    def put(self, claim: Mapping[str, Any], mine: list[JsonObject]) -> None:
        meta = claim.get("metadata") or {}
        key = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        with self._cond:
            if self._closed:
                return
            self._pending[key] = (claim, mine)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                key = next(iter(self._pending))
                claim, mine = self._pending.pop(key)
                self._busy = True
            try:
                self._writer.write(claim, mine)
            except Exception:  # a bug must not stop later reports; the write itself logs API errors
                log.exception("device status write of claim %s failed", key)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join(timeout)


class ClaimStatusWriter:
    """Writes one driver's entries of claims' ``status.devices`` (others' entries are kept).

    Args:
        api: where claims are read and their status written.
        driver_name: whose entries these are.
        retries: attempts per write when the claim changed under us (409).
    """

    def __init__(self, api: ObjectApi, *, driver_name: str, retries: int = 5) -> None:
        self.api = api
        self.driver_name = driver_name
        self.retries = retries

    def write(self, claim: Mapping[str, Any], mine: Sequence[JsonObject]) -> bool:
        """Put ``mine`` as this driver's entries in the claim's status; False (logged) when it could not.

        ``claim`` may be the object prepare was called with (its ``resourceVersion`` saves a GET).
        """
        meta = claim.get("metadata") or {}
        namespace, name, uid = (
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(meta.get("uid", "")),
        )
        obj: Mapping[str, Any] | None = claim if meta.get("resourceVersion") else None
        for _ in range(self.retries):
            try:
                if obj is None:
                    obj = self.api.get_object(RESOURCE_CLAIMS, name, namespace)
                if uid and (obj.get("metadata") or {}).get("uid") != uid:
                    return False  # deleted and re-created: not the claim we prepared
                status = dict(obj.get("status") or {})
                current = status.get("devices") or []
                devices = merged_devices(current, self.driver_name, list(mine))
                if devices == current:
                    return True
                if devices:
                    status["devices"] = devices
                else:
                    status.pop("devices", None)
                self.api.update_object(RESOURCE_CLAIMS, {**obj, "status": status}, status=True)
                return True
            except KubeConflict:
                obj = None  # changed under us: read it again
            except KubeNotFound:
                return False  # gone: nothing to report on
            except KubeApiError as exc:
                log.warning("cannot write device status of claim %s/%s: %s", namespace, name, exc)
                return False
        log.warning(
            "cannot write device status of claim %s/%s: it kept changing (%d tries)",
            namespace,
            name,
            self.retries,
        )
        return False
