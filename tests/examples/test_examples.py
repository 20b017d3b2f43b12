"""The two custom drivers in examples/ run end to end, as a user runs them, and behave as documented."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nic_driver_prepares_a_vf_on_the_selected_numa_node() -> None:
    out = run_example("nic_driver.py")
    assert "published: ['enp1s0f0-vf0'" in out and "'enp2s0f0-vf3']" in out
    assert "prepared ['enp2s0f0-vf0'] -> k8s.nic.example.com/claim=" in out
    assert "hostInterfaceName: enp2s0f0v0" in out and "name: net1" in out
    assert "unprepared: ok; spec left: False" in out


def test_fpga_driver_programs_the_card_and_refuses_a_bad_config_cleanly() -> None:
    out = run_example("fpga_driver.py")
    assert "prepared fpga-1: programmed with h264-encode" in out
    assert 'parameters.bitstream: "h265-encode" is not one of aes-gcm, h264-encode, regex-scan' in out
    assert "fpga-0 left untouched: True" in out
    assert "unprepared: ok; fpga-1 programmed: None" in out


@pytest.fixture
def examples_on_path() -> Iterator[None]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.mark.usefixtures("examples_on_path")
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"apiVersion": "fpga.example.com/v1", "kind": "FpgaConfig", "bitstrem": "aes-gcm"},
            "bitstrem: unknown",
        ),
        (
            {"apiVersion": "fpga.example.com/v2", "kind": "FpgaConfig"},
            "expected apiVersion fpga.example.com/v1",
        ),
        (
            {"apiVersion": "fpga.example.com/v1", "kind": "FpgaConfig", "bitstream": None},
            "null is not one of",
        ),
    ],
)
def test_fpga_config_errors_name_the_field(parameters: dict[str, object], message: str) -> None:
    from fpga_driver import decode_config

    with pytest.raises(ValueError, match=message):
        decode_config(parameters)
