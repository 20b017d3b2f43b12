"""``nvdra-mps-daemon`` against the fake control program, and the simulated/real host-command runners."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from nvdra.core.errors import HostError
from nvdra.nvml import SimulatedNvml, load_profile
from nvdra.plugins.gpu.fake_mps_control import install_fake_mps_control, read_state
from nvdra.plugins.gpu.hostcmd import HostCommands, SimulatedHostCommands
from nvdra.plugins.gpu.mps_daemon import control_invocation, run_daemon


def test_daemon_without_a_shell_in_the_driver_root_runs_the_control_program_directly(tmp_path: Path) -> None:
    """No ``bin/sh``: the fake control starts, gets the limits, and quits on stop; dirs under the root."""
    root = tmp_path / "driver-root"
    install_fake_mps_control(root)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MPS_ACTIVE_THREAD_PERCENTAGE": "50",
        "MPS_PINNED_MEMORY_LIMITS": "GPU-a=10240M,GPU-b=2048M",
        "CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b",
    }
    stop = threading.Event()
    worker = threading.Thread(target=run_daemon, args=(root, env, stop))
    worker.start()
    startup = root / "var/log/nvidia-mps/startup.log"
    deadline = time.monotonic() + 30
    while not startup.exists() and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    state = read_state(root / "tmp/nvidia-mps")
    stop.set()
    worker.join(30)
    assert startup.exists()
    assert state["running"] and state["threadPercentage"] == 50
    assert state["pinned"] == {"GPU-a": "10240M", "GPU-b": "2048M"}
    assert state["visibleDevices"] == "GPU-a,GPU-b"
    assert read_state(root / "tmp/nvidia-mps")["running"] is False
    assert "set_default_active_thread_percentage 50" in (root / "var/log/nvidia-mps/control.log").read_text()


def test_daemon_with_a_shell_in_the_driver_root_runs_through_chroot(tmp_path: Path) -> None:
    """With ``bin/sh`` present the control program runs chrooted, with in-root pipe and log paths."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/sh").write_text("")
    inv = control_invocation(tmp_path, {"PATH": "/usr/bin"})
    assert inv.argv == ("chroot", str(tmp_path), "nvidia-cuda-mps-control")
    assert inv.env["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/nvidia-mps"
    assert inv.log_dir == tmp_path / "var/log/nvidia-mps"


def test_fake_control_refuses_commands_without_a_daemon(tmp_path: Path) -> None:
    """Like the real program, control commands fail when no daemon was started."""
    root = tmp_path / "r"
    install_fake_mps_control(root)
    env = {"PATH": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    with pytest.raises(Exception, match="Cannot find MPS control daemon"):
        from nvdra.plugins.gpu.mps_daemon import _control

        _control(control_invocation(root, env), stdin="quit\n")


def test_simulated_nvidia_smi_rejects_what_it_does_not_understand() -> None:
    """Unknown argv, bad modes and bad time slices are errors and change nothing."""
    backend = SimulatedNvml(load_profile("dgx-h100"))
    backend.init()
    runner = SimulatedHostCommands(backend)
    uuid = backend.device_identity(0).uuid
    for argv in (["-q"], ["-i", uuid, "-c", "BOGUS"], ["compute-policy", "-i", uuid, "--set-timeslice", "9"]):
        with pytest.raises(HostError):
            runner.nvidia_smi(argv)
    with pytest.raises(HostError):
        runner.nvidia_smi(["-i", "GPU-nope", "-c", "DEFAULT"])
    with pytest.raises(HostError):
        runner.run(["rm", "-rf", "/"])
    assert backend.snapshot().gpus[0].compute_mode == 0 and runner.timeslice(uuid) == 0


def test_real_runner_uses_the_driver_roots_nvidia_smi_with_its_nvml_preloaded(tmp_path: Path) -> None:
    """HostCommands runs <root>/usr/bin/nvidia-smi with LD_PRELOAD=<root>/…/libnvidia-ml.so.1."""
    smi = tmp_path / "usr/bin/nvidia-smi"
    smi.parent.mkdir(parents=True)
    smi.write_text('#!/bin/sh\necho "preload=$LD_PRELOAD args=$*"\n')
    smi.chmod(0o755)
    lib = tmp_path / "usr/lib64/libnvidia-ml.so.1"
    lib.parent.mkdir(parents=True)
    lib.write_text("")
    out = HostCommands(tmp_path).nvidia_smi(["-i", "GPU-x", "-c", "DEFAULT"])
    # the empty "library" cannot really be preloaded; the loader warns on stderr and runs the tool anyway
    assert out.strip() == f"preload={lib} args=-i GPU-x -c DEFAULT"
    smi.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    with pytest.raises(HostError, match=r"exit code 3: (.|\n)*broken"):
        HostCommands(tmp_path).nvidia_smi(["-L"])
    with pytest.raises(HostError, match="not found"):
        HostCommands(tmp_path / "missing").nvidia_smi(["-L"])
