"""Fabric Manager: SDK struct layouts and version words, return codes, the simulated FM's rules, libnvfm."""

from __future__ import annotations

import ctypes
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
    LibnvfmFabricManager,
    fm_address,
    fm_error_for_code,
    simulated_fabric_mode,
)
from nvdra.fabric import libnvfm as sdk

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
