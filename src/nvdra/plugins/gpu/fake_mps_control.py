"""A fake ``nvidia-cuda-mps-control`` for simulated nodes: the same command line, stdin protocol and failures.

``-d`` starts the "daemon": it opens ``$CUDA_MPS_LOG_DIRECTORY/control.log`` (default
``/var/log/nvidia-mps``), creates the ``control`` socket file and ``nvidia-cuda-mps-control.pid`` in
``$CUDA_MPS_PIPE_DIRECTORY`` and records ``running`` in ``nvdra-fake-mps.json`` there. Like the real
program it creates neither directory: one that is missing, not a directory or not writable by the
caller makes ``-d`` fail (status 1, the cause on stderr), and without ``CUDA_MPS_PIPE_DIRECTORY`` it
refuses to start or talk to a daemon (the message upstream hit, kubernetes-sigs/dra-driver-nvidia-gpu
#1143). Without arguments it reads control commands from stdin (``set_default_active_thread_percentage``,
``get_default_active_thread_percentage``, ``set_default_device_pinned_mem_limit``,
``get_default_device_pinned_mem_limit``, ``quit``) and fails, as the real one does, when no daemon runs.
Every command is appended to ``control.log``. The simulated driver root carries it as
``usr/bin/nvidia-cuda-mps-control``; :func:`install_fake_mps_control` puts it into any directory.
"""

from __future__ import annotations

__all__ = ["STATE_FILE", "install_fake_mps_control", "main", "read_state"]

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STATE_FILE = "nvdra-fake-mps.json"


def read_state(pipe_dir: Path) -> dict[str, Any]:
    """The fake daemon's state (``running``, ``threadPercentage``, ``pinned``), empty if never started."""
    path = pipe_dir / STATE_FILE
    loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return loaded


def _dirs() -> tuple[Path, Path] | str:
    """The pipe and log directories, or the error the real program prints without a pipe directory."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "")
    if not pipe:
        return "CUDA_MPS_PIPE_DIRECTORY must be set to start or to communicate with MPS control daemon"
    return Path(pipe), Path(os.environ.get("CUDA_MPS_LOG_DIRECTORY", "/var/log/nvidia-mps"))


def _line(text: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"[{stamp}.000 Control {os.getpid():>5}] {text}\n"


def _start(pipe: Path, log: Path) -> str | None:
    """``-d``: open the log and create the control socket's file, as the real daemon must; an error or None.

    Nothing is created on the way: a missing or unwritable directory fails here exactly as the kernel
    refuses it (``ENOENT``, ``ENOTDIR``, ``EACCES``, ``EROFS``), whoever runs the program.
    """
    try:
        with (log / "control.log").open("a") as out:
            (pipe / "control").touch()
            (pipe / "nvidia-cuda-mps-control.pid").write_text(f"{os.getpid()}\n")
            out.write(_line(f"Starting control daemon using socket {pipe / 'control'}"))
            out.write(
                _line(f"To connect CUDA applications to this daemon, set env CUDA_MPS_PIPE_DIRECTORY={pipe}")
            )
    except OSError as exc:
        return f"Failed to start MPS control daemon: {exc.filename}: {exc.strerror}"
    return None


def _command(state: dict[str, Any], line: str) -> str:
    words = line.split()
    if words[0] == "set_default_active_thread_percentage" and len(words) == 2 and words[1].isdigit():
        state["threadPercentage"] = int(words[1])
        return f"{int(words[1])}.0"
    if words[0] == "get_default_active_thread_percentage" and len(words) == 1:
        return f"{state.get('threadPercentage', 100)}.0"
    if words[0] == "set_default_device_pinned_mem_limit" and len(words) == 3:
        state.setdefault("pinned", {})[words[1]] = words[2]
        return ""
    if words[0] == "get_default_device_pinned_mem_limit" and len(words) == 2:
        return str(state.get("pinned", {}).get(words[1], "0"))
    if words == ["quit"]:
        state["running"] = False
        return ""
    raise ValueError(f"unknown or malformed command: {line!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the fake program; returns its exit code."""
    args = sys.argv[1:] if argv is None else argv
    dirs = _dirs()
    if isinstance(dirs, str):
        print(dirs, file=sys.stderr)
        return 1
    pipe, log = dirs
    if args and args != ["-d"]:
        print(f"unsupported arguments: {args}", file=sys.stderr)
        return 2
    state = read_state(pipe) if pipe.is_dir() else {}
    if args == ["-d"]:
        if state.get("running"):
            print("An instance of this daemon is already running", file=sys.stderr)
            return 1
        error = _start(pipe, log)
        if error is not None:
            print(error, file=sys.stderr)
            return 1
        state = {"running": True, "visibleDevices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    else:
        if not state.get("running"):
            print("Cannot find MPS control daemon process", file=sys.stderr)
            return 1
        with (log / "control.log").open("a") as out:
            for line in sys.stdin.read().splitlines():
                if not line.strip():
                    continue
                try:
                    reply = _command(state, line.strip())
                except ValueError as exc:
                    print(str(exc), file=sys.stderr)
                    return 1
                out.write(_line(f"Accepting connection... {line.strip()}"))
                if reply:
                    print(reply)
    (pipe / STATE_FILE).write_text(json.dumps(state))
    return 0


def install_fake_mps_control(driver_root: Path) -> Path:
    """Install the fake program as ``<driver_root>/usr/bin/nvidia-cuda-mps-control``; returns its path."""
    target = driver_root / "usr/bin/nvidia-cuda-mps-control"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        f"#!{sys.executable}\n# fake nvidia-cuda-mps-control (nvdra simulated node)\n"
        "import sys\nfrom nvdra.plugins.gpu.fake_mps_control import main\nsys.exit(main())\n"
    )
    target.chmod(0o755)
    return target


if __name__ == "__main__":
    sys.exit(main())
