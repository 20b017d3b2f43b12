"""One conformance suite for both Fabric Manager backends: the simulated FM, and the real ctypes backend
(``LibnvfmFabricManager``, loaded unchanged) over a fake libnvfm at the SDK's C ABI.

The fake (``data/fake_libnvfm.c``) is compiled by a fixture with the system C compiler into a temporary
directory and fed the simulated FM's state: the dgx-h100 board's partition listing and the FABRIC_MODE.
Every check runs against both; a difference between them fails here.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from nvdra.core.config import VirtualizationModel
from nvdra.fabric import (
    FabricManager,
    FabricMode,
    FmBadParam,
    FmInUse,
    FmNotConfigured,
    FmNotSupported,
    FmPartitionInfo,
    FmPciDevice,
    FmUninitialized,
    LibnvfmFabricManager,
    SimulatedFabricManager,
)
from nvdra.fabric import libnvfm as sdk
from nvdra.fabric.manager import FmConnectionNotValid
from nvdra.fabric.simulated import board_partitions
from tests.fabric.conftest import profile_inventory, profile_topology

FAKE_SOURCE = Path(__file__).parent / "data" / "fake_libnvfm.c"
BACKENDS = ("simulated", "libnvfm")
REQUIRE_ENV = "NVDRA_REQUIRE_FAKE_LIBNVFM"
"""Set by .ci/run: CI must run the libnvfm backend, so a missing compiler fails instead of skipping."""


@attrs.frozen
class Backend:
    """A connected client, and how to restart its daemon (resiliently or not)."""

    fm: FabricManager
    restart: Callable[[bool], None]


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake libnvfm compiled from C (skipped where no C compiler exists)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(
                f"{REQUIRE_ENV} is set but no C compiler (cc, gcc) is on PATH to build the fake libnvfm"
            )
        pytest.skip("no C compiler to build the fake libnvfm")
    out = tmp_path_factory.mktemp("nvfm") / "libnvfm.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(out), str(FAKE_SOURCE)], check=True)
    return out


def write_state(path: Path, partitions: tuple[FmPartitionInfo, ...], mode: FabricMode) -> None:
    """The fake's state file, from the simulated FM's partition records."""
    lines = [f"mode {int(mode)}"]
    for p in partitions:
        gpus = " ".join(
            f"{g.physical_id}:{g.num_nvlinks_available}:{g.max_num_nvlinks}:{g.nvlink_line_rate_mbps}"
            for g in p.gpus
        )
        lines.append(f"partition {p.partition_id} {int(p.is_active)} {gpus}")
    path.write_text("\n".join(lines) + "\n")


def libnvfm_backend(
    fake_lib: Path, tmp_path: Path, mode: FabricMode, env_patch: pytest.MonkeyPatch
) -> Backend:
    """The ctypes backend over a fresh copy of the fake (its own dlopen instance), state from the board."""
    lib_path = tmp_path / "lib" / "libnvfm.so.1"
    lib_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(fake_lib, lib_path)
    state = tmp_path / "fm-state"
    write_state(state, board_partitions(profile_topology("dgx-h100")), mode)
    root = tmp_path / "driver-root"
    cfg = root / sdk.CONFIG_PATH
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"LOG_LEVEL=4\nFABRIC_MODE={int(mode)}\n")
    env = {sdk.LIBRARY_ENV: str(lib_path), sdk.ADDRESS_ENV: "127.0.0.1"}
    env_patch.setenv("FAKE_NVFM_STATE", str(state))  # read by the fake at fmConnect
    fm = LibnvfmFabricManager.connect(driver_root=root, env=env)
    lib = ctypes.CDLL(str(lib_path))
    return Backend(fm=fm, restart=lambda resilient: lib.fakeRestart(int(resilient)))


def simulated_backend(mode: FabricMode) -> Backend:
    """The simulated FM on the dgx-h100 board."""
    fm = SimulatedFabricManager.for_topology(profile_topology("dgx-h100"), mode=mode)
    return Backend(fm=fm, restart=lambda resilient: fm.restart(resilient=resilient))


@pytest.fixture(params=BACKENDS)
def make(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[FabricMode], Backend]]:
    """A factory of connected backends of one kind, in a given FABRIC_MODE."""
    made: list[Backend] = []
    monkeypatch.setenv("FAKE_NVFM_STATE", "")

    def factory(mode: FabricMode) -> Backend:
        if request.param == "simulated":
            backend = simulated_backend(mode)
        else:
            lib = request.getfixturevalue("fake_lib")
            backend = libnvfm_backend(lib, tmp_path / str(len(made)), mode, monkeypatch)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.fm.close()


def active(fm: FabricManager) -> set[int]:
    """The partition ids FM lists active."""
    return {p.partition_id for p in fm.partitions() if p.is_active}


def test_lists_the_board_table_with_link_facts(make: Callable[[FabricMode], Backend]) -> None:
    """Partitions 0-14 of the HGX H100 table, physical ids = module ids, 18 links at 26,562 MB/s."""
    fm = make(FabricMode.SHARED_NVSWITCH).fm
    assert fm.mode() is FabricMode.SHARED_NVSWITCH
    listed = fm.partitions()
    assert [p.partition_id for p in listed] == list(range(15))
    assert listed[1].physical_ids == (1, 2, 3, 4) and listed[1].nvlinks_per_gpu == 18
    assert listed[7].physical_ids == (1,) and listed[7].nvlinks_per_gpu == 0
    assert {g.nvlink_line_rate_mbps for p in listed for g in p.gpus} == {26_562}
    assert not any(p.is_active for p in listed)


def test_overlapping_activation_is_in_use(make: Callable[[FabricMode], Backend]) -> None:
    """A partition sharing a GPU with an active one, or itself active, answers IN_USE."""
    fm = make(FabricMode.SHARED_NVSWITCH).fm
    fm.activate(1)
    for overlapping in (1, 0, 3, 7):
        with pytest.raises(FmInUse, match="FM_ST_IN_USE"):
            fm.activate(overlapping)
    fm.activate(2)
    assert active(fm) == {1, 2}


def test_unknown_ids_and_inactive_deactivation(make: Callable[[FabricMode], Backend]) -> None:
    """An unknown id is BADPARAM; deactivating an inactive partition answers UNINITIALIZED (SDK quirk)."""
    fm = make(FabricMode.SHARED_NVSWITCH).fm
    with pytest.raises(FmBadParam):
        fm.activate(99)
    with pytest.raises(FmUninitialized):
        fm.deactivate(1)
    fm.activate(1)
    fm.deactivate(1)
    assert active(fm) == set()


def test_bare_metal_mode_refuses_partition_calls(make: Callable[[FabricMode], Backend]) -> None:
    """In FABRIC_MODE=0 every partition call answers NOT_SUPPORTED."""
    fm = make(FabricMode.BARE_METAL).fm
    assert fm.mode() is FabricMode.BARE_METAL
    for call in (
        fm.partitions,
        lambda: fm.activate(1),
        lambda: fm.deactivate(1),
        lambda: fm.set_activated([]),
    ):
        with pytest.raises(FmNotSupported):
            call()


def test_vgpu_mode_needs_one_vf_per_gpu(make: Callable[[FabricMode], Backend]) -> None:
    """vGPU mode activates only with VFs, one per GPU of the partition."""
    fm = make(FabricMode.VGPU).fm
    with pytest.raises(FmNotSupported):
        fm.activate(3)
    with pytest.raises(FmBadParam):
        fm.activate_with_vfs(3, [FmPciDevice(domain=0, bus=0x1B, device=0, function=1)])
    fm.activate_with_vfs(3, [FmPciDevice(domain=0, bus=b, device=0, function=1) for b in (0x1B, 0x52)])
    assert active(fm) == {3}


def test_resilient_restart_waits_for_the_activated_list(make: Callable[[FabricMode], Backend]) -> None:
    """After a --restart, partition calls answer NOT_CONFIGURED until the live list is set."""
    backend = make(FabricMode.SHARED_NVSWITCH)
    fm = backend.fm
    fm.activate(1)
    backend.restart(True)
    with pytest.raises(FmNotConfigured, match="FM_ST_NOT_CONFIGURED"):
        fm.partitions()
    with pytest.raises(FmNotConfigured):
        fm.activate(2)
    with pytest.raises(FmBadParam):
        fm.set_activated([1, 1])
    fm.set_activated([1])
    assert active(fm) == {1}
    backend.restart(False)
    assert active(fm) == set()


def test_the_driver_activates_through_either_backend(make: Callable[[FabricMode], Backend]) -> None:
    """The fabric executor's activation, retry and deactivation run the same over both backends."""
    from nvdra.plugins.gpu.fabric import FabricExecutor, FabricPartition, NodeFabric

    fm = make(FabricMode.SHARED_NVSWITCH).fm
    node = NodeFabric.build(profile_inventory("dgx-h100"), fm)
    assert node.catalog.source == "fabric-manager" and len(node.catalog.partitions) == 15
    executor = FabricExecutor(fm, sleep=lambda _: None)
    record = FabricPartition(
        claim="uid-1",
        partition_id=1,
        size=4,
        module_ids=(),
        devices=(),
        model=str(VirtualizationModel.SHARED_NVSWITCH),
        activate=True,
        bandwidth_gbps=900,
    )
    executor.apply(record)
    assert active(fm) == {1}
    executor.undo(record)
    assert active(fm) == set()


def test_ctypes_backend_passes_the_address_and_reports_an_unreachable_fm(
    fake_lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connect parameters reach the library; a connect FM refuses raises CONNECTION_NOT_VALID."""
    backend = libnvfm_backend(fake_lib, tmp_path / "a", FabricMode.SHARED_NVSWITCH, monkeypatch)
    lib = ctypes.CDLL(str(tmp_path / "a" / "lib" / "libnvfm.so.1"))
    lib.fakeLastAddress.restype = ctypes.c_char_p
    assert (lib.fakeLastAddress(), lib.fakeLastAddressType()) == (b"127.0.0.1", sdk.ADDRESS_TYPE_INET)
    backend.fm.close()
    env = {sdk.LIBRARY_ENV: str(tmp_path / "a" / "lib" / "libnvfm.so.1"), sdk.UNIX_SOCKET_ENV: "/nonexistent"}
    with pytest.raises(FmConnectionNotValid, match="/nonexistent"):
        LibnvfmFabricManager.connect(driver_root=tmp_path, env=env)
    monkeypatch.setenv("FAKE_NVFM_STATE", str(tmp_path / "missing"))
    copy = tmp_path / "b" / "libnvfm.so.1"
    copy.parent.mkdir()
    shutil.copy(fake_lib, copy)
    with pytest.raises(FmConnectionNotValid):
        LibnvfmFabricManager.connect(driver_root=tmp_path, env={sdk.LIBRARY_ENV: str(copy)})
