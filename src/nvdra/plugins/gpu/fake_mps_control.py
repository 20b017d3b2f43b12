"""A fake ``nvidia-cuda-mps-control`` for simulated nodes: the same command line and stdin protocol.

``-d`` starts the "daemon": it records ``running`` in ``$CUDA_MPS_PIPE_DIRECTORY/nvdra-fake-mps.json`` and
writes ``nvidia-cuda-mps-control.pid``; without arguments it reads control commands from stdin
(``set_default_active_thread_percentage``, ``get_default_active_thread_percentage``,
``set_default_device_pinned_mem_limit``, ``get_default_device_pinned_mem_limit``, ``quit``) and fails,
as the real one does, when no daemon runs. Every command is appended to
``$CUDA_MPS_LOG_DIRECTORY/control.log``. :func:`install_fake_mps_control` puts it into a driver root.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["STATE_FILE", "install_fake_mps_control", "main", "read_state"]

STATE_FILE = "nvdra-fake-mps.json"


def read_state(pipe_dir: Path) -> dict[str, Any]:
    """The fake daemon's state (``running``, ``threadPercentage``, ``pinned``), empty if never started."""
    path = pipe_dir / STATE_FILE
    loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return loaded


def _dirs() -> tuple[Path, Path]:
    pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
    log = Path(os.environ.get("CUDA_MPS_LOG_DIRECTORY", "/var/log/nvidia-mps"))
    return pipe, log


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
    pipe, log = _dirs()
    pipe.mkdir(parents=True, exist_ok=True)
    log.mkdir(parents=True, exist_ok=True)
    state = read_state(pipe)
    with (log / "control.log").open("a") as out:
        if args == ["-d"]:
            if state.get("running"):
                print("An instance of this daemon is already running", file=sys.stderr)
                return 1
            state = {"running": True, "visibleDevices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
            (pipe / "nvidia-cuda-mps-control.pid").write_text(f"{os.getpid()}\n")
            out.write("[fake] Starting control daemon\n")
        elif args:
            print(f"unsupported arguments: {args}", file=sys.stderr)
            return 2
        else:
            if not state.get("running"):
                print("Cannot find MPS control daemon process", file=sys.stderr)
                return 1
            for line in sys.stdin.read().splitlines():
                if not line.strip():
                    continue
                try:
                    reply = _command(state, line.strip())
                except ValueError as exc:
                    print(str(exc), file=sys.stderr)
                    return 1
                out.write(f"[fake] {line.strip()}\n")
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
