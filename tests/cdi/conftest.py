"""Shared fixtures for nvdra.cdi tests: a fake NVIDIA driver tree and the official CDI JSON schema."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cdi_schema import cdi_validator

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "cdi-schema"
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "samples"
VERSION = "570.170.01"

PROC_DEVICES = """Character devices:
  1 mem
  4 /dev/vc/0
195 nvidia-frontend
235 nvidia-caps
510 nvidia-uvm

Block devices:
  8 sd
259 blkext
"""


@pytest.fixture(scope="session")
def cdi_schema() -> Callable[[dict[str, Any]], None]:
    """Validate a spec document against the official CDI schema, also refusing unknown fields."""
    official, strict = cdi_validator(strict=False), cdi_validator(strict=True)

    def check(doc: dict[str, Any]) -> None:
        official.validate(doc)
        strict.validate(doc)

    return check


def make_driver_tree(
    root: Path,
    *,
    version: str = VERSION,
    gpus: tuple[int, ...] = (0, 1),
    libs: tuple[str, ...] = ("libnvidia-ml", "libcuda"),
    bins: tuple[str, ...] = ("nvidia-smi", "nvidia-cuda-mps-control"),
    lib_dir: str = "usr/lib64",
    uvm: bool = True,
) -> Path:
    """Lay out a simulated driver root the way nvdra.nvml generates one (regular files + proc/)."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    nodes = ["nvidiactl", *(f"nvidia{g}" for g in gpus)]
    if uvm:
        nodes += ["nvidia-uvm", "nvidia-uvm-tools"]
    for node in nodes:
        (root / "dev" / node).write_text("")
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    for name in bins:
        (root / "usr" / "bin" / name).write_text("#!/bin/sh\n")
    (root / lib_dir).mkdir(parents=True, exist_ok=True)
    for lib in libs:
        (root / lib_dir / f"{lib}.so.{version}").write_text("")
        os.symlink(f"{lib}.so.{version}", root / lib_dir / f"{lib}.so.1")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "devices").write_text(PROC_DEVICES)
    return root


def add_mig_caps(root: Path, gpu: int, gi: int, ci: int, gi_minor: int, ci_minor: int) -> None:
    """Write the capability files of MIG device gpu<gpu>/gi<gi>/ci<ci> into a fake tree."""
    gi_dir = root / "proc/driver/nvidia/capabilities" / f"gpu{gpu}" / "mig" / f"gi{gi}"
    (gi_dir / f"ci{ci}").mkdir(parents=True, exist_ok=True)
    (gi_dir / "access").write_text(f"DeviceFileMinor: {gi_minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
    (gi_dir / f"ci{ci}" / "access").write_text(
        f"DeviceFileMinor: {ci_minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n"
    )


@pytest.fixture
def driver_tree(tmp_path: Path) -> Path:
    """A simulated driver root with two GPUs, libnvidia-ml, libcuda and two binaries."""
    return make_driver_tree(tmp_path / "driver-root")
