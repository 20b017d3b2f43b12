"""Fabric Manager: SDK struct layouts and version words, return codes, the simulated FM's rules, libnvfm."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from nvdra.fabric import (
    FABRIC_MODE_ENV,
    FM_RETURN_NAMES,
    FabricManagerError,
    FabricMode,
    FmInUse,
    FmLibraryNotFound,
    FmNotConfigured,
    FmNotSupported,
    FmPciDevice,
    FmUninitialized,
    LibnvfmFabricManager,
    SimulatedFabricManager,
    fm_address,
    fm_error_for_code,
    simulated_fabric_mode,
)
from nvdra.fabric import libnvfm as sdk
from nvdra.fabric.manager import FmBadParam, FmConnectionNotValid, FmVersionMismatch
from tests.fabric.conftest import profile_topology

FAKE_SOURCE = Path(__file__).parent / "data" / "fake_libnvfm.c"


@pytest.mark.parametrize(
    ("struct", "size", "version", "word"),
    [
        (sdk.FmConnectParams, 272, 2, 0x02000110),
        (sdk.FmPciDeviceStruct, 16, None, None),
        (sdk.FmFabricPartitionGpuInfo, 128, None, None),
        (sdk.FmFabricPartitionInfo, 2060, None, None),
        (sdk.FmFabricPartitionList, 131852, 1, 0x0102030C),
        (sdk.FmActivatedFabricPartitionList, 264, 1, 0x01000108),
        (sdk.FmNvlinkFailedDeviceInfo, 372, None, None),
        (sdk.FmNvlinkFailedDevices, 10428, 1, 0x010028BC),
        (sdk.FmUnsupportedFabricPartitionInfo, 72, None, None),
        (sdk.FmUnsupportedFabricPartitionList, 4616, 1, 0x01001208),
    ],
)
def test_sdk_struct_layouts_match_the_headers(
    struct: type[ctypes.Structure], size: int, version: int | None, word: int | None
) -> None:
    """Every SDK struct has the header's size, and versioned ones the header's version word."""
    assert ctypes.sizeof(struct) == size
    if version is not None:
        assert sdk.struct_version(struct, version) == word


def test_module_version_constants_are_the_headers() -> None:
    """The version words the backend sends are the documented ones."""
    assert sdk.CONNECT_PARAMS_VERSION == 0x02000110
    assert sdk.PARTITION_LIST_VERSION == 0x0102030C
    assert sdk.ACTIVATED_LIST_VERSION == 0x01000108


def test_every_return_code_maps_to_a_named_error() -> None:
    """fmReturn_t 0..-29 all have names; errors carry the code, the call and the meaning."""
    assert sorted(FM_RETURN_NAMES) == list(range(-29, 1))
    for code in range(-29, 0):
        error = fm_error_for_code(code, "activating partition 3")
        assert isinstance(error, FabricManagerError) and error.code == code
        assert FM_RETURN_NAMES[code][0] in str(error) and "activating partition 3" in str(error)
    assert isinstance(fm_error_for_code(-7, "x"), FmInUse)
    assert isinstance(fm_error_for_code(-8, "x"), FmNotConfigured)
    assert "unknown" in str(fm_error_for_code(-99, "x"))


@pytest.fixture
def fm() -> SimulatedFabricManager:
    """A simulated FM in Shared NVSwitch mode on the dgx-h100 board."""
    return SimulatedFabricManager.for_topology(profile_topology("dgx-h100"), mode=FabricMode.SHARED_NVSWITCH)


def test_simulated_fm_lists_the_board_table(fm: SimulatedFabricManager) -> None:
    """The simulated FM lists partitions 0-14 with module ids as physical ids, none active."""
    listed = fm.partitions()
    assert [p.partition_id for p in listed] == list(range(15))
    assert listed[1].physical_ids == (1, 2, 3, 4) and not any(p.is_active for p in listed)
    assert listed[1].gpus[0].nvlink_line_rate_mbps == 26_562


def test_overlapping_activation_is_in_use(fm: SimulatedFabricManager) -> None:
    """A partition sharing a GPU with an active one, or itself active, answers IN_USE."""
    fm.activate(1)
    for overlapping in (1, 0, 3, 7):
        with pytest.raises(FmInUse):
            fm.activate(overlapping)
    fm.activate(2)
    assert fm.active_ids() == {1, 2}


def test_unknown_ids_and_inactive_deactivation(fm: SimulatedFabricManager) -> None:
    """An unknown id is BADPARAM; deactivating an inactive partition answers UNINITIALIZED (the SDK quirk)."""
    with pytest.raises(FmBadParam):
        fm.activate(99)
    with pytest.raises(FmUninitialized):
        fm.deactivate(1)


def test_bare_metal_mode_refuses_partition_calls() -> None:
    """In FABRIC_MODE=0 every partition call answers NOT_SUPPORTED."""
    fm = SimulatedFabricManager.for_topology(profile_topology("dgx-h100"), mode=FabricMode.BARE_METAL)
    for call in (fm.partitions, lambda: fm.activate(1), lambda: fm.deactivate(1)):
        with pytest.raises(FmNotSupported):
            call()


def test_vgpu_mode_needs_one_vf_per_gpu() -> None:
    """vGPU mode activates only with VFs, one per GPU of the partition."""
    fm = SimulatedFabricManager.for_topology(profile_topology("dgx-h100"), mode=FabricMode.VGPU)
    with pytest.raises(FmNotSupported):
        fm.activate(3)
    with pytest.raises(FmBadParam):
        fm.activate_with_vfs(3, [FmPciDevice(domain=0, bus=0x1B, device=0, function=1)])
    fm.activate_with_vfs(3, [FmPciDevice(domain=0, bus=b, device=0, function=1) for b in (0x1B, 0x52)])
    assert fm.active_ids() == {3}


def test_resilient_restart_waits_for_the_activated_list(fm: SimulatedFabricManager) -> None:
    """After a --restart, partition calls answer NOT_CONFIGURED until the live list is set."""
    fm.activate(1)
    fm.restart(resilient=True)
    with pytest.raises(FmNotConfigured):
        fm.partitions()
    fm.set_activated([1])
    assert fm.active_ids() == {1}
    fm.restart(resilient=False)
    assert fm.active_ids() == frozenset()


def test_simulated_mode_comes_from_the_profile_and_the_env_overrides_it() -> None:
    """The profile's declared mode is used; NVDRA_SIMULATE_FABRIC_MODE overrides it (``none``: no FM)."""
    assert simulated_fabric_mode(0, {}) is FabricMode.BARE_METAL
    assert simulated_fabric_mode(None, {}) is None
    assert simulated_fabric_mode(0, {FABRIC_MODE_ENV: "1"}) is FabricMode.SHARED_NVSWITCH
    assert simulated_fabric_mode(None, {FABRIC_MODE_ENV: "2"}) is FabricMode.VGPU
    assert simulated_fabric_mode(1, {FABRIC_MODE_ENV: "None"}) is None
    with pytest.raises(ValueError, match="allowed 0, 1, 2 or none"):
        simulated_fabric_mode(0, {FABRIC_MODE_ENV: "3"})


def test_address_follows_upstreams_env_vars() -> None:
    """NVIDIA_FABRICMANAGER_ADDRESS selects TCP; otherwise the (default) Unix socket."""
    assert fm_address({}).address == "/run/nvidia-fabricmanager/socket" and fm_address({}).unix
    assert fm_address({sdk.UNIX_SOCKET_ENV: "/x/sock"}).address == "/x/sock"
    tcp = fm_address({sdk.ADDRESS_ENV: "10.0.0.1:6667", sdk.UNIX_SOCKET_ENV: "/x/sock"})
    assert (tcp.address, tcp.unix) == ("10.0.0.1:6667", False)


def test_missing_library_names_the_paths_searched(tmp_path: Path) -> None:
    """Without libnvfm the error says what to install and lists where it looked."""
    with pytest.raises(FmLibraryNotFound, match=r"searched: .*libnvfm\.so\.1"):
        LibnvfmFabricManager.connect(driver_root=tmp_path, env={})


def test_fabric_mode_is_read_from_the_fm_config(tmp_path: Path) -> None:
    """FABRIC_MODE comes from fabricmanager.cfg under the driver root."""
    cfg = tmp_path / sdk.CONFIG_PATH
    cfg.parent.mkdir(parents=True)
    cfg.write_text("LOG_LEVEL=4\nFABRIC_MODE=1\n")
    assert sdk.read_fabric_mode(tmp_path) is FabricMode.SHARED_NVSWITCH
    assert sdk.read_fabric_mode(tmp_path / "none") is None


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake libnvfm compiled from C (skipped where no C compiler exists)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake libnvfm")
    out = tmp_path_factory.mktemp("nvfm") / "libnvfm.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(FAKE_SOURCE)], check=True)
    return out


def test_ctypes_backend_speaks_the_sdk_abi(fake_lib: Path, tmp_path: Path) -> None:
    """Through a C library with the SDK's ABI: connect, list, activate, IN_USE, deactivate quirk, set list."""
    env = {sdk.LIBRARY_ENV: str(fake_lib), sdk.ADDRESS_ENV: "127.0.0.1"}
    fm = LibnvfmFabricManager.connect(driver_root=tmp_path, env=env)
    lib = ctypes.CDLL(str(fake_lib))
    lib.fakeLastAddress.restype = ctypes.c_char_p
    try:
        assert (lib.fakeLastAddress(), lib.fakeLastAddressType()) == (b"127.0.0.1", sdk.ADDRESS_TYPE_INET)
        listed = fm.partitions()
        assert [(p.partition_id, p.physical_ids, p.nvlinks_per_gpu) for p in listed] == [
            (0, (1, 2), 18),
            (1, (1,), 0),
        ]
        assert listed[0].gpus[0].pci_bus_id == "00000000:1B:00.0"
        assert fm.mode() is FabricMode.SHARED_NVSWITCH  # no cfg: a listing that works means multitenancy
        fm.activate(0)
        with pytest.raises(FmInUse, match="FM_ST_IN_USE"):
            fm.activate(1)
        fm.deactivate(0)
        with pytest.raises(FmUninitialized):
            fm.deactivate(0)
        fm.set_activated([1])
        assert [p.is_active for p in fm.partitions()] == [False, True]
        with pytest.raises(FmNotSupported):
            fm.activate_with_vfs(0, [FmPciDevice(domain=0, bus=1, device=0, function=1)])
        fm.set_activated([])
    finally:
        fm.close()


def test_ctypes_backend_reports_an_unreachable_fm(fake_lib: Path, tmp_path: Path) -> None:
    """A connect that FM refuses raises CONNECTION_NOT_VALID naming the address."""
    env = {sdk.LIBRARY_ENV: str(fake_lib), sdk.UNIX_SOCKET_ENV: "/nonexistent"}
    with pytest.raises(FmConnectionNotValid, match="/nonexistent"):
        LibnvfmFabricManager.connect(driver_root=tmp_path, env=env)
    assert FmVersionMismatch.code == -6
