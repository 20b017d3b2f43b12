"""Shared fixtures for nvdra.cdi tests: a fake NVIDIA driver tree and the official CDI JSON schema."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
from referencing.jsonschema import DRAFT7

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


def _forbid_unknown(node: Any) -> Any:
    """Copy of a schema where every object with declared properties refuses other keys."""
    if isinstance(node, dict):
        out = {k: _forbid_unknown(v) for k, v in node.items()}
        if "properties" in out and out.get("type") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_forbid_unknown(v) for v in node]
    return node


def _validator(strict: bool) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMA_DIR / "schema.json").read_text())
    defs = json.loads((SCHEMA_DIR / "defs.json").read_text())
    if strict:
        # The Go types (specs-go) carry deviceNodes[].fileMode, which the JSON schema does not list;
        # runtimes accept it and upstream writes it, so the strict copy allows exactly that one.
        defs = copy.deepcopy(defs)
        defs["definitions"]["DeviceNode"]["properties"]["fileMode"] = {"$ref": "#/definitions/uint32"}
        schema, defs = _forbid_unknown(copy.deepcopy(schema)), _forbid_unknown(defs)
    base = "file:///cdi-schema/"
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (base + "schema.json", DRAFT7.create_resource(schema)),
            (base + "defs.json", DRAFT7.create_resource(defs)),
        ]
    )
    schema = {**schema, "$id": base + "schema.json"}
    return jsonschema.Draft7Validator(schema, registry=registry)


@pytest.fixture(scope="session")
def cdi_schema() -> Callable[[dict[str, Any]], None]:
    """Validate a spec document against the official CDI schema, also refusing unknown fields."""
    official, strict = _validator(False), _validator(True)

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
