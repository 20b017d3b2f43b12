"""``nvdra-cd-daemon run|check``: supervise nvidia-imex for one ComputeDomain on one node.

The daemon runs the node's own ``nvidia-imex`` and ``nvidia-imex-ctl``: the CD plugin's daemon-claim
CDI spec mounts them from the host driver root at their paths relative to it (``/usr/bin/nvidia-imex``
on most hosts), and the daemon finds them with driver-root discovery's binary lookup
(:func:`nvdra.cdi.find_binary`: upstream's binary directories, in order) under the container's root,
not on its own ``PATH``. With ``NVDRA_SIMULATE`` (a profile name, passed on by a simulated controller)
it generates a driver root for that profile under ``<root>/tmp`` and finds the fake pair there, the same
way.

``--root`` (``NVDRA_DAEMON_ROOT``, default ``/``) is the file system the container runtime set up: the
CDI mounts (``/imexd``, the binaries) and ``/etc/hosts`` are looked up under it. Only tests and
debugging point it elsewhere (a directory standing in for the container); the fake IMEX reads it too.

The container must run as root (the DaemonSet says ``runAsUser: 0``): the daemon rewrites its
``/etc/hosts`` block and ``/imexd``, and ``nvidia-imex`` opens the root-only ``fabric-imex-mgmt``
device. A daemon that cannot write them says so in one line instead of failing later.
"""

from __future__ import annotations

__all__ = ["SIMULATED_ROOT", "binaries_root", "find_imex_binary", "main"]

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from nvdra.cdi import BINARY_DIRS, find_binary
from nvdra.core.errors import HostError
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.nvml import load_profile, make_simulated_driver_root
from nvdra.plugins.computedomain.daemon import DaemonSettings, ImexDaemon, SubprocessRunner
from nvdra.plugins.flags import (
    FEATURE_GATES_FLAG,
    KUBECONFIG_FLAG,
    FlagRow,
    configure_logging,
    logging_options,
    one_line_errors,
    stop_on_signals,
    table_options,
)

log = logging.getLogger(__name__)

SIMULATED_ROOT = "tmp/nvdra-simulated-driver-root"
"""Where a simulated daemon generates its driver root, relative to ``--root``."""


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def binaries_root(root: Path, simulate: str, *, create: bool) -> Path:
    """Where the IMEX binaries are looked up: ``root`` (the CDI mounts), or a generated root when simulated.

    Raises:
        NvdraError: the simulated profile cannot be loaded or its root written.
    """
    if not simulate:
        return root
    generated = root / SIMULATED_ROOT
    if create:
        make_simulated_driver_root(load_profile(simulate), generated)
    return generated


def find_imex_binary(root: Path, name: str) -> str:
    """The executable ``name`` under ``root``'s binary directories.

    Raises:
        HostError: not there (names the root, the directories and where it should come from).
    """
    found = find_binary(str(root), name)
    if found is None:
        raise HostError(
            f"{name} not found under {root} (searched {', '.join(BINARY_DIRS)}): the CD plugin's daemon "
            "claim mounts it from the node's driver root; is the nvidia-imex package installed there "
            "(on the host, or in the GPU Operator's driver container)?"
        )
    return found


def _settings(f: dict[str, Any], *, create: bool) -> DaemonSettings:
    root = Path(f["root"])
    bins = binaries_root(root, f["simulate"], create=create)
    clique = f["cliqueid"]
    return DaemonSettings(
        clique_id=clique,
        domain_uid=f["compute_domain_uuid"],
        domain_name=f["compute_domain_name"],
        domain_namespace=f["compute_domain_namespace"],
        node_name=f["node_name"],
        pod_ip=f["pod_ip"],
        pod_name=f["pod_name"],
        pod_namespace=f["pod_namespace"],
        max_nodes=f["max_nodes_per_imex_domain"],
        feature_gates=f["feature_gates"],
        imexd_dir=_under(root, f["imexd_dir"]),
        hosts_path=root / "etc/hosts",
        # A daemon without a clique never runs IMEX, so a node without the packages still joins.
        imex_binary=find_imex_binary(bins, "nvidia-imex") if clique else "nvidia-imex",
        ctl_binary=find_imex_binary(bins, "nvidia-imex-ctl") if clique else "nvidia-imex-ctl",
    )


def _check_writable(settings: DaemonSettings) -> None:
    """Refuse to start when the container cannot write what the daemon must (not root, read-only)."""
    for path in (settings.hosts_path, settings.imexd_dir):
        if path.exists() and not os.access(path, os.W_OK):
            raise HostError(
                f"cannot write {path} as uid {os.geteuid()}: the daemon's container must run as root "
                "(runAsUser: 0 in the DaemonSet the controller writes)"
            )


# The flags of ``run`` and ``check``, in --help order (rows as :data:`~nvdra.plugins.flags.FlagRow`).
_FLAGS: tuple[FlagRow, ...] = (
    (
        "--max-nodes-per-imex-domain",
        "MAX_NODES_PER_IMEX_DOMAIN",
        18,
        "Most nodes in one IMEX domain (clique).",
    ),
    (
        "--cliqueid",
        "CLIQUE_ID",
        "",
        "This node's NVLink clique (<cluster UUID>.<clique id>); empty: no IMEX on this node.",
    ),
    ("--compute-domain-uuid", "COMPUTE_DOMAIN_UUID", "", "UID of the ComputeDomain this daemon serves."),
    ("--compute-domain-name", "COMPUTE_DOMAIN_NAME", "", "Name of the ComputeDomain."),
    ("--compute-domain-namespace", "COMPUTE_DOMAIN_NAMESPACE", "default", "Namespace of the ComputeDomain."),
    ("--node-name", "NODE_NAME", "", "Name of the node the daemon runs on."),
    ("--pod-ip", "POD_IP", "", "The daemon pod's IP (its IMEX peer address)."),
    ("--pod-uid", "POD_UID", "", "The daemon pod's UID."),
    ("--pod-name", "POD_NAME", "", "The daemon pod's name."),
    ("--pod-namespace", "POD_NAMESPACE", "default", "The daemon pod's namespace."),
    FEATURE_GATES_FLAG,
    ("--imexd-dir", "IMEXD_DIR", "/imexd", "Where the IMEX configuration and nodes file are written."),
    (
        "--root",
        "NVDRA_DAEMON_ROOT",
        "/",
        "The container's own root: where /etc/hosts and the CDI mounts (/imexd, IMEX binaries) are.",
    ),
    (
        "--simulate",
        "NVDRA_SIMULATE",
        "",
        "Simulated node profile: run the fake IMEX pair of a driver root generated for it.",
    ),
    KUBECONFIG_FLAG,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@logging_options(group=True)
def main(verbosity: int) -> None:
    """The ComputeDomain IMEX daemon."""
    configure_logging(verbosity)


@main.command()
@table_options(_FLAGS)
def run(**f: Any) -> None:
    """Register, supervise nvidia-imex until SIGTERM, then leave the clique."""
    # What the daemon cannot work with (a POD_IP that is no address, an unwritable /imexd, no
    # nvidia-imex) ends it in one line.
    with one_line_errors("nvdra-cd-daemon"):
        settings = _settings(f, create=True)
        _check_writable(settings)
        kube = KubernetesKubeApi.from_kubeconfig(f["kubeconfig"] or None, component="cd-daemon")
        daemon = ImexDaemon(settings, kube, SubprocessRunner())
        # The children (the fake IMEX reads it) see the same container root.
        os.environ["NVDRA_DAEMON_ROOT"] = f["root"]
        if settings.clique_id:
            log.info("IMEX binaries: %s, %s", settings.imex_binary, settings.ctl_binary)
        daemon.run(stop_on_signals(), watch=True)


@main.command()
@table_options(_FLAGS)
def check(**f: Any) -> None:
    """Probe: exit 0 iff ``nvidia-imex-ctl -q`` prints READY (always 0 without a clique)."""
    with one_line_errors("nvdra-cd-daemon check"):
        settings = _settings(f, create=False)
    ok = not settings.clique_id or SubprocessRunner().run(
        [settings.ctl_binary, "-c", str(settings.config_path), "-q"]
    ) == (0, "READY\n")
    sys.exit(0 if ok else 1)
