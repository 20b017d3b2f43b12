"""The NVML event monitor over the simulated backend: registration, XIDs, lost GPUs, recovery probes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nvdra.core.errors import NvmlError, NvmlGpuLost
from nvdra.core.health import EventKind, HealthEvent
from nvdra.nvml import SimulatedNvml
from nvdra.nvml._backend import EVENT_DOUBLE_BIT_ECC, EVENT_XID_CRITICAL, HEALTH_EVENT_MASK, NO_INSTANCE
from nvdra.nvml.health import HealthMonitor


@pytest.fixture
def nvml() -> Iterator[SimulatedNvml]:
    backend = SimulatedNvml("dgx-h100")
    backend.init()
    yield backend
    backend.shutdown()


def monitor_for(nvml: SimulatedNvml) -> tuple[HealthMonitor, list[HealthEvent]]:
    events: list[HealthEvent] = []
    gpus = [(i, nvml.device_identity(i).uuid) for i in range(nvml.device_count())]
    return HealthMonitor(nvml, gpus, events.append, wait_ms=10, probe_interval=0.0), events


def test_wait_times_out_with_nvml_timeout_code(nvml: SimulatedNvml) -> None:
    """No event: wait_event raises NVML error 10 (TIMEOUT), which is the normal idle case."""
    with pytest.raises(NvmlError) as info:
        nvml.wait_event(1)
    assert info.value.code == 10


def test_events_of_unregistered_gpus_are_dropped(nvml: SimulatedNvml) -> None:
    """NVML delivers only registered event types: an XID on an unregistered GPU is not queued."""
    assert not nvml.inject_xid(3, 79)
    nvml.register_events(3, HEALTH_EVENT_MASK)
    assert nvml.inject_xid(3, 79)
    event = nvml.wait_event(0)
    assert (event.index, event.event_type, event.data, event.gi_id) == (
        3,
        EVENT_XID_CRITICAL,
        79,
        NO_INSTANCE,
    )


def test_xid_becomes_a_health_event_for_its_gpu(nvml: SimulatedNvml) -> None:
    """An injected XID on GPU 3 reaches the callback as an XID event carrying GPU 3's UUID."""
    monitor, events = monitor_for(nvml)
    monitor.start()
    try:
        nvml.inject_xid(3, 48)
        nvml.inject_event(3, EVENT_DOUBLE_BIT_ECC)
        monitor.poll_once()
    finally:
        monitor.stop()
    kinds = [(e.kind, e.gpu_uuid, e.xid) for e in events]
    assert (EventKind.XID, nvml.device_identity(3).uuid, 48) in kinds


def test_registration_failure_reports_unmonitored(nvml: SimulatedNvml) -> None:
    """A GPU whose registration fails yields UNMONITORED; the others are still registered."""
    nvml.inject_fault("register_events", 3, index=2)  # NOT_SUPPORTED
    monitor, events = monitor_for(nvml)
    monitor._register(2, nvml.device_identity(2).uuid)
    monitor._register(5, nvml.device_identity(5).uuid)
    assert [(e.kind, e.gpu_uuid) for e in events] == [(EventKind.UNMONITORED, nvml.device_identity(2).uuid)]
    assert nvml.inject_xid(5, 79)


def test_lost_gpu_reports_all_lost_then_responsive_after_reset(nvml: SimulatedNvml) -> None:
    """GPU_IS_LOST from the wait taints every GPU; after a reset the probe reports the GPU RESPONSIVE."""
    monitor, events = monitor_for(nvml)
    for i, uuid in monitor.gpus:
        monitor._register(i, uuid)
    nvml.mark_gpu_lost(3)
    with pytest.raises(NvmlGpuLost):
        nvml.wait_event(0)
    nvml.mark_gpu_lost(3)  # the monitor sees a second loss through its loop
    monitor.poll_once()
    lost = [e for e in events if e.kind is EventKind.GPU_LOST]
    assert lost and lost[0].gpu_uuid is None
    responsive = {e.gpu_uuid for e in events if e.kind is EventKind.RESPONSIVE}
    assert nvml.device_identity(0).uuid in responsive  # healthy GPUs answer at once
    assert all(e.gpu_uuid != monitor.gpus[3][1] for e in events if e.kind is EventKind.RESPONSIVE)
    nvml.reset_gpu(3)
    monitor.poll_once()
    assert monitor.gpus[3][1] in {e.gpu_uuid for e in events if e.kind is EventKind.RESPONSIVE}
