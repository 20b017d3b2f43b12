"""Property test: random prepare/unprepare/restart sequences keep GpuDriver in step with a small model.

The model is the contract in a few lines: a claim is prepared unless one of its devices is held by
another prepared claim (or by a claim planned earlier in the same call); a prepared claim answers the
same every time; unprepare always succeeds and frees the devices. After every step the files must
agree with the model: one spec per prepared claim and one ``PrepareCompleted`` entry per prepared claim.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from nvdra.core.devices import Inventory
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.gpu.driver import GpuDriver
from tests.plugins.conftest import DriverNode, allocated_claim, result, spec_files

# Overlapping allocations: claims 0/1 share gpu-0, 1/3 share gpu-1, 2/3 share gpu-2; claim 4 uses a
# subrequest. UIDs are fixed so a claim can be prepared again after an unprepare, as kubelet retries do.
ALLOCATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("gpu", "gpu-0"),),
    (("gpu", "gpu-0"), ("gpu", "gpu-1")),
    (("gpu", "gpu-2"),),
    (("a", "gpu-1"), ("b", "gpu-2")),
    (("x/sub", "gpu-3"),),
)
UIDS = tuple(f"0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in range(len(ALLOCATIONS)))
CLAIMS = tuple(
    allocated_claim([result(dev, request=req) for req, dev in alloc], uid=uid, name=f"c{i}")
    for i, (uid, alloc) in enumerate(zip(UIDS, ALLOCATIONS, strict=True))
)
batches = st.lists(st.integers(0, len(CLAIMS) - 1), min_size=1, max_size=3, unique=True)


def devices_of(index: int) -> frozenset[str]:
    """The device names allocated to claim ``index``."""
    return frozenset(dev for _, dev in ALLOCATIONS[index])


class DriverMachine(RuleBasedStateMachine):
    """Drives one node's GpuDriver (restarts included) and checks it against the model."""

    inventory: Inventory
    driver_root: Path

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="nvdra-model-"))
        self.node = DriverNode(self.tmp, self.inventory, self.driver_root)
        self.driver: GpuDriver = self.node.driver()
        self.prepared: set[int] = set()

    @rule(batch=batches)
    def prepare(self, batch: list[int]) -> None:
        """NodePrepareResources for the claims in ``batch``, in that order."""
        answers = self.driver.prepare_resource_claims([CLAIMS[i] for i in batch])
        assert set(answers) == {UIDS[i] for i in batch}
        taken = {dev for i in self.prepared for dev in devices_of(i)}
        for i in batch:
            answer = answers[UIDS[i]]
            if i in self.prepared:
                assert answer.error == ""
            elif devices_of(i) & taken:
                assert "already prepared" in answer.error or "same request" in answer.error, answer.error
                continue
            else:
                assert answer.error == "", answer.error
                taken |= devices_of(i)
                self.prepared.add(i)
            expected = [(req.split("/")[0], dev) for req, dev in ALLOCATIONS[i]]
            assert [(d.requests[0], d.device_name) for d in answer.devices] == expected

    @rule(batch=batches)
    def unprepare(self, batch: list[int]) -> None:
        """NodeUnprepareResources: always succeeds, prepared or not."""
        refs = [ClaimRef(namespace="default", name=f"c{i}", uid=UIDS[i]) for i in batch]
        assert self.driver.unprepare_resource_claims(refs) == {UIDS[i]: "" for i in batch}
        self.prepared -= set(batch)

    @rule()
    def restart(self) -> None:
        """The plugin process restarts: a new driver object over the same directories."""
        self.driver = self.node.driver()

    @invariant()
    def files_match_the_model(self) -> None:
        """One spec and one completed checkpoint entry per prepared claim, nothing else."""
        assert spec_files(self.node.cdi_root) == sorted(self.node.spec_path(UIDS[i]) for i in self.prepared)
        checkpoint, _ = self.node.store().load()
        assert {u: c.state for u, c in checkpoint.claims.items()} == {
            UIDS[i]: "PrepareCompleted" for i in self.prepared
        }

    def teardown(self) -> None:
        self.node.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def test_driver_agrees_with_the_model(inventory: Inventory, driver_root: Path) -> None:
    """Any sequence of prepares, unprepares and restarts leaves driver and files as the model says."""
    machine = type(
        "BoundDriverMachine", (DriverMachine,), {"inventory": inventory, "driver_root": driver_root}
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
