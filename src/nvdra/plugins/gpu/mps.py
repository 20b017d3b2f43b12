"""MPS in the GPU driver (gate ``MPSSupport``): one control-daemon Deployment per config group.

Apply (upstream-driver §5.2): make ``<plugin dir>/mps/<id>/{pipe,shm,log}``, mount a tmpfs on ``shm``,
set compute mode EXCLUSIVE_PROCESS on the group's full GPUs, create the Deployment
``mps-control-daemon-<id>`` pinned to this node (an existing one is fine: a retried prepare), then wait
with bounded retries until it reports a ready replica. The claim's containers get
``CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps`` and bind mounts of the pipe and shm directories.

Undo: delete the Deployment, unmount and remove the directories, compute mode back to DEFAULT. Every
step tolerates a change that never happened, so a failed or half-done prepare is undone the same way.
"""

from __future__ import annotations

__all__ = [
    "CONTAINER_PIPE_DIR",
    "DAEMON_LABEL",
    "MPS_DIR_MODES",
    "MpsExecutor",
    "MpsPlanner",
    "deployment_name",
    "make_mps_dirs",
    "render_deployment",
]

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from nvdra.cdi import ContainerEdits, Mount
from nvdra.core.config import GpuConfig, MigDeviceConfig, SharingStrategy
from nvdra.core.effects import EffectRecord
from nvdra.core.errors import HostError, KubeConflict, KubeNotFound
from nvdra.core.faults import reach
from nvdra.core.featuregates import FeatureGates
from nvdra.core.quantity import parse_quantity
from nvdra.core.sharing import MpsDevice, MpsPlan, ShareLimits, plan_mps
from nvdra.kubeletplugin.objects import DEPLOYMENTS, ObjectApi
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.effects import Applied, ClaimContext, expect
from nvdra.plugins.gpu.hostcmd import HostCommandRunner, set_compute_mode

CONTAINER_PIPE_DIR = "/tmp/nvidia-mps"
DAEMON_LABEL = "resource.nvidia.com/mps-control-daemon"
# Upstream waits 1, 2, 4, 8 s (15 s in all). A daemon on a node with the image cached is ready in well
# under a second, so nvdra starts polling at 50 ms and doubles, within about the same total bound.
RETRY_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 8.0)
_BIND = ("rw", "nosuid", "nodev", "bind")


def deployment_name(daemon_id: str) -> str:
    """``mps-control-daemon-<id>``."""
    return f"mps-control-daemon-{daemon_id}"


class MpsPlanner:
    """Plans one ``mps`` record per config group whose strategy is MPS.

    ``total_shares``: N of ``--consumable-shares=N`` (a share's thread percentage is its part of N).
    A group whose devices are consumable shares (results with a ``shareID``) gets the GPUs' shared
    daemon and the claim's client-side limits from its ``consumedCapacity`` (see ``plan_mps``).
    """

    def __init__(self, total_shares: int | None = None) -> None:
        self.total_shares = total_shares

    def _shares(self, ctx: ClaimContext, devices: Sequence[Any]) -> dict[str, ShareLimits]:
        by_name = {str(r.get("device")): r for r in ctx.results}
        out: dict[str, ShareLimits] = {}
        for d in devices:
            r = by_name.get(d.name) or {}
            if not r.get("shareID") or d.type == "partition":
                continue
            consumed = r.get("consumedCapacity") or {}
            memory = consumed.get("memory")
            shares = consumed.get("shares")
            out[d.uuid] = ShareLimits(
                memory_bytes=int(parse_quantity(memory)) if memory is not None else None,
                shares=int(parse_quantity(shares)) if shares is not None else None,
                total_shares=self.total_shares,
            )
        return out

    def plan(self, ctx: ClaimContext) -> list[MpsPlan]:
        """Records in group order; limits are validated against each device's memory."""
        records = []
        for n, group in enumerate(ctx.groups):
            config = group.config
            if not isinstance(config, GpuConfig | MigDeviceConfig) or config.sharing is None:
                continue
            if config.sharing.strategy is not SharingStrategy.MPS:
                continue
            devices = [
                MpsDevice(
                    uuid=d.uuid,
                    memory_bytes=d.mig.profile.memory_mb * 1024 * 1024 if d.mig else d.gpu.memory_bytes,
                    full_gpu=d.type == "gpu",
                )
                for d in ctx.group_devices(group)
                if d.type != "partition"
            ]
            # An NVLink partition device shares each of its member GPUs under the one daemon.
            devices += [
                MpsDevice(uuid=g.uuid, memory_bytes=g.memory_bytes, full_gpu=True)
                for d in ctx.group_devices(group)
                if d.type == "partition"
                for g in d.gpus
            ]
            path = f"$.status.allocation.devices.config[{group.index if group.index is not None else n}]"
            shares = self._shares(ctx, ctx.group_devices(group))
            records.append(
                plan_mps(
                    ctx.ref.uid, config.sharing.get_mps_config(), devices, path=path, shares=shares or None
                )
            )
        return records


def render_deployment(
    record: MpsPlan, config: PluginConfig, gates: FeatureGates, root: Path, driver_root: Path | None = None
) -> dict[str, Any]:
    """The control-daemon Deployment of one ``mps`` record (upstream's template, as a dict).

    ``driver_root``: the host path mounted at ``/driver-root`` (default ``--nvidia-driver-root``; a
    simulated node passes its generated root, which carries the fake control program).
    """
    daemon_id = record.id
    labels = {DAEMON_LABEL: daemon_id}
    limits = ",".join(f"{u}={v}" for u, v in record.pinned_memory_limits().items())
    env = [
        {"name": "CUDA_VISIBLE_DEVICES", "value": ",".join(record.uuids)},
        {"name": "FEATURE_GATES", "value": gates.to_spec()},
        {"name": "NVIDIA_DRIVER_ROOT", "value": "/driver-root"},
        {"name": "MPS_PINNED_MEMORY_LIMITS", "value": limits},
    ]
    if record.active_thread_percentage is not None:
        env.append({"name": "MPS_ACTIVE_THREAD_PERCENTAGE", "value": str(record.active_thread_percentage)})
    mounts = [
        ("driver-root", "/driver-root", str(driver_root or config.nvidia_driver_root)),
        ("mps-pipe", "/driver-root/tmp/nvidia-mps", str(root / "pipe")),
        ("mps-log", "/driver-root/var/log/nvidia-mps", str(root / "log")),
        ("mps-shm", "/driver-root/dev/shm", str(root / "shm")),
    ]
    container = {
        "name": "mps-control-daemon",
        "image": config.image_name or "nvdra:latest",
        "command": ["nvdra-mps-daemon"],
        "env": env,
        # Root, not only privileged: chroot needs CAP_SYS_CHROOT and the control daemon writes the
        # root-owned pipe and log directories, and capabilities granted to a non-root user never become
        # effective in Kubernetes (kubernetes/kubernetes#56374); the image's default user is 65532.
        "securityContext": {"privileged": True, "runAsUser": 0, "runAsGroup": 0},
        "startupProbe": {
            "exec": {"command": ["cat", "/driver-root/var/log/nvidia-mps/startup.log"]},
            "periodSeconds": 1,
            "failureThreshold": 60,
        },
        "volumeMounts": [{"name": n, "mountPath": p} for n, p, _ in mounts],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(daemon_id), "namespace": config.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeName": config.node_name,
                    "hostPID": True,
                    "containers": [container],
                    "volumes": [
                        {"name": n, "hostPath": {"path": h, "type": "Directory"}} for n, _, h in mounts
                    ],
                },
            },
        },
    }


MPS_DIR_MODES: tuple[tuple[str, int], ...] = (("", 0o755), ("pipe", 0o755), ("log", 0o755), ("shm", 0o1777))
"""Each MPS directory (relative to ``mps/<id>``) and its mode; all owned by root.

The control daemon (root in its pod) creates its socket in ``pipe`` and ``control.log`` in ``log``; the
servers it forks run as each client's user and must reach ``pipe`` (so every level is traversable,
0755), and the clients' ``/dev/shm`` is world-writable and sticky like the host's (the tmpfs mounted
on ``shm`` gets the same mode).
"""


def make_mps_dirs(root: Path) -> None:
    """Create ``root`` and its ``pipe``, ``log`` and ``shm`` with :data:`MPS_DIR_MODES`, owned by root.

    Modes are set explicitly (``mkdir``'s mode is cut by the umask, and a directory left by an earlier
    try keeps whatever it had); ownership is set when this process may (the plugin runs as root).

    Raises:
        HostError: a directory cannot be created or given its mode or owner.
    """
    for sub, mode in MPS_DIR_MODES:
        path = root / sub if sub else root
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, 0, 0)
            path.chmod(mode)
        except OSError as exc:
            raise HostError(f"cannot prepare MPS directory {path} (mode {mode:o}): {exc.strerror}") from exc


def _shm_size() -> str:
    """Half of MemTotal, as upstream sizes the shared tmpfs (65536k if /proc/meminfo cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) // 2}k"
    except (OSError, ValueError, IndexError):
        pass
    return "65536k"


def _delays(delays: Sequence[float]) -> tuple[float, ...]:
    return tuple(delays)


@attrs.define(kw_only=True, eq=False)
class MpsExecutor:
    """Starts and stops MPS control daemons."""

    records: ClassVar[tuple[type[EffectRecord], ...]] = (MpsPlan,)
    api: ObjectApi
    runner: HostCommandRunner
    config: PluginConfig
    gates: FeatureGates
    retry_delays: tuple[float, ...] = attrs.field(default=RETRY_DELAYS, converter=_delays)
    sleep: Callable[[float], None] = time.sleep
    driver_root: Path | None = None

    def root(self, daemon_id: str) -> Path:
        """``<plugin dir>/mps/<id>``."""
        return self.config.plugin_dir / "mps" / daemon_id

    def apply(self, record: EffectRecord) -> Applied:
        """Directories, tmpfs, compute mode, Deployment, readiness; then the claim's CDI edits."""
        plan = expect(record, MpsPlan)
        root = self.root(plan.id)
        make_mps_dirs(root)
        shm = str(root / "shm")
        if not self._mounted(shm):
            opts = f"rw,nosuid,nodev,noexec,relatime,mode=1777,size={_shm_size()}"
            self.runner.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", shm])
        for uuid in plan.compute_mode_gpus:
            set_compute_mode(self.runner, uuid, "EXCLUSIVE_PROCESS")
        with contextlib.suppress(KubeConflict):  # a retried prepare: the daemon is already there
            self.api.create_object(
                DEPLOYMENTS, render_deployment(plan, self.config, self.gates, root, self.driver_root)
            )
        reach("after-mps-started")
        self._wait_ready(deployment_name(plan.id))
        return Applied(
            claim_edits=ContainerEdits(
                env=(f"CUDA_MPS_PIPE_DIRECTORY={CONTAINER_PIPE_DIR}", *plan.client_env()),
                mounts=(
                    Mount(host_path=shm, container_path="/dev/shm", options=_BIND),
                    Mount(host_path=str(root / "pipe"), container_path=CONTAINER_PIPE_DIR, options=_BIND),
                ),
            )
        )

    def _wait_ready(self, name: str) -> None:
        for delay in (*self.retry_delays, None):
            try:
                deployment = self.api.get_object(DEPLOYMENTS, name, self.config.namespace)
            except KubeNotFound:
                deployment = {}
            if int((deployment.get("status") or {}).get("readyReplicas") or 0) >= 1:
                return
            if delay is None:
                break
            self.sleep(delay)
        raise HostError(
            f"MPS control daemon Deployment {self.config.namespace}/{name} is not ready after "
            f"{len(self.retry_delays) + 1} checks"
        )

    def _mounted(self, path: str) -> bool:
        try:
            return any(
                line.split()[1] == path for line in Path("/proc/mounts").read_text().splitlines() if line
            )
        except (OSError, IndexError):
            return False

    def undo(self, record: EffectRecord) -> None:
        """Delete the Deployment, unmount and remove the directories, compute mode DEFAULT."""
        plan = expect(record, MpsPlan)
        root = self.root(plan.id)
        self.api.delete_object(DEPLOYMENTS, deployment_name(plan.id), self.config.namespace)
        if root.exists():
            shm = str(root / "shm")
            if self._mounted(shm):
                self.runner.run(["umount", shm])
            shutil.rmtree(root)
        for uuid in plan.compute_mode_gpus:
            set_compute_mode(self.runner, uuid, "DEFAULT")
