"""The fault matrix's scenarios (one claim kind on one simulated node each) and fresh nodes for them."""

from __future__ import annotations

__all__ = ["SCENARIOS", "node_for"]

import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from nvdra.cdi import on_memory_filesystem
from nvdra.kubeletplugin import ApiServer, FakeKube
from tests.plugins.conftest import allocated_claim, gpu_config, opaque, result
from tests.reliability.faultnode import NODE, FaultNode, JsonObject, Scenario, deployment_controller


def _claim(uid: str, devices: list[str], request: str, config: JsonObject | None = None) -> JsonObject:
    return allocated_claim(
        [result(d, request=request, pool=NODE) for d in devices],
        uid=uid,
        name=f"claim-{uid[:4]}",
        config=[opaque(config, requests=[request])] if config else [],
    )


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            name="gpu",
            profile="dgx-h100",
            gates="",
            claims=(_claim("00000000-0000-4000-8000-000000000001", ["gpu-1"], "gpu"),),
        ),
        Scenario(  # one call with six full-GPU claims: their specs are written and removed as one batch
            name="gpu-batch",
            profile="dgx-h100",
            gates="",
            claims=tuple(
                _claim(f"b{g}000000-0000-4000-8000-000000000100", [f"gpu-{g}"], "gpu") for g in range(6)
            ),
        ),
        # The same two on a CDI root in memory: the driver writes and removes those specs on the calling
        # thread, before the checkpoint write (spec first, then entry) rather than beside it.
        Scenario(
            name="gpu-tmpfs",
            profile="dgx-h100",
            gates="",
            claims=(_claim("00000000-0000-4000-8000-000000000007", ["gpu-1"], "gpu"),),
            cdi_in_memory=True,
        ),
        Scenario(
            name="gpu-batch-tmpfs",
            profile="dgx-h100",
            gates="",
            claims=tuple(
                _claim(f"c{g}000000-0000-4000-8000-000000000100", [f"gpu-{g}"], "gpu") for g in range(6)
            ),
            cdi_in_memory=True,
        ),
        Scenario(
            name="timeslicing",
            profile="dgx-h100",
            gates="TimeSlicingSettings=true",
            claims=(
                _claim(
                    "00000000-0000-4000-8000-000000000002",
                    ["gpu-0", "gpu-1"],
                    "gpus",
                    gpu_config(
                        sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}
                    ),
                ),
            ),
        ),
        Scenario(
            name="mps",
            profile="dgx-h100",
            gates="MPSSupport=true",
            claims=(
                _claim(
                    "00000000-0000-4000-8000-000000000003",
                    ["gpu-2"],
                    "gpus",
                    gpu_config(
                        sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 50}}
                    ),
                ),
            ),
        ),
        Scenario(
            name="dynamic-mig",
            profile="dgx-h100",
            gates="DynamicMIG=true",
            claims=(
                _claim(
                    "00000000-0000-4000-8000-000000000004",
                    ["gpu-3-mig-1g10gb-19-0", "gpu-3-mig-2g20gb-14-2"],
                    "mig",
                ),
            ),
        ),
        Scenario(
            name="fabric",
            profile="hgx-h200",
            gates="FabricTopologySupport=true",
            claims=(
                _claim(
                    "00000000-0000-4000-8000-000000000005",
                    ["gpu-0", "gpu-1", "gpu-2", "gpu-3"],
                    "gpus",
                    gpu_config(
                        fabricTopologyConfig={
                            "strategy": "Auto",
                            "partitionSize": 4,
                            "virtualizationModel": "SharedNVSwitch",
                        }
                    ),
                ),
            ),
        ),
        Scenario(
            name="vfio",
            profile="dgx-h100",
            gates="PassthroughSupport=true",
            claims=(
                _claim(
                    "00000000-0000-4000-8000-000000000006",
                    ["gpu-vfio-2"],
                    "vm",
                    {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "VfioDeviceConfig"},
                ),
            ),
            hidden=frozenset({"gpu-2"}),
        ),
    )
}


@contextmanager
def node_for(scenario: Scenario) -> Iterator[FaultNode]:
    """A fresh node (short temp dir for the sockets) with its API server and Deployment controller."""
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="nvf-"))
        if scenario.cdi_in_memory:  # base/cdi leads there, so every path under the base reads the same
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            memory = stack.enter_context(tempfile.TemporaryDirectory(prefix="nvf-cdi-", dir=shm))
            (Path(tmp) / "cdi").symlink_to(memory)
            assert shm is None or on_memory_filesystem(Path(tmp) / "cdi"), f"{shm} is not tmpfs here"
        store = FakeKube()
        store.add_node(NODE)
        with ApiServer(store) as server, deployment_controller(store):
            node = FaultNode(Path(tmp), scenario, server)
            try:
                yield node
            finally:
                for process in node.processes:
                    process.ensure_dead()
