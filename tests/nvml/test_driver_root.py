"""The simulated driver root: host-like paths, capability minors, idempotence, MIG refresh."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nvdra.nvml import SimulatedNvml, load_profile, make_simulated_driver_root, refresh_mig_capabilities
from nvdra.nvml._driver_root import ci_access_minor, gi_access_minor

Sim = Callable[[str], SimulatedNvml]


def test_layout_from_profile(tmp_path: Path) -> None:
    """A profile yields device nodes, binaries, versioned libraries with soname links and proc files."""
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "root")
    for rel in (
        "dev/nvidiactl",
        "dev/nvidia-uvm",
        "dev/nvidia-uvm-tools",
        "dev/nvidia-modeset",
        "dev/nvidia7",
        "dev/nvidia-caps",
        "usr/bin/nvidia-smi",
        "usr/bin/nvidia-cuda-mps-control",
        "usr/lib64/libnvidia-ml.so.580.105.08",
        "usr/lib64/libcuda.so.580.105.08",
        "proc/driver/nvidia-caps/mig-minors",
        "proc/sys/kernel/random/boot_id",
        "dev/nvidia-nvswitch3",
        "proc/driver/nvidia-nvswitch/devices/0000:07:00.0",
    ):
        assert (root / rel).exists(), rel
    assert (root / "usr/lib64/libnvidia-ml.so.1").readlink() == Path("libnvidia-ml.so.580.105.08")
    assert (root / "usr/lib64/libcuda.so.1").resolve() == (root / "usr/lib64/libcuda.so.580.105.08").resolve()
    devices = (root / "proc/devices").read_text()
    for line in (
        "195 nvidia-frontend",
        "195 nvidia\n",
        "510 nvidia-uvm",
        "508 nvidia-caps\n",
        "507 nvidia-caps-imex-channels",
    ):
        assert line in devices


def test_mig_capability_files(sim: Sim, tmp_path: Path) -> None:
    """Existing MIG devices get gi/ci access files with the closed-form minors and cap device nodes."""
    root = make_simulated_driver_root(sim("a100-mig"), tmp_path)
    access = root / "proc/driver/nvidia/capabilities/gpu1/mig/gi1/access"
    assert access.read_text() == "DeviceFileMinor: 147\nDeviceFileMode: 292\nDeviceFileModify: 1\n"
    assert gi_access_minor(1, 1) == 147
    ci = root / "proc/driver/nvidia/capabilities/gpu1/mig/gi1/ci0/access"
    assert ci.read_text().startswith(f"DeviceFileMinor: {ci_access_minor(1, 1, 0)}\n")
    assert (root / "dev/nvidia-caps/nvidia-cap147").exists()
    assert not (root / "proc/driver/nvidia/capabilities/gpu2/mig/gi0").exists()


def test_minors_match_the_mig_minors_file(tmp_path: Path) -> None:
    """The closed form agrees with mig-minors, including the documented GPU 0 / GI 1 example."""
    root = make_simulated_driver_root(load_profile("pcie-l4"), tmp_path)
    table = dict(
        line.rsplit(" ", 1) for line in (root / "proc/driver/nvidia-caps/mig-minors").read_text().splitlines()
    )
    assert table["gpu0/gi1/access"] == "12" and table["gpu0/gi1/ci2/access"] == "15"
    assert table["gpu31/gi14/ci7/access"] == "4322"
    assert table["gpu5/gi3/ci1/access"] == str(ci_access_minor(5, 3, 1))


def test_idempotent_and_keeps_boot_id(tmp_path: Path) -> None:
    """Running twice changes nothing; the boot id stays unless a new one is given."""
    profile = load_profile("dgx-a100")
    make_simulated_driver_root(profile, tmp_path)
    boot = (tmp_path / "proc/sys/kernel/random/boot_id").read_text()
    snapshot = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    make_simulated_driver_root(profile, tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == snapshot
    assert (tmp_path / "proc/sys/kernel/random/boot_id").read_text() == boot
    make_simulated_driver_root(profile, tmp_path, boot_id="11111111-2222-3333-4444-555555555555")
    assert (tmp_path / "proc/sys/kernel/random/boot_id").read_text().startswith("11111111-")


def test_refresh_after_create_and_destroy(sim: Sim, tmp_path: Path) -> None:
    """refresh_mig_capabilities adds files for a new MIG device and removes them after destruction."""
    backend = sim("a100-mig")
    make_simulated_driver_root(backend, tmp_path)
    gi = backend.create_gpu_instance(2, 9, 4)
    backend.create_compute_instance(2, gi)
    refresh_mig_capabilities(backend, tmp_path)
    access = tmp_path / f"proc/driver/nvidia/capabilities/gpu2/mig/gi{gi}/ci0/access"
    assert access.exists()
    assert (tmp_path / f"dev/nvidia-caps/nvidia-cap{ci_access_minor(2, gi, 0)}").exists()
    backend.destroy_compute_instance(2, gi, 0)
    backend.destroy_gpu_instance(2, gi)
    refresh_mig_capabilities(backend, tmp_path)
    assert not access.exists()
    assert not (tmp_path / f"dev/nvidia-caps/nvidia-cap{ci_access_minor(2, gi, 0)}").exists()
    assert (tmp_path / "dev/nvidia-caps/nvidia-cap1").exists()
