"""Device naming and version normalisation follow upstream exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvdra.core import devices


@pytest.mark.parametrize(
    ("profile", "expected"),
    [("1g.5gb", "1g5gb"), ("1g.10gb+me", "1g10gb-me"), ("7g.141gb", "7g141gb"), ("1c.3g.20gb", "1c3g20gb")],
)
def test_canonical_profile(profile: str, expected: str) -> None:
    """Profiles lose their dots and map other characters to dashes, as upstream's device names do."""
    assert devices.canonical_profile(profile) == expected


def test_mig_device_name_matches_upstream_example() -> None:
    """The upstream example name gpu-0-mig-1g5gb-19-0 is reproduced."""
    assert devices.mig_device_name(0, "1g.5gb", 19, 0) == "gpu-0-mig-1g5gb-19-0"
    assert devices.gpu_device_name(3) == "gpu-3"


@given(
    minor=st.integers(0, 63),
    profile=st.sampled_from(["1g.5gb", "1g.10gb+me", "3g.71gb", "7g.186gb"]),
    pid=st.sampled_from([0, 5, 9, 14, 15, 19, 20]),
    start=st.integers(0, 7),
)
def test_mig_name_round_trip(minor: int, profile: str, pid: int, start: int) -> None:
    """Parsing a MIG device name gives back its parent minor, profile, profile id and start."""
    name = devices.mig_device_name(minor, profile, pid, start)
    assert devices.parse_mig_device_name(name) == (minor, devices.canonical_profile(profile), pid, start)


def test_parse_rejects_full_gpu_names() -> None:
    """A full-GPU name is not mistaken for a MIG name."""
    assert devices.parse_mig_device_name("gpu-0") is None


@pytest.mark.parametrize(
    ("raw", "semver"), [("580.126.09", "580.126.9"), ("570.170.01", "570.170.1"), ("550.54", "550.54.0")]
)
def test_semver_normalize(raw: str, semver: str) -> None:
    """Driver versions lose leading zeros and gain a patch part."""
    assert devices.semver_normalize(raw) == semver


def test_cuda_driver_version() -> None:
    """NVML's integer CUDA version becomes major.minor.0."""
    assert devices.cuda_driver_version_semver(12080) == "12.8.0"
    assert devices.cuda_driver_version_semver(13000) == "13.0.0"


def test_pci_bus_id_from_nvml() -> None:
    """NVML bus ids become sysfs form: 4-digit domain, lower case."""
    assert devices.pci_bus_id_from_nvml("00000000:3B:00.0") == "0000:3b:00.0"
    assert devices.pci_bus_id_from_nvml("00000008:01:00.0") == "0008:01:00.0"
