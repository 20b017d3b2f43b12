"""The plugins' shared process behaviour: SIGTERM stops them, and a stop that hangs cannot linger."""

from __future__ import annotations

import signal
import subprocess
import sys

SCRIPT = """
import time
import nvdra.plugins.flags as flags
flags.SHUTDOWN_DEADLINE = {deadline}
stop = flags.stop_on_signals()
print("ready", flush=True)
flags.wait_for_signal(stop, "test")
print("stopping", flush=True)
time.sleep({stop_takes})
print("stopped", flush=True)
"""


def _run(deadline: float, stop_takes: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(deadline=deadline, stop_takes=stop_takes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_clean_stop_within_the_deadline_exits_normally() -> None:
    """After SIGTERM, a stop that finishes in time ends the process normally."""
    done = _run(deadline=10.0, stop_takes=0.1)
    assert done.returncode == 0
    assert done.stdout.split() == ["stopping", "stopped"]


def test_a_hanging_stop_dumps_threads_and_exits() -> None:
    """A stop that overruns the deadline writes every thread's stack and exits 1 instead of lingering."""
    done = _run(deadline=0.3, stop_takes=60)
    assert done.returncode == 1
    assert "stopped" not in done.stdout
    assert "Thread 0x" in done.stderr or "Current thread" in done.stderr
