"""A simulated node wired with the sharing and MIG effects: backend, driver root, fake API, driver factory.

Everything is real: ``SimulatedNvml`` (its MIG placement rules and compute modes), the generated driver
root with its capability files, ``FakeKube`` for the MPS Deployments, the simulated nvidia-smi runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.objects import DEPLOYMENTS
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.cdi import GpuClaimSpecs
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.effects import Effects
from nvdra.plugins.gpu.hostcmd import SimulatedHostCommands
from nvdra.plugins.gpu.mps import MpsExecutor
from nvdra.plugins.gpu.sharing import sharing_effects
from nvdra.plugins.state import CheckpointStore

NODE = "n1"


class SimNode:
    """One simulated node; ``driver()`` makes a new GpuDriver over the same state (a process restart)."""

    def __init__(self, base: Path, profile: str = "dgx-h100") -> None:
        self.base = base
        self.backend = SimulatedNvml(load_profile(profile))
        self.backend.init()
        self.config = PluginConfig(
            node_name=NODE,
            namespace="nvdra",
            cdi_root=base / "cdi",
            kubelet_plugins_directory_path=base / "plugins",
            simulate=profile,
        )
        self.root = make_simulated_driver_root(self.backend, self.config.simulated_tree("driver-root"))
        self.kube = FakeKube()
        self.runner = SimulatedHostCommands(self.backend)
        self.ready_after_checks = 1  # the fake controller marks Deployments ready before the Nth check
        self._checks = 0
        self._drivers: list[GpuDriver] = []

    def mark_deployments_ready(self) -> None:
        """What the kube controller does once the daemon pod runs: status.readyReplicas = 1."""
        for dep in self.kube.list_objects(DEPLOYMENTS, "nvdra"):
            dep["status"] = {"readyReplicas": 1, "replicas": 1}
            self.kube.update_object(DEPLOYMENTS, dep, status=True)

    def _sleep(self, _delay: float) -> None:
        self._checks += 1
        if self._checks >= self.ready_after_checks:
            self.mark_deployments_ready()

    def effects(self, gates: str) -> Effects:
        """The effects serve() would build, with MPS readiness driven by the fake controller."""
        planners, executors = sharing_effects(
            self.config, parse_feature_gates(gates), self.backend, self.kube, runner=self.runner
        )
        executors = [
            MpsExecutor(
                api=self.kube,
                runner=self.runner,
                config=self.config,
                gates=parse_feature_gates(gates),
                retry_delays=(0.0,) * 4,
                sleep=self._sleep,
            )
            if isinstance(e, MpsExecutor)
            else e
            for e in executors
        ]
        return Effects(planners, executors)

    def driver(
        self, gates: str = "", *, start: bool = True, store: CheckpointStore | None = None
    ) -> GpuDriver:
        """A fresh driver (rediscovering the inventory) over this node's checkpoint and CDI root."""
        inventory = discover_inventory(self.backend)
        driver = GpuDriver(
            node_name=NODE,
            inventory=inventory,
            gates=parse_feature_gates(gates),
            store=store or CheckpointStore(self.config.plugin_dir / "checkpoint.json", boot_id="b1"),
            specs=GpuClaimSpecs(
                cdi_root=self.config.cdi_root,
                host_driver_root=self.root,
                container_driver_root=self.root,
                driver_version=inventory.driver_version,
            ),
            effects=self.effects(gates),
        )
        self._drivers.append(driver)
        if start:
            driver.start()
        return driver

    def close(self) -> None:
        """Release the drivers' threads."""
        for d in self._drivers:
            d.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimNode]:
    """A fresh simulated dgx-h100 node."""
    node = SimNode(tmp_path)
    yield node
    node.close()


def mig_config(**fields: Any) -> dict[str, Any]:
    """A ``MigDeviceConfig`` parameters object."""
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "MigDeviceConfig", **fields}
