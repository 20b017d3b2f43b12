"""``nvdra-cd-daemon run|check``: supervise nvidia-imex for one ComputeDomain on one node."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from nvdra.core.errors import NvdraError
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.plugins.computedomain.daemon import DaemonSettings, ImexDaemon, SubprocessRunner
from nvdra.plugins.computedomain.flags import VERBOSITY
from nvdra.plugins.flags import option as _opt

__all__ = ["main"]


def _settings(f: dict[str, Any]) -> DaemonSettings:
    return DaemonSettings(
        clique_id=f["cliqueid"],
        domain_uid=f["compute_domain_uuid"],
        domain_name=f["compute_domain_name"],
        domain_namespace=f["compute_domain_namespace"],
        node_name=f["node_name"],
        pod_ip=f["pod_ip"],
        pod_name=f["pod_name"],
        pod_namespace=f["pod_namespace"],
        max_nodes=f["max_nodes_per_imex_domain"],
        feature_gates=f["feature_gates"],
        imexd_dir=Path(f["imexd_dir"]),
    )


def _flags(fn: Any) -> Any:
    for name, env, default in reversed(
        [
            ("--cliqueid", "CLIQUE_ID", ""),
            ("--compute-domain-uuid", "COMPUTE_DOMAIN_UUID", ""),
            ("--compute-domain-name", "COMPUTE_DOMAIN_NAME", ""),
            ("--compute-domain-namespace", "COMPUTE_DOMAIN_NAMESPACE", "default"),
            ("--node-name", "NODE_NAME", ""),
            ("--pod-ip", "POD_IP", ""),
            ("--pod-uid", "POD_UID", ""),
            ("--pod-name", "POD_NAME", ""),
            ("--pod-namespace", "POD_NAMESPACE", "default"),
            ("--feature-gates", "FEATURE_GATES", ""),
            ("--imexd-dir", "IMEXD_DIR", "/imexd"),
        ]
    ):
        fn = _opt(name, env=env, default=default)(fn)
    return _opt("--max-nodes-per-imex-domain", env="MAX_NODES_PER_IMEX_DOMAIN", default=18, type=int)(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "verbosity", default=0, type=VERBOSITY, help="Log verbosity (-v N, -v=N or -vv).")
def main(verbosity: int) -> None:
    """The ComputeDomain IMEX daemon."""
    logging.basicConfig(level=logging.DEBUG if verbosity >= 2 else logging.INFO)


@main.command()
@_flags
def run(**f: Any) -> None:
    """Register, supervise nvidia-imex until SIGTERM, then leave the clique."""
    try:
        daemon = ImexDaemon(_settings(f), KubernetesKubeApi.from_kubeconfig(None), SubprocessRunner())
    except NvdraError as exc:
        click.echo(f"nvdra-cd-daemon: {exc}", err=True)
        sys.exit(1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon.run(stop)


@main.command()
@_flags
def check(**f: Any) -> None:
    """Probe: exit 0 iff ``nvidia-imex-ctl -q`` prints READY (always 0 without a clique)."""
    settings = _settings(f)
    ok = not settings.clique_id or SubprocessRunner().run(
        ["nvidia-imex-ctl", "-c", str(settings.config_path), "-q"]
    ) == (0, "READY\n")
    sys.exit(0 if ok else 1)
