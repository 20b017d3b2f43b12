"""GPU device health (gate ``NVMLDeviceHealthCheck``): NVML events → taints and the DRA health stream.

:class:`HealthTracker` is a device view of the GPU driver: it folds the monitor's events into a
:class:`~nvdra.core.health.HealthState`, puts the taints on the published devices (the driver
republishes through the ResourceSlice publisher, which retries transient API errors), and pushes the
complete health list into a :class:`~nvdra.kubeletplugin.HealthReporter` for the kubelet's
``NodeWatchResources`` stream (which re-sends it before the kubelet's 30 s lease runs out).

Event → devices (upstream §3.6): an event on a whole GPU (no GI/CI) concerns the GPU and every MIG
device on it; an event with GI/CI ids concerns that MIG device (the whole GPU if none matches); an event
without a GPU (a lost GPU NVML cannot name) concerns every device. A background timer applies the
quiet-period recovery rule.
"""

from __future__ import annotations

__all__ = ["HealthTracker", "health_view", "start_health_monitor"]

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping

import attrs

from nvdra.core.devices import Inventory
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.health import HealthEvent, HealthPolicy, HealthState, parse_xids
from nvdra.kubeletplugin.health import DeviceHealth, HealthReporter, HealthStatus
from nvdra.kubeletplugin.types import DriverResources
from nvdra.nvml import NvmlBackend
from nvdra.nvml.health import HealthMonitor
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.devices import AllocatableDevice, allocatable_devices
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.fabric.partitions import partition_devices

log = logging.getLogger(__name__)


def _device_table(devices: Mapping[str, AllocatableDevice]) -> dict[str, AllocatableDevice]:
    return dict(devices)


@attrs.define(kw_only=True, eq=False)
class HealthTracker:
    """Health of the driver's devices; a ``DeviceView`` of :class:`~nvdra.plugins.gpu.driver.GpuDriver`.

    Args:
        devices: the driver's allocatable devices by name.
        pool_name: the pool the devices are published in (the node name).
        policy: ignore list and quiet period.
        reporter: the health stream's source (None: taints only).
        on_change: called after the taints changed (serve: ``driver.republish``).
        clock: must be the clock the monitor stamps events with.
    """

    devices: dict[str, AllocatableDevice] = attrs.field(kw_only=False, converter=_device_table)
    pool_name: str
    policy: HealthPolicy
    reporter: HealthReporter | None = None
    on_change: Callable[[], None] | None = None
    _clock: Callable[[], float] = attrs.field(default=time.monotonic, alias="clock")
    _wall: Callable[[], float] = attrs.field(default=time.time, alias="wall_clock")
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _state: HealthState = attrs.field(init=False, factory=HealthState)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event)
    _wake: threading.Event = attrs.field(init=False, factory=threading.Event)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._report()

    # -- state -------------------------------------------------------------------------------------
    @property
    def state(self) -> HealthState:
        """The current taints."""
        return self._state

    def devices_of(self, event: HealthEvent) -> list[str]:
        """The device names an event concerns (see the module docstring)."""
        if event.gpu_uuid is None:
            return sorted(self.devices)
        # A partition device (--publish-fabric-partitions) is concerned by an event on any member GPU.
        on_gpu = [d for d in self.devices.values() if any(g.uuid == event.gpu_uuid for g in d.gpus)]
        if event.gi_id is not None:
            migs = [
                d.name
                for d in on_gpu
                if d.mig is not None
                and d.mig.gi_id == event.gi_id
                and (event.ci_id is None or d.mig.ci_id == event.ci_id)
            ]
            if migs:
                return migs
        return sorted(d.name for d in on_gpu)

    def handle(self, event: HealthEvent) -> None:
        """Fold one monitor event in; republish and report when the taints changed."""
        with self._lock:
            new = self._state.apply(event, self.devices_of(event), self.policy)
            changed = new != self._state
            self._state = new
        if changed:
            log.warning("device health changed after %s %s: %s", event.kind, event.gpu_uuid, self._summary())
            self._changed()
        self._wake.set()  # the recovery timer recomputes its next deadline

    def tick(self) -> bool:
        """Apply the quiet-period rule now; True if a taint was cleared."""
        with self._lock:
            new = self._state.recover(self._clock(), self.policy)
            changed = new != self._state
            self._state = new
        if changed:
            log.info("quiet period over: device health now %s", self._summary() or "all healthy")
            self._changed()
        return changed

    def _summary(self) -> str:
        return "; ".join(f"{d}: {self._state.message(d)}" for d in sorted(self._state.taints))

    def _changed(self) -> None:
        self._report()
        if self.on_change is not None:
            self.on_change()

    def health(self) -> list[DeviceHealth]:
        """The complete list for the kubelet: every device, healthy or not."""
        now = int(self._wall())
        state = self._state
        return [
            DeviceHealth(
                pool_name=self.pool_name,
                device_name=name,
                health=HealthStatus.HEALTHY if state.healthy(name) else HealthStatus.UNHEALTHY,
                last_updated=now,
                message=state.message(name),
            )
            for name in sorted(self.devices)
        ]

    def _report(self) -> None:
        if self.reporter is not None:
            self.reporter.report(self.health())

    # -- DeviceView ------------------------------------------------------------------------------
    def allocatable(self) -> Mapping[str, AllocatableDevice]:
        """No devices of its own."""
        return {}

    def refuse(self, name: str, held: Collection[str]) -> str | None:
        """Never refuses: the scheduler honours the taints; a claim allocated before one still runs."""
        return None

    def decorate(self, resources: DriverResources, held: Collection[str]) -> DriverResources:
        """Put each device's taints on it, in every slice."""
        state = self._state
        if not state.taints:
            return resources
        return resources.with_devices(state.decorate)

    # -- recovery timer ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread that clears XID taints when their quiet period is over."""
        self._thread = threading.Thread(target=self._run, name="nvdra-health-recovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the recovery thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self._state.next_expiry(self.policy)
            timeout = None if due is None else max(0.0, due - self._clock())
            self._wake.wait(timeout)
            self._wake.clear()
            if not self._stop.is_set():
                self.tick()


def health_view(
    config: PluginConfig, gates: FeatureGates, driver: GpuDriver, *, reporter: HealthReporter | None = None
) -> HealthTracker | None:
    """With NVMLDeviceHealthCheck on: a tracker added to the driver's views, republishing through it and
    reporting into ``reporter`` (the served health stream's; default a new one)."""
    if not gates.enabled(Gate.NVML_DEVICE_HEALTH_CHECK):
        return None
    _, malformed = parse_xids(config.additional_xids_to_ignore)
    if malformed:
        log.warning("--additional-xids-to-ignore: ignoring malformed entries %s", ", ".join(malformed))
    devices = allocatable_devices(driver.inventory, gates)
    if driver.fabric_partitions:
        devices.update(partition_devices(driver.inventory, driver.fabric_catalog))
    tracker = HealthTracker(
        devices,
        pool_name=config.node_name,
        # 0 turns time-based recovery off (upstream's behaviour: a taint stays until the plugin restarts).
        policy=HealthPolicy.from_flags(
            config.additional_xids_to_ignore, quiet_period=config.health_quiet_period or None
        ),
        reporter=reporter if reporter is not None else HealthReporter(),
        on_change=driver.republish,
    )
    driver.views.append(tracker)
    return tracker


def start_health_monitor(backend: NvmlBackend, inventory: Inventory, tracker: HealthTracker) -> HealthMonitor:
    """Start the recovery timer and the NVML event monitor feeding ``tracker``."""
    tracker.start()
    # 1 s waits rather than upstream's 5 s: an event still wakes the wait at once, and stopping the
    # plugin (which joins the monitor thread) takes at most one wait.
    monitor = HealthMonitor(
        backend, [(g.index, g.uuid) for g in inventory.gpus], tracker.handle, wait_ms=1000
    )
    monitor.start()
    return monitor
