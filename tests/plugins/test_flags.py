"""The plugins' shared process behaviour: SIGTERM stops them, and a stop that hangs cannot linger."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from nvdra.core.errors import HostError
from nvdra.plugins import flags

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


SIGNAL_TO_OTHER_THREAD = """
import signal, threading, time
import nvdra.plugins.flags as flags
stop = flags.stop_on_signals()
other = threading.Thread(target=lambda: time.sleep(60), daemon=True)
other.start()
# The kernel may deliver a process signal to any thread (grpc's C++ threads, say): simulate exactly that.
threading.Timer(0.3, lambda: signal.pthread_kill(other.ident, signal.SIGTERM)).start()
flags.wait_for_signal(stop, "test")
print("stopped", flush=True)
"""


def test_a_signal_delivered_to_another_thread_still_stops_the_plugin() -> None:
    """SIGTERM taken by a non-main thread is acted on (a bare Event.wait() in the main thread never wakes)."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_TO_OTHER_THREAD],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"


def test_one_line_errors_ends_a_library_error_in_its_line_and_lets_others_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An NvdraError in the block exits 1 with ``program: message`` on stderr; another error propagates."""
    with pytest.raises(SystemExit) as exited, flags.one_line_errors("nvdra-test"):
        raise HostError("cannot write /imexd")
    assert exited.value.code == 1
    assert capsys.readouterr().err == "nvdra-test: cannot write /imexd\n"
    with pytest.raises(ValueError, match="not ours"), flags.one_line_errors("nvdra-test"):
        raise ValueError("not ours")
    with flags.one_line_errors("nvdra-test"):
        value = int("7")
    assert value == 7
    assert capsys.readouterr().err == ""
