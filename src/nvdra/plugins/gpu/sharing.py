"""Time-slicing in the GPU driver, and the registration of every sharing/MIG effect of this issue.

:class:`TimeSlicingPlanner` turns each config group whose strategy is TimeSlicing into a ``timeslice``
record for its full GPUs (TimeSlicing on MIG devices is a no-op); :class:`TimeSlicingExecutor` applies
it with ``nvidia-smi`` (compute mode DEFAULT, then the time slice) through the host-command runner and
resets every GPU to DEFAULT / time slice 0 on undo. :func:`sharing_effects` builds the planners and
executors the enabled gates call for.
"""

from __future__ import annotations

__all__ = ["TimeSlicingExecutor", "TimeSlicingPlanner", "host_runner", "sharing_effects"]

from collections.abc import Callable
from pathlib import Path
from typing import cast

from nvdra.cdi import DriverRoot
from nvdra.core.config import GpuConfig, MigDeviceConfig
from nvdra.core.effects import EffectRecord
from nvdra.core.errors import ClaimError
from nvdra.core.faults import reach
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.sharing import TimeSlice, plan_time_slicing
from nvdra.kubeletplugin.objects import ObjectApi
from nvdra.nvml import NvmlBackend, SimulatedNvml, refresh_mig_capabilities
from nvdra.nvml.executor import MigExecutor
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.effects import Applied, ClaimContext, EffectExecutor, EffectPlanner, expect
from nvdra.plugins.gpu.fake_mps_control import install_fake_mps_control
from nvdra.plugins.gpu.hostcmd import (
    HostCommandRunner,
    HostCommands,
    SimulatedHostCommands,
    set_compute_mode,
    set_timeslice,
)
from nvdra.plugins.gpu.mig import DynamicMigExecutor, DynamicMigPlanner
from nvdra.plugins.gpu.mps import MpsExecutor, MpsPlanner


class TimeSlicingPlanner:
    """Plans the time slice of every TimeSlicing group's full GPUs (gate TimeSlicingSettings)."""

    def __init__(self, gates: FeatureGates) -> None:
        self.gates = gates

    def plan(self, ctx: ClaimContext) -> list[TimeSlice]:
        """One ``timeslice`` record per group that has full GPUs."""
        records: list[TimeSlice] = []
        for group in ctx.groups:
            # A partition device is time-sliced on each of its member GPUs.
            devices = ctx.group_devices(group)
            gpus = [g.uuid for d in devices if d.type in ("gpu", "partition") for g in d.gpus]
            records += plan_time_slicing(group.config, gpus, self.gates)
        return records


class TimeSlicingExecutor:
    """Applies ``timeslice`` records with nvidia-smi."""

    records: tuple[type[EffectRecord], ...] = (TimeSlice,)

    def __init__(self, runner: HostCommandRunner) -> None:
        self.runner = runner

    def apply(self, record: EffectRecord) -> Applied:
        """Compute mode DEFAULT, then the interval, on each GPU."""
        plan = expect(record, TimeSlice)
        for uuid in plan.gpus:
            set_compute_mode(self.runner, uuid, "DEFAULT")
            set_timeslice(self.runner, uuid, plan.interval)
            reach("after-timeslice-set")
        return Applied()

    def undo(self, record: EffectRecord) -> None:
        """Back to DEFAULT and time slice 0 (idempotent)."""
        for uuid in expect(record, TimeSlice).gpus:
            set_compute_mode(self.runner, uuid, "DEFAULT")
            set_timeslice(self.runner, uuid, 0)


def host_runner(config: PluginConfig, backend: NvmlBackend) -> HostCommandRunner:
    """The simulated runner on a simulated node, else nvidia-smi from the container's driver root."""
    if isinstance(backend, SimulatedNvml):
        return SimulatedHostCommands(backend)
    return HostCommands(config.container_driver_root)


class _MigMpsGuard:
    """Refuses MPS on an on-demand MIG device (upstream: not yet supported)."""

    def plan(self, ctx: ClaimContext) -> list[EffectRecord]:
        for group in ctx.groups:
            config = group.config
            sharing = config.sharing if isinstance(config, GpuConfig | MigDeviceConfig) else None
            if sharing is None or sharing.strategy != "MPS":
                continue
            dynamic = [d.name for d in ctx.group_devices(group) if d.type == "mig" and d.mig is None]
            if dynamic:
                raise ClaimError(f"MPS on dynamically created MIG devices is not yet supported: {dynamic}")
        return []


def sharing_effects(
    config: PluginConfig,
    gates: FeatureGates,
    backend: NvmlBackend,
    api: object,
    *,
    runner: HostCommandRunner | None = None,
    driver_root: Path | None = None,
) -> tuple[list[EffectPlanner], list[EffectExecutor]]:
    """Planners and executors for TimeSlicing, MPS and dynamic MIG, as the gates enable them.

    Args:
        config: the plugin's settings (plugin dir, namespace, node name, image).
        gates: the feature gates.
        backend: the NVML backend (simulated or real).
        api: the API client; it must implement ``ObjectApi`` when MPSSupport is on.
        runner: the host-command runner (default: :func:`host_runner`).
        driver_root: the driver root as the plugin sees it (default: the simulated one, or the container's).
    """
    runner = runner or host_runner(config, backend)
    simulated = isinstance(backend, SimulatedNvml)
    root = driver_root or (
        config.simulated_tree("driver-root") if simulated else config.container_driver_root
    )
    host_root = root if simulated or driver_root is not None else config.nvidia_driver_root
    if simulated:
        install_fake_mps_control(root)
    # Executors are registered whatever the gates say, so records checkpointed by an earlier run with
    # other gates can still be undone; only planning is gated.
    planners: list[EffectPlanner] = []
    executors: list[EffectExecutor] = [TimeSlicingExecutor(runner)]
    if gates.enabled(Gate.TIME_SLICING_SETTINGS):
        planners.append(TimeSlicingPlanner(gates))
    if hasattr(api, "create_object"):
        executors.append(
            MpsExecutor(
                api=cast(ObjectApi, api), runner=runner, config=config, gates=gates, driver_root=host_root
            )
        )
        if gates.enabled(Gate.MPS_SUPPORT):
            option = config.consumable_shares.strip()
            planners.append(MpsPlanner(total_shares=int(option) if option.isdigit() else None))
    if gates.enabled(Gate.DYNAMIC_MIG):
        planners += [_MigMpsGuard(), DynamicMigPlanner()]
    identities = [backend.device_identity(i) for i in range(backend.device_count())]
    on_change: Callable[[], None] | None = (
        (lambda: refresh_mig_capabilities(backend, root)) if simulated else None
    )
    executors.append(
        DynamicMigExecutor(
            MigExecutor(backend),
            DriverRoot(str(host_root), str(root), driver_version=backend.driver_version()),
            minors={i.uuid: i.minor for i in identities},
            on_change=on_change,
        )
    )
    return planners, executors
