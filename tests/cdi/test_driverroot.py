"""Driver-root discovery on fake trees: libraries, binaries, device numbers, MIG caps, caching, errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nvdra.cdi import DriverRoot, discover_driver, read_proc_devices
from nvdra.core.errors import CdiError
from tests.cdi.conftest import PROC_DEVICES, VERSION, add_mig_caps, make_driver_tree


def test_discovers_the_simulated_layout(driver_tree: Path) -> None:
    """Libraries, binaries, control and GPU nodes are found; host paths use the host root."""
    inst = discover_driver("/driver-root", str(driver_tree))
    assert inst.version == VERSION
    assert [lib.path for lib in inst.libraries] == [
        f"/usr/lib64/libnvidia-ml.so.{VERSION}",
        f"/usr/lib64/libcuda.so.{VERSION}",
    ]
    assert inst.libraries[1].host_path == f"/driver-root/usr/lib64/libcuda.so.{VERSION}"
    assert inst.libraries[1].soname == "libcuda.so.1"
    assert [(b.path, b.host_path) for b in inst.binaries] == [
        ("/usr/bin/nvidia-smi", "/driver-root/usr/bin/nvidia-smi"),
        ("/usr/bin/nvidia-cuda-mps-control", "/driver-root/usr/bin/nvidia-cuda-mps-control"),
    ]
    assert [(n.path, n.major, n.minor, n.file_mode) for n in inst.control_nodes] == [
        ("/dev/nvidia-uvm", 510, 0, 0o666),
        ("/dev/nvidia-uvm-tools", 510, 1, 0o666),
        ("/dev/nvidiactl", 195, 255, 0o666),
    ]
    assert [(n.path, n.host_path, n.major, n.minor) for n in inst.gpu_nodes] == [
        ("/dev/nvidia0", "/driver-root/dev/nvidia0", 195, 0),
        ("/dev/nvidia1", "/driver-root/dev/nvidia1", 195, 1),
    ]
    assert inst.caps_major == 235
    assert inst.libcuda_dir == "/usr/lib64"
    assert inst.library_dirs == ("/usr/lib64",)


def test_same_root_for_host_and_container(driver_tree: Path) -> None:
    """In the simulated case both roots are the generated dir, so host paths point into it."""
    inst = discover_driver(str(driver_tree))
    assert inst.gpu_node(1).host_path == str(driver_tree / "dev" / "nvidia1")


def test_other_library_dirs_modeset_and_missing_libs_are_handled(tmp_path: Path) -> None:
    """Debian lib dirs are searched, nvidia-modeset is found, absent libraries are skipped."""
    root = make_driver_tree(
        tmp_path / "r", lib_dir="usr/lib/x86_64-linux-gnu", libs=("libnvidia-ml", "libnvidia-nvvm"), uvm=False
    )
    (root / "dev" / "nvidia-modeset").write_text("")
    inst = discover_driver("/", str(root))
    assert [lib.path for lib in inst.libraries] == [
        f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{VERSION}",
        f"/usr/lib/x86_64-linux-gnu/libnvidia-nvvm.so.{VERSION}",
    ]
    assert inst.libraries[1].soname == "libnvidia-nvvm.so.4"
    assert inst.libcuda_dir == "/usr/lib/x86_64-linux-gnu"  # no libcuda: the first lib dir
    assert [(n.path, n.minor) for n in inst.control_nodes] == [
        ("/dev/nvidia-modeset", 254),
        ("/dev/nvidiactl", 255),
    ]
    assert inst.libraries[0].host_path == f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{VERSION}"


def test_real_char_devices_use_st_rdev(driver_tree: Path) -> None:
    """A real character device (here /dev/null behind a symlink) gets its numbers from st_rdev."""
    os.unlink(driver_tree / "dev" / "nvidia0")
    os.symlink("/dev/null", driver_tree / "dev" / "nvidia0")
    null = os.stat("/dev/null")
    node = discover_driver("/driver-root", str(driver_tree)).gpu_node(0)
    assert (node.major, node.minor) == (os.major(null.st_rdev), os.minor(null.st_rdev))
    assert node.file_mode == null.st_mode & 0o7777


def test_alternative_proc_devices_path(driver_tree: Path, tmp_path: Path) -> None:
    """An explicit /proc/devices file (ALT_PROC_DEVICES_PATH) overrides the tree's."""
    alt = tmp_path / "alt-devices"
    alt.write_text(PROC_DEVICES.replace("195 nvidia-frontend", "200 nvidia"))
    inst = discover_driver("/driver-root", str(driver_tree), proc_devices_path=str(alt))
    assert inst.gpu_node(0).major == 200


def test_proc_devices_reads_only_character_devices(tmp_path: Path) -> None:
    """Block-device majors never shadow character-device ones."""
    path = tmp_path / "devices"
    path.write_text("Character devices:\n 10 misc\n\nBlock devices:\n  7 loop\n 11 misc\n")
    assert read_proc_devices(str(path)) == {"misc": 10}


def test_explicit_driver_version_wins(driver_tree: Path) -> None:
    """A version given by NVML selects the matching libraries."""
    (driver_tree / "usr/lib64/libnvidia-ml.so.999.1").write_text("")
    with pytest.raises(CdiError, match="several driver versions"):
        discover_driver("/driver-root", str(driver_tree))
    inst = discover_driver("/driver-root", str(driver_tree), driver_version="999.1")
    assert [lib.path for lib in inst.libraries] == ["/usr/lib64/libnvidia-ml.so.999.1"]


def test_missing_driver_names_root_and_paths_searched(tmp_path: Path) -> None:
    """An empty root raises CdiError naming the root and the library dirs searched."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CdiError, match=r"not found.*empty.*/usr/lib64.*/lib/aarch64-linux-gnu"):
        discover_driver(str(empty))
    with pytest.raises(CdiError, match=r"no driver library .*searched /usr/lib64"):
        discover_driver(str(empty), driver_version="1.2.3")


def test_missing_nvidiactl_is_an_error(driver_tree: Path) -> None:
    """Without /dev/nvidiactl anywhere there is no usable driver."""
    os.unlink(driver_tree / "dev" / "nvidiactl")
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has a real NVIDIA driver; the fallback to /dev would find it")
    with pytest.raises(CdiError, match="nvidiactl"):
        discover_driver("/driver-root", str(driver_tree))


def test_missing_proc_entry_is_an_error(driver_tree: Path) -> None:
    """A regular-file node whose driver has no /proc/devices entry cannot be numbered."""
    (driver_tree / "proc" / "devices").write_text("Character devices:\n195 nvidia-frontend\n")
    with pytest.raises(CdiError, match="nvidia-uvm"):
        discover_driver("/driver-root", str(driver_tree))


def test_unknown_gpu_minor_is_an_error(driver_tree: Path) -> None:
    """Asking for a GPU node that does not exist names what was found."""
    with pytest.raises(CdiError, match=r"/dev/nvidia7 not found.*found: /dev/nvidia0, /dev/nvidia1"):
        discover_driver("/driver-root", str(driver_tree)).gpu_node(7)


def test_mig_caps_come_from_the_capability_files(driver_tree: Path) -> None:
    """GI/CI access files give the cap minors and modes; the major is nvidia-caps."""
    add_mig_caps(driver_tree, gpu=0, gi=1, ci=0, gi_minor=12, ci_minor=13)
    caps = DriverRoot("/driver-root", str(driver_tree)).mig_caps(0, 1, 0)
    assert (caps.gi.path, caps.gi.host_path, caps.gi.major, caps.gi.minor, caps.gi.file_mode) == (
        "/dev/nvidia-caps/nvidia-cap12",
        "/driver-root/dev/nvidia-caps/nvidia-cap12",
        235,
        12,
        292,
    )
    assert (caps.ci.path, caps.ci.minor) == ("/dev/nvidia-caps/nvidia-cap13", 13)


def test_missing_or_malformed_mig_caps_are_errors(driver_tree: Path) -> None:
    """A MIG device without capability files, or with a garbled one, raises CdiError."""
    root = DriverRoot("/driver-root", str(driver_tree))
    with pytest.raises(CdiError, match="gpu0/mig/gi3/access"):
        root.mig_caps(0, 3, 0)
    add_mig_caps(driver_tree, gpu=0, gi=2, ci=0, gi_minor=21, ci_minor=22)
    (driver_tree / "proc/driver/nvidia/capabilities/gpu0/mig/gi2/ci0/access").write_text(
        "DeviceFileMinor: x\n"
    )
    with pytest.raises(CdiError, match="DeviceFileMinor"):
        root.mig_caps(0, 2, 0)


def test_discovery_is_cached_until_refresh(driver_tree: Path) -> None:
    """installation() answers from the cache; refresh() sees changes on disk."""
    root = DriverRoot("/driver-root", str(driver_tree))
    first = root.installation()
    (driver_tree / "dev" / "nvidia2").write_text("")
    assert root.installation() is first
    assert [n.minor for n in root.refresh().gpu_nodes] == [0, 1, 2]
    assert [n.minor for n in root.installation().gpu_nodes] == [0, 1, 2]


def test_failed_discovery_is_not_cached(tmp_path: Path) -> None:
    """A root that appears after a failed discovery is found on the next call."""
    root_dir = tmp_path / "late"
    root_dir.mkdir()
    root = DriverRoot(str(root_dir))
    with pytest.raises(CdiError):
        root.installation()
    shutil.rmtree(root_dir)
    make_driver_tree(root_dir)
    assert root.installation().version == VERSION


def test_gsp_firmware_of_the_driver_version_is_found(driver_tree: Path) -> None:
    """gsp*.bin files of this driver version are discovered; other files and versions are not."""
    fw = driver_tree / "lib/firmware/nvidia" / VERSION
    fw.mkdir(parents=True)
    for name in ("gsp_tu10x.bin", "gsp_ga10x.bin", "README"):
        (fw / name).write_text("")
    (driver_tree / "lib/firmware/nvidia/1.0").mkdir()
    (driver_tree / "lib/firmware/nvidia/1.0/gsp_old.bin").write_text("")
    inst = discover_driver("/driver-root", str(driver_tree))
    assert [(f.path, f.host_path) for f in inst.firmware] == [
        (
            f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin",
            f"/driver-root/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin",
        ),
        (
            f"/lib/firmware/nvidia/{VERSION}/gsp_tu10x.bin",
            f"/driver-root/lib/firmware/nvidia/{VERSION}/gsp_tu10x.bin",
        ),
    ]
    assert [f.path for f in inst.mounted_files][:2] == [f.path for f in inst.firmware]
