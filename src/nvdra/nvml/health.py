"""The NVML health event monitor: a thread that turns NVML events into :class:`HealthEvent` records.

It works over any :class:`~nvdra.nvml.NvmlBackend` (the real one, or the simulator with injected
events). Upstream's loop (upstream-driver §3.6): register every GPU for XID critical errors and both
ECC kinds (intersected with what the GPU supports), wait up to 5 s per call, act on XIDs only.

Invariants owned here:
- a GPU that cannot be registered (NOT_SUPPORTED, any NVML error) yields one ``UNMONITORED`` event;
  one that is already lost yields ``GPU_LOST``; neither stops the others from being monitored;
- ``wait_event`` TIMEOUT is the normal idle case; GPU_IS_LOST from the wait, or an event whose device
  cannot be read, yields ``GPU_LOST`` for *every* GPU (``gpu_uuid`` None), as upstream: NVML does not
  say which GPU fell off;
- recovery (which upstream lacks): every ``probe_interval`` seconds each GPU under suspicion (lost or
  unmonitored) is asked for its identity; one that answers is registered again and yields
  ``RESPONSIVE``;
- the callback runs on the monitor thread; an exception in it is logged and the loop goes on.
"""

from __future__ import annotations

__all__ = ["HealthMonitor"]

import logging
import threading
import time
from collections.abc import Callable, Sequence

from nvdra.core.errors import NvmlError, NvmlGpuLost
from nvdra.core.health import EventKind, HealthEvent
from nvdra.nvml import _backend as b

log = logging.getLogger(__name__)


def _instance(value: int) -> int | None:
    return None if value == b.NO_INSTANCE else value


class HealthMonitor:
    """Watch the NVML events of some GPUs and report :class:`HealthEvent` records.

    Args:
        backend: an initialised NVML backend.
        gpus: ``(index, uuid)`` of every GPU to watch.
        on_event: called with each event (on the monitor thread).
        wait_ms: how long one ``wait_event`` call blocks (upstream: 5000).
        probe_interval: seconds between probes of suspected GPUs.
        clock: time source for the events' ``at`` (the plugin's health policy uses the same one).
    """

    def __init__(
        self,
        backend: b.NvmlBackend,
        gpus: Sequence[tuple[int, str]],
        on_event: Callable[[HealthEvent], None],
        *,
        wait_ms: int = 5000,
        probe_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.gpus = tuple(gpus)
        self.on_event = on_event
        self.wait_ms = wait_ms
        self.probe_interval = probe_interval
        self.clock = clock
        self._suspects: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_probe = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Register every GPU and start the monitor thread."""
        for index, uuid in self.gpus:
            self._register(index, uuid)
        self._last_probe = self.clock()
        self._thread = threading.Thread(target=self._run, name="nvdra-health", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (within one wait) and free the event set."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.wait_ms / 1000 + 5)
        try:
            self.backend.free_events()
        except NvmlError as exc:
            log.debug("freeing the NVML event set: %s", exc)

    # -- work ------------------------------------------------------------------------------------
    def _emit(
        self,
        kind: EventKind,
        uuid: str | None,
        *,
        xid: int = 0,
        gi_id: int | None = None,
        ci_id: int | None = None,
        detail: str = "",
    ) -> None:
        event = HealthEvent(
            kind=kind, gpu_uuid=uuid, at=self.clock(), xid=xid, gi_id=gi_id, ci_id=ci_id, detail=detail
        )
        try:
            self.on_event(event)
        except Exception:
            log.exception("health event handler failed on %s", event)

    def _register(self, index: int, uuid: str) -> bool:
        try:
            mask = b.HEALTH_EVENT_MASK & self.backend.supported_event_types(index)
            if not mask:
                raise NvmlError(f"GPU {index} supports none of the health events", code=3)
            self.backend.register_events(index, mask)
        except NvmlGpuLost as exc:
            log.error("GPU %d (%s) is lost: %s", index, uuid, exc)
            self._suspects.add(index)
            self._emit(EventKind.GPU_LOST, uuid, detail=str(exc))
            return False
        except NvmlError as exc:
            log.warning("GPU %d (%s) cannot be monitored: %s", index, uuid, exc)
            self._suspects.add(index)
            self._emit(EventKind.UNMONITORED, uuid, detail=str(exc))
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()

    def poll_once(self) -> None:
        """One wait for an event (and a probe round when due); the thread's loop body."""
        try:
            event = self.backend.wait_event(self.wait_ms)
        except NvmlGpuLost as exc:
            log.error("NVML reports a lost GPU: tainting every device (%s)", exc)
            self._suspects.update(i for i, _ in self.gpus)
            self._emit(EventKind.GPU_LOST, None, detail=str(exc))
        except NvmlError as exc:
            if exc.code != b.NVML_TIMEOUT:
                log.warning("waiting for NVML events: %s", exc)
                self._stop.wait(min(1.0, self.wait_ms / 1000))
        else:
            self._handle(event)
        if self.clock() - self._last_probe >= self.probe_interval:
            self._last_probe = self.clock()
            self._probe()

    def _handle(self, event: b.EventRecord) -> None:
        if event.uuid is None:
            self._suspects.update(i for i, _ in self.gpus)
            self._emit(EventKind.GPU_LOST, None, detail="event from a GPU whose UUID cannot be read")
            return
        gi, ci = _instance(event.gi_id), _instance(event.ci_id)
        if event.event_type & b.EVENT_XID_CRITICAL:
            log.warning("XID %d on GPU %s (GI %s, CI %s)", event.data, event.uuid, gi, ci)
            self._emit(EventKind.XID, event.uuid, xid=event.data, gi_id=gi, ci_id=ci)
        elif event.event_type & b.EVENT_DOUBLE_BIT_ECC:
            self._emit(EventKind.DOUBLE_BIT_ECC, event.uuid, gi_id=gi, ci_id=ci)
        elif event.event_type & b.EVENT_SINGLE_BIT_ECC:
            self._emit(EventKind.SINGLE_BIT_ECC, event.uuid, gi_id=gi, ci_id=ci)

    def _probe(self) -> None:
        for index, uuid in self.gpus:
            if index not in self._suspects:
                continue
            try:
                identity = self.backend.device_identity(index)
            except NvmlError:
                continue
            if identity.uuid == uuid and self._register(index, uuid):
                self._suspects.discard(index)
                log.info("GPU %d (%s) answers again", index, uuid)
                self._emit(EventKind.RESPONSIVE, uuid)
