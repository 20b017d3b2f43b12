"""``nvdra-mps-daemon``: what the MPS control-daemon Deployment runs (upstream's shell template, in Python).

It starts ``nvidia-cuda-mps-control -d`` from the driver root mounted at ``$NVIDIA_DRIVER_ROOT``
(``/driver-root``), sets the default active-thread percentage and the per-device pinned-memory
limits, writes ``startup.log`` (the startup probe reads it), then waits; on SIGTERM/SIGINT it sends
``quit`` and exits.

Two ways to run the control program (upstream-driver §5.2):
- the driver root has a shell (``bin/sh``): ``chroot <root> nvidia-cuda-mps-control``, so the program
  and its libraries are the host's own; pipe and log directories are then ``/tmp/nvidia-mps`` and
  ``/var/log/nvidia-mps`` inside the root;
- it has none (e.g. GKE's COS driver root): run ``<root>/usr/bin/nvidia-cuda-mps-control`` directly with
  ``PATH``/``LD_LIBRARY_PATH`` pointing into the root and explicit ``CUDA_MPS_PIPE_DIRECTORY`` /
  ``CUDA_MPS_LOG_DIRECTORY`` (the mounted directories under the root).
"""

from __future__ import annotations

__all__ = ["ControlInvocation", "control_invocation", "main", "run_daemon"]

import os
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import attrs
import click

from nvdra.plugins.flags import configure_logging, logging_options, stop_on_signals, wait_interruptibly

_LIB_DIRS = ("usr/lib64", "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib")


@attrs.frozen(kw_only=True)
class ControlInvocation:
    """How to run ``nvidia-cuda-mps-control``: argv prefix, environment, and where its log goes."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_dir: Path


def control_invocation(root: Path, base_env: Mapping[str, str]) -> ControlInvocation:
    """The argv and environment for the control program under driver root ``root``."""
    env = dict(base_env)
    if (root / "bin/sh").exists() and root != Path("/"):
        env["CUDA_MPS_PIPE_DIRECTORY"] = "/tmp/nvidia-mps"
        env["CUDA_MPS_LOG_DIRECTORY"] = "/var/log/nvidia-mps"
        return ControlInvocation(
            argv=("chroot", str(root), "nvidia-cuda-mps-control"),
            env=env,
            log_dir=root / "var/log/nvidia-mps",
        )
    env["PATH"] = os.pathsep.join([str(root / "usr/bin"), str(root / "bin"), env.get("PATH", "")])
    libs = [str(root / d) for d in _LIB_DIRS if (root / d).is_dir()]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    env["CUDA_MPS_PIPE_DIRECTORY"] = str(root / "tmp/nvidia-mps")
    env["CUDA_MPS_LOG_DIRECTORY"] = str(root / "var/log/nvidia-mps")
    return ControlInvocation(
        argv=(str(root / "usr/bin/nvidia-cuda-mps-control"),), env=env, log_dir=root / "var/log/nvidia-mps"
    )


def _control(inv: ControlInvocation, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*inv.argv, *args],
        input=stdin,
        env=dict(inv.env),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise click.ClickException(
            f"nvidia-cuda-mps-control {' '.join(args) or repr(stdin)} failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def run_daemon(root: Path, env: Mapping[str, str], stop: threading.Event) -> None:
    """Start the control daemon, apply the limits, write startup.log, wait for ``stop``, then quit."""
    inv = control_invocation(root, env)
    # The pipe and log directories are the Deployment's mounts; creating them here would hide a missing
    # mount (the daemon would then log into the container's own file system, where no client looks).
    _control(inv, "-d")
    try:
        pct = env.get("MPS_ACTIVE_THREAD_PERCENTAGE", "")
        if pct:
            _control(inv, stdin=f"set_default_active_thread_percentage {pct}\n")
        for item in filter(None, env.get("MPS_PINNED_MEMORY_LIMITS", "").split(",")):
            uuid, _, limit = item.partition("=")
            _control(inv, stdin=f"set_default_device_pinned_mem_limit {uuid} {limit}\n")
        (inv.log_dir / "startup.log").write_text("startup complete\n")
        click.echo("MPS control daemon started", err=True)
        wait_interruptibly(stop)
    finally:
        _control(inv, stdin="quit\n")
        click.echo("MPS control daemon stopped", err=True)


@click.command(context_settings={"auto_envvar_prefix": "NVDRA_MPS", "help_option_names": ["-h", "--help"]})
@click.option(
    "--driver-root",
    envvar="NVIDIA_DRIVER_ROOT",
    default="/driver-root",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the host's driver root is mounted.",
)
@logging_options()
def main(driver_root: Path, verbosity: int) -> None:
    """Run an MPS control daemon for the GPUs in CUDA_VISIBLE_DEVICES until SIGTERM."""
    configure_logging(verbosity)
    run_daemon(driver_root, os.environ, stop_on_signals())


if __name__ == "__main__":
    main()
