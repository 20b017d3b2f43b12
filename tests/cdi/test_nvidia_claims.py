"""NVIDIA container edits and per-claim specs: upstream shape, schema validity, names and paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.cdi import (
    ContainerEdits,
    DriverRoot,
    Mount,
    claim_device_id,
    claim_spec,
    claim_spec_path,
    common_edits,
    discover_driver,
    gpu_edits,
    imex_channel_edits,
    mig_edits,
)
from nvdra.core.errors import CdiError
from tests.cdi.conftest import SAMPLES_DIR, VERSION, add_mig_caps, make_driver_tree

VENDOR, CLASS = "k8s.gpu.nvidia.com", "claim"
UID = "e06d22d3-d645-41d6-bec4-8b3a758d7289"
Schema = Callable[[dict[str, Any]], None]


def test_one_gpu_claim_matches_the_upstream_spec_exactly(tmp_path: Path, cdi_schema: Schema) -> None:
    """Given the same driver files, the rendered spec equals the one the upstream Go plugin wrote."""
    tree = make_driver_tree(tmp_path / "root", gpus=(0,), libs=("libnvidia-ml",), bins=("nvidia-smi",))
    driver = discover_driver("/driver-root", str(tree))
    spec = claim_spec(VENDOR, CLASS, UID, [("gpu-0", gpu_edits(driver, 0))], common_edits(driver))
    upstream = yaml.safe_load((SAMPLES_DIR / "upstream-cdi-claim-spec.yaml").read_text())
    assert spec.to_dict() == upstream
    cdi_schema(spec.to_dict())
    cdi_schema(upstream)  # the schema helper accepts the real thing too


def test_common_edits_shape(driver_tree: Path, cdi_schema: Schema) -> None:
    """Common edits carry env, control nodes, the four createContainer hooks and read-only mounts."""
    driver = discover_driver("/driver-root", str(driver_tree))
    edits = common_edits(driver, hook_path="/opt/bin/nvidia-cdi-hook")
    assert edits.env == ("NVIDIA_CTK_LIBCUDA_DIR=/usr/lib64", "NVIDIA_VISIBLE_DEVICES=void")
    assert [n.path for n in edits.device_nodes] == [
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
        "/dev/nvidiactl",
    ]
    assert all(n.file_mode == 438 and n.permissions == "rwm" for n in edits.device_nodes)
    assert [h.args[:2] for h in edits.hooks] == [
        ("nvidia-cdi-hook", "create-symlinks"),
        ("nvidia-cdi-hook", "enable-cuda-compat"),
        ("nvidia-cdi-hook", "update-ldcache"),
        ("nvidia-cdi-hook", "disable-device-node-modification"),
    ]
    assert all(
        h.hook_name == "createContainer"
        and h.path == "/opt/bin/nvidia-cdi-hook"
        and h.env == ("NVIDIA_CTK_DEBUG=false",)
        for h in edits.hooks
    )
    assert edits.hooks[0].args[2:] == (
        "--link",
        f"libnvidia-ml.so.{VERSION}::/usr/lib64/libnvidia-ml.so.1",
        "--link",
        "libnvidia-ml.so.1::/usr/lib64/libnvidia-ml.so",
        "--link",
        f"libcuda.so.{VERSION}::/usr/lib64/libcuda.so.1",
        "--link",
        "libcuda.so.1::/usr/lib64/libcuda.so",
    )
    assert edits.hooks[1].args[2:] == (f"--host-driver-version={VERSION}",)
    assert edits.hooks[2].args[2:] == ("--folder", "/usr/lib64")
    options = ("ro", "nosuid", "nodev", "rbind", "rprivate")
    assert edits.mounts == tuple(
        Mount(host_path="/driver-root" + p, container_path=p, options=options)
        for p in sorted(
            [
                "/usr/bin/nvidia-smi",
                "/usr/bin/nvidia-cuda-mps-control",
                f"/usr/lib64/libnvidia-ml.so.{VERSION}",
                f"/usr/lib64/libcuda.so.{VERSION}",
            ]
        )
    )
    spec = claim_spec(VENDOR, CLASS, UID, [("gpu-1", gpu_edits(driver, 1))], edits)
    cdi_schema(spec.to_dict())


def test_visible_devices_void_can_be_left_out(driver_tree: Path) -> None:
    """Without the void marker only the libcuda dir is in the env."""
    driver = discover_driver("/driver-root", str(driver_tree))
    assert common_edits(driver, visible_devices_void=False).env == ("NVIDIA_CTK_LIBCUDA_DIR=/usr/lib64",)


def test_mig_claim_has_parent_and_cap_nodes(driver_tree: Path, cdi_schema: Schema) -> None:
    """A MIG device gets its parent GPU node plus GI and CI capability char devices."""
    add_mig_caps(driver_tree, gpu=1, gi=2, ci=0, gi_minor=156, ci_minor=157)
    root = DriverRoot("/driver-root", str(driver_tree))
    driver = root.installation()
    edits = mig_edits(driver, 1, root.mig_caps(1, 2, 0))
    spec = claim_spec(VENDOR, CLASS, UID, [("gpu-1-mig-1g10gb-19-2", edits)], common_edits(driver))
    doc = spec.to_dict()
    cdi_schema(doc)
    assert doc["devices"][0]["containerEdits"]["deviceNodes"] == [
        {
            "path": "/dev/nvidia1",
            "hostPath": "/driver-root/dev/nvidia1",
            "major": 195,
            "minor": 1,
            "fileMode": 438,
            "permissions": "rwm",
        },
        {
            "path": "/dev/nvidia-caps/nvidia-cap156",
            "hostPath": "/driver-root/dev/nvidia-caps/nvidia-cap156",
            "type": "c",
            "major": 235,
            "minor": 156,
            "fileMode": 292,
        },
        {
            "path": "/dev/nvidia-caps/nvidia-cap157",
            "hostPath": "/driver-root/dev/nvidia-caps/nvidia-cap157",
            "type": "c",
            "major": 235,
            "minor": 157,
            "fileMode": 292,
        },
    ]
    assert doc["devices"][0]["name"] == f"{UID}-gpu-1-mig-1g10gb-19-2"


def test_multi_device_claim(driver_tree: Path, cdi_schema: Schema) -> None:
    """Several devices share one spec; each device name carries the claim UID."""
    driver = discover_driver("/driver-root", str(driver_tree))
    extra = ContainerEdits(env=("CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps",))
    devices = [("gpu-0", gpu_edits(driver, 0) + extra), ("gpu-1", gpu_edits(driver, 1) + extra)]
    spec = claim_spec(VENDOR, CLASS, UID, devices, common_edits(driver))
    cdi_schema(spec.to_dict())
    assert [d.name for d in spec.devices] == [f"{UID}-gpu-0", f"{UID}-gpu-1"]
    assert spec.cdi_version == "0.5.0"  # hostPath on device nodes
    assert spec.kind == "k8s.gpu.nvidia.com/claim"


def test_claim_spec_refuses_duplicates_and_empty(driver_tree: Path) -> None:
    """A device listed twice or a claim with no devices is not a loadable spec."""
    driver = discover_driver("/driver-root", str(driver_tree))
    with pytest.raises(CdiError, match="more than once"):
        claim_spec(VENDOR, CLASS, UID, [("gpu-0", gpu_edits(driver, 0))] * 2, ContainerEdits())
    with pytest.raises(CdiError, match="no devices"):
        claim_spec(VENDOR, CLASS, UID, [], ContainerEdits())


def test_claim_ids_and_paths() -> None:
    """Qualified IDs and spec file paths follow the upstream/CDI transient naming."""
    assert claim_device_id(VENDOR, CLASS, UID, "gpu-0") == f"k8s.gpu.nvidia.com/claim={UID}-gpu-0"
    assert claim_spec_path("/var/run/cdi", VENDOR, CLASS, UID) == Path(
        f"/var/run/cdi/k8s.gpu.nvidia.com-claim_{UID}.yaml"
    )


@pytest.mark.parametrize("uid", ["../../etc/cron.d/x", "a/b", "..", "x\0y", ""])
def test_claim_uid_cannot_escape_the_cdi_dir(uid: str, driver_tree: Path) -> None:
    """A claim UID with '/', '..' or NUL is refused for paths, names and specs."""
    with pytest.raises(CdiError):
        claim_spec_path("/var/run/cdi", VENDOR, CLASS, uid)
    with pytest.raises(CdiError):
        claim_device_id(VENDOR, CLASS, uid, "gpu-0")
    with pytest.raises(CdiError):
        claim_spec(VENDOR, CLASS, uid, [("gpu-0", ContainerEdits())], ContainerEdits())


def test_imex_channel_node(driver_tree: Path, cdi_schema: Schema) -> None:
    """An IMEX channel is a char node with minor = channel and the imex-channels major."""
    proc = driver_tree / "proc" / "devices"
    proc.write_text(
        proc.read_text().replace("510 nvidia-uvm\n", "510 nvidia-uvm\n507 nvidia-caps-imex-channels\n")
    )
    root = DriverRoot("/driver-root", str(driver_tree))
    edits = imex_channel_edits(root.imex_channel(3))
    assert [n.to_dict() for n in edits.device_nodes] == [
        {
            "path": "/dev/nvidia-caps-imex-channels/channel3",
            "hostPath": "/driver-root/dev/nvidia-caps-imex-channels/channel3",
            "type": "c",
            "major": 507,
            "minor": 3,
            "fileMode": 438,
        }
    ]
    spec = claim_spec("k8s.compute-domain.nvidia.com", "claim", UID, [("channel-0", edits)], ContainerEdits())
    cdi_schema(spec.to_dict())
    with pytest.raises(CdiError, match="must be >= 0"):
        root.imex_channel(-1)
    proc.write_text(proc.read_text().replace("507 nvidia-caps-imex-channels\n", ""))
    with pytest.raises(CdiError, match="nvidia-caps-imex-channels"):
        root.imex_channel(0)
