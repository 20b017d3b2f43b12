"""The simulated node's NVML event set and NVLink wiring (helpers of :class:`SimulatedNvml`).

Invariants: an event is queued only for a GPU registered for its type; a lost registered GPU queues a
marker that ``wait`` turns into GPU_IS_LOST, as NVML's event wait does; the queue shares the
simulator's lock, so injection and waiting see one consistent state.
"""

from __future__ import annotations

__all__ = ["SUPPORTED_EVENTS", "EventQueue", "link_remotes"]

import threading
from collections import deque

from nvdra.core.errors import NvmlGpuLost, NvmlNotSupported, nvml_error_for_code
from nvdra.nvml import _backend as b
from nvdra.nvml._profile import GpuSpec, NodeProfile

SUPPORTED_EVENTS = (
    b.EVENT_SINGLE_BIT_ECC | b.EVENT_DOUBLE_BIT_ECC | b.EVENT_PSTATE | b.EVENT_XID_CRITICAL | b.EVENT_CLOCK
)
"""XID, both ECC kinds, P-state and clock events (what datacenter GPUs report)."""


class EventQueue:
    """One NVML event set: registrations per GPU and the queued events. Guarded by the given lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self._cond = threading.Condition(lock)
        self._registered: dict[int, int] = {}  # GPU index -> registered event mask
        self._events: deque[b.EventRecord | None] = deque()  # None = a registered GPU was lost

    def register(self, index: int, mask: int) -> None:
        """Register GPU ``index``; NOT_SUPPORTED for an event bit the GPU cannot report."""
        if mask & ~SUPPORTED_EVENTS or mask == 0:
            raise NvmlNotSupported(f"register_events: event mask {mask:#x} not supported on GPU {index}")
        self._registered[index] = self._registered.get(index, 0) | mask

    def wait(self, timeout_ms: int) -> b.EventRecord:
        """Block (the lock held by the caller) up to ``timeout_ms`` for the next event."""
        if not self._events:
            self._cond.wait_for(lambda: bool(self._events), timeout=max(0, timeout_ms) / 1000)
        if not self._events:
            raise nvml_error_for_code(b.NVML_TIMEOUT, "wait_event: no event before the timeout")
        event = self._events.popleft()
        if event is None:
            raise NvmlGpuLost("wait_event: a registered GPU has fallen off the bus")
        return event

    def clear(self) -> None:
        """Forget every registration and queued event."""
        self._registered.clear()
        self._events.clear()

    def gpu_lost(self, index: int) -> None:
        """A GPU fell off the bus: a waiter registered for it gets GPU_IS_LOST."""
        if index in self._registered:
            self._events.append(None)
            self._cond.notify_all()

    def inject(self, record: b.EventRecord) -> bool:
        """Queue an event; True if its GPU is registered for its type."""
        if record.index is None or not self._registered.get(record.index, 0) & record.event_type:
            return False
        self._events.append(record)
        self._cond.notify_all()
        return True


def link_remotes(profile: NodeProfile, spec: GpuSpec) -> dict[int, tuple[int, str]]:
    """Link index → (remote device type, remote PCI bus id) for one GPU, per the profile's wiring."""
    topo = profile.nvlink
    remotes: dict[int, tuple[int, str]] = {}
    if topo.topology == "nvswitch":
        link = 0
        for bus_id, count in topo.switches:
            for _ in range(count):
                remotes[link] = (b.NVLINK_REMOTE_SWITCH, bus_id)
                link += 1
    elif topo.topology == "bridges":
        for a, c in topo.pairs:
            if spec.index in (a, c):
                peer = profile.gpus[c if spec.index == a else a]
                for link in range(topo.bridges_per_pair * topo.links_per_bridge):
                    remotes[link] = (b.NVLINK_REMOTE_GPU, peer.bus_id)
    return remotes
