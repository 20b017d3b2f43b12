"""``nvdra-webhook`` as a real process: flags, a bad key pair, and serving until SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from nvdra import __version__
from nvdra.plugins.webhook.main import main
from tests.webhook.conftest import admission_review, claim, opaque

Https = Callable[..., tuple[int, bytes]]


def test_help_and_version() -> None:
    """--help lists the upstream flags and --feature-gates; --version prints the package version."""
    runner = CliRunner()
    help_text = runner.invoke(main, ["--help"]).output
    for flag in ("--tls-cert-file", "--tls-private-key-file", "--port", "--feature-gates"):
        assert flag in help_text
    # click's version option keeps the first program name it prints: give the console script's, or a
    # later test of every console script (tests/tool/test_conventions.py) would read "main".
    result = runner.invoke(main, ["--version"], prog_name="nvdra-webhook")
    assert result.exit_code == 0
    assert result.output == f"nvdra-webhook {__version__}\n"


def test_missing_tls_flags_are_usage_errors() -> None:
    """Without the key pair flags the command refuses to start (exit 2, naming the flag)."""
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 2
    assert "--tls-cert-file" in result.output


def test_bad_feature_gates_and_bad_key_pair_exit_1(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """An unknown gate or an unloadable pair is reported in one line and exits 1, before binding."""
    cert, key = tls_files
    result = CliRunner().invoke(
        main,
        ["--tls-cert-file", str(cert), "--tls-private-key-file", str(key), "--feature-gates", "Nope=true"],
    )
    assert result.exit_code == 1
    assert "Nope" in result.output
    result = CliRunner().invoke(
        main, ["--tls-cert-file", str(cert), "--tls-private-key-file", str(tmp_path / "x")]
    )
    assert result.exit_code == 1
    assert "cannot load the TLS key pair" in result.output


def test_a_taken_port_is_one_line_and_exit_1(tls_files: tuple[Path, Path]) -> None:
    """The apiserver gets no answer from a webhook that cannot listen: it says so in one line, exit 1."""
    cert, key = tls_files
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--tls-cert-file", str(cert), "--tls-private-key-file", str(key), "--port", str(port)]
        result = CliRunner().invoke(main, [*args, "--bind-address", "127.0.0.1"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"nvdra-webhook: cannot listen on 127.0.0.1:{port} (--bind-address, --port): Address already in use"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script() -> list[str]:
    found = shutil.which("nvdra-webhook", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the nvdra-webhook console script is not installed (pip install -e .)")
    return [found]


@pytest.mark.slow
def test_console_script_serves_reviews_until_sigterm(tls_files: tuple[Path, Path], https: Https) -> None:
    """The installed script serves /readyz and reviews under FEATURE_GATES, and exits 0 on SIGTERM."""
    cert, key = tls_files
    port = _free_port()
    env = {**os.environ, "FEATURE_GATES": "MPSSupport=true"}
    args = [*_script(), "--tls-cert-file", str(cert), "--tls-private-key-file", str(key), "--port", str(port)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if https(port, "GET", "/readyz") == (200, b"ok"):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        mps = opaque(
            {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": {"strategy": "MPS"}}
        )
        status, body = https(
            port, "POST", "/validate-resource-claim-parameters", admission_review(claim(mps))
        )
        assert status == 200
        assert json.loads(body)["response"]["allowed"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
