"""``nvdra-mps-daemon`` against the fake control program, and the simulated/real host-command runners."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import pytest

from nvdra.core.errors import HostError
from nvdra.core.featuregates import parse_feature_gates
from nvdra.core.sharing import MpsPlan
from nvdra.nvml import SimulatedNvml, load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.fake_mps_control import install_fake_mps_control, read_state
from nvdra.plugins.gpu.hostcmd import HostCommands, SimulatedHostCommands
from nvdra.plugins.gpu.mps import MPS_DIR_MODES, make_mps_dirs, render_deployment
from nvdra.plugins.gpu.mps_daemon import control_invocation, run_daemon


def _mount_mps_dirs(root: Path) -> None:
    """What the Deployment's mounts provide: the pipe and log directories under the driver root."""
    for sub in ("tmp/nvidia-mps", "var/log/nvidia-mps"):
        (root / sub).mkdir(parents=True)


def test_daemon_without_a_shell_in_the_driver_root_runs_the_control_program_directly(tmp_path: Path) -> None:
    """No ``bin/sh``: the fake control starts, gets the limits, and quits on stop; dirs under the root."""
    root = tmp_path / "driver-root"
    install_fake_mps_control(root)
    _mount_mps_dirs(root)
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


def _fake_env(root: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", **extra}


def test_generated_driver_root_carries_an_executable_fake_control_that_the_daemon_runs(
    tmp_path: Path,
) -> None:
    """make_simulated_driver_root writes the fake as an executable; run_daemon finds it there and runs it."""
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "root")
    program = root / "usr/bin/nvidia-cuda-mps-control"
    assert program.stat().st_mode & 0o111 == 0o111
    assert (
        shutil.which("nvidia-cuda-mps-control", path="/usr/bin:/bin") is None
    )  # not on PATH: found in the root
    _mount_mps_dirs(root)
    stop = threading.Event()
    stop.set()  # start, apply nothing, write startup.log, quit
    run_daemon(root, _fake_env(root, CUDA_VISIBLE_DEVICES="GPU-a"), stop)
    assert (root / "var/log/nvidia-mps/startup.log").read_text() == "startup complete\n"
    log = (root / "var/log/nvidia-mps/control.log").read_text()
    assert f"Starting control daemon using socket {root}/tmp/nvidia-mps/control" in log
    assert read_state(root / "tmp/nvidia-mps") == {"running": False, "visibleDevices": "GPU-a"}


@pytest.mark.parametrize("missing", ["tmp/nvidia-mps", "var/log/nvidia-mps"])
def test_daemon_fails_naming_a_missing_pipe_or_log_directory(tmp_path: Path, missing: str) -> None:
    """The fake creates no directory: a missing mount fails ``-d`` with ENOENT and the path, as the real."""
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "root")
    _mount_mps_dirs(root)
    (root / missing).rmdir()
    with pytest.raises(
        click.ClickException, match=rf"-d.*failed \(1\).*{missing}.*No such file or directory"
    ):
        run_daemon(root, _fake_env(root), threading.Event())
    assert not (root / "var/log/nvidia-mps/startup.log").exists()


def _without_root_override() -> list[str]:
    """An argv prefix under which file modes bind this process too: root minus the DAC override caps."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.parametrize("read_only", ["tmp/nvidia-mps", "var/log/nvidia-mps"])
def test_fake_control_fails_when_a_directory_is_not_writable(tmp_path: Path, read_only: str) -> None:
    """A directory the caller cannot write (mode 0555) fails ``-d`` with EACCES, as the kernel decides it."""
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "root")
    _mount_mps_dirs(root)
    for sub in ("tmp/nvidia-mps", "var/log/nvidia-mps"):
        (root / sub).chmod(0o777)
    (root / read_only).chmod(0o555)
    env = _fake_env(
        root,
        CUDA_MPS_PIPE_DIRECTORY=str(root / "tmp/nvidia-mps"),
        CUDA_MPS_LOG_DIRECTORY=str(root / "var/log/nvidia-mps"),
    )
    done = subprocess.run(
        [*_without_root_override(), str(root / "usr/bin/nvidia-cuda-mps-control"), "-d"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Permission denied" in done.stderr and read_only in done.stderr
    assert read_state(root / "tmp/nvidia-mps") == {}


def test_fake_control_refuses_to_start_without_a_pipe_directory_setting(tmp_path: Path) -> None:
    """Without CUDA_MPS_PIPE_DIRECTORY the program neither starts nor talks to a daemon (upstream #1143)."""
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "root")
    done = subprocess.run(
        [str(root / "usr/bin/nvidia-cuda-mps-control"), "-d"],
        env=_fake_env(root),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert "CUDA_MPS_PIPE_DIRECTORY must be set" in done.stderr


def test_mps_directories_and_deployment_are_what_a_real_node_needs(tmp_path: Path) -> None:
    """Dirs with their modes (root-owned when run as root); the pod runs as root, privileged, root mounted."""
    make_mps_dirs(tmp_path / "mps/abc")
    modes = {sub: (tmp_path / "mps/abc" / sub).stat() for sub, _ in MPS_DIR_MODES}
    assert {sub: stat.S_IMODE(st.st_mode) for sub, st in modes.items()} == dict(MPS_DIR_MODES)
    if os.geteuid() == 0:
        assert {(st.st_uid, st.st_gid) for st in modes.values()} == {(0, 0)}
    (tmp_path / "mps/abc/shm").chmod(0o700)  # a directory left by an earlier try gets its mode back
    make_mps_dirs(tmp_path / "mps/abc")
    assert stat.S_IMODE((tmp_path / "mps/abc/shm").stat().st_mode) == 0o1777
    config = PluginConfig(node_name="n1", nvidia_driver_root=Path("/run/nvidia/driver"))
    record = MpsPlan(id="abc", uuids=("GPU-a",), compute_mode_gpus=("GPU-a",))
    pod = render_deployment(record, config, parse_feature_gates(""), tmp_path / "mps/abc")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["securityContext"] == {"privileged": True, "runAsUser": 0, "runAsGroup": 0}
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert (mounts["driver-root"], volumes["driver-root"]) == ("/driver-root", "/run/nvidia/driver")
    assert (mounts["mps-pipe"], volumes["mps-pipe"]) == (
        "/driver-root/tmp/nvidia-mps",
        f"{tmp_path}/mps/abc/pipe",
    )
    assert (mounts["mps-log"], volumes["mps-log"]) == (
        "/driver-root/var/log/nvidia-mps",
        f"{tmp_path}/mps/abc/log",
    )
    simulated = render_deployment(
        record, config, parse_feature_gates(""), tmp_path, driver_root=tmp_path / "sim"
    )
    sim_volumes = simulated["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v["hostPath"]["path"] for v in sim_volumes}["driver-root"] == str(tmp_path / "sim")


def test_control_daemon_process_runs_from_the_deployment_the_plugin_renders(tmp_path: Path) -> None:
    """``nvdra-mps-daemon`` as a process from the Deployment's command, env and mounts: started, probed, quit.

    The runtime's view is mapped onto the generated driver root: each nested mount (pipe, log, shm) is
    a symlink at its path under the root, and ``NVIDIA_DRIVER_ROOT`` (``/driver-root``) names the root.
    """
    root = make_simulated_driver_root(load_profile("dgx-h100"), tmp_path / "host/driver-root")
    config = PluginConfig(node_name="n1", kubelet_plugins_directory_path=tmp_path / "plugins")
    record = MpsPlan(
        id="abc",
        uuids=("GPU-a",),
        pinned_memory_mib={"GPU-a": 1024},
        active_thread_percentage=40,
        compute_mode_gpus=("GPU-a",),
    )
    mps_root = config.plugin_dir / "mps/abc"
    make_mps_dirs(mps_root)
    pod = render_deployment(record, config, parse_feature_gates(""), mps_root, driver_root=root)["spec"][
        "template"
    ]
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["runAsUser"] == 0
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        if mount["mountPath"] == "/driver-root":
            assert volumes[mount["name"]] == str(root)
            continue
        target = root / mount["mountPath"].removeprefix("/driver-root/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(volumes[mount["name"]])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NVIDIA_DRIVER_ROOT"] == "/driver-root"
    env.update(
        NVIDIA_DRIVER_ROOT=str(root),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
    )
    assert shutil.which("nvidia-cuda-mps-control", path=env["PATH"]) is None
    probe = [w.replace("/driver-root", str(root)) for w in container["startupProbe"]["exec"]["command"]]
    proc = subprocess.Popen(container["command"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(probe, capture_output=True, check=False).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.05)
        state = read_state(mps_root / "pipe")
        assert state == {
            "running": True,
            "visibleDevices": "GPU-a",
            "threadPercentage": 40,
            "pinned": {"GPU-a": "1024M"},
        }
        assert (mps_root / "log/control.log").exists() and (mps_root / "pipe/control").exists()
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    assert read_state(mps_root / "pipe")["running"] is False
