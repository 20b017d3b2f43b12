"""``nvdra-cd-controller``: reconcile ComputeDomains (leader-elected; flags as upstream's controller).

Leader-election durations take Go spellings (``15s``) or plain seconds (``15``); ``--simulate``
(``NVDRA_SIMULATE``) is handed to the ComputeDomain daemons the controller starts.
"""

from __future__ import annotations

__all__ = ["main"]

import os
from typing import Any

import click

from nvdra.core.featuregates import Gate, parse_feature_gates
from nvdra.imex import Settings
from nvdra.imex.hostmode import ImexDeployment
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.plugins.computedomain.controller import ComputeDomainController, LeaseElector, LeaseTiming
from nvdra.plugins.computedomain.flags import DURATION
from nvdra.plugins.flags import (
    FEATURE_GATES_FLAG,
    KUBECONFIG_FLAG,
    METRICS_FLAGS,
    FlagRow,
    logging_options,
    process_main,
    stop_on_signals,
    table_options,
)
from nvdra.plugins.metrics import start_metrics_server

# The controller's flags, in --help order (rows as :data:`~nvdra.plugins.flags.FlagRow`).
_FLAGS: tuple[FlagRow, ...] = (
    ("--pod-name", "POD_NAME", None, "Lease identity."),
    ("--namespace", "NAMESPACE", "default", "Driver namespace."),
    ("--image-name", "IMAGE_NAME", None, "Image of the CD daemon pods."),
    (
        "--cd-daemon-image-pull-secret-names",
        "CD_DAEMON_IMAGE_PULL_SECRET_NAMES",
        "",
        "Comma list of image pull Secrets for the CD daemon pods.",
    ),
    ("--log-verbosity-cd-daemon", "LOG_VERBOSITY_CD_DAEMON", 0, "The -v level the CD daemon pods log with."),
    (
        "--max-nodes-per-imex-domain",
        "MAX_NODES_PER_IMEX_DOMAIN",
        18,
        "Most nodes in one IMEX domain (clique); the daemons of more nodes wait.",
    ),
    *METRICS_FLAGS,
    (
        "--additional-namespaces",
        "ADDITIONAL_NAMESPACES",
        "",
        "Comma list of more namespaces the controller may create daemon objects in.",
    ),
    (
        "--leader-election-enabled",
        "LEADER_ELECTION_ENABLED",
        False,
        "Run only while holding the Lease (several replicas, one active).",
    ),
    (
        "--leader-election-lease-lock-namespace",
        "LEADER_ELECTION_LEASE_LOCK_NAMESPACE",
        "default",
        "Namespace of the leader-election Lease.",
    ),
    (
        "--leader-election-lease-lock-name",
        "LEADER_ELECTION_LEASE_LOCK_NAME",
        "nvidia-compute-domain-controller",
        "Name of the leader-election Lease.",
    ),
    (
        "--leader-election-lease-duration",
        "LEADER_ELECTION_LEASE_DURATION",
        "15s",
        "How long a Lease holds without renewal.",
        DURATION,
    ),
    (
        "--leader-election-renew-deadline",
        "LEADER_ELECTION_RENEW_DEADLINE",
        "10s",
        "How long the holder tries to renew before it gives up.",
        DURATION,
    ),
    (
        "--leader-election-retry-period",
        "LEADER_ELECTION_RETRY_PERIOD",
        "2s",
        "How often candidates try to take the Lease.",
        DURATION,
    ),
    (
        "--resync-period",
        "RESYNC_PERIOD",
        "5m",
        "A full reconcile pass this often even without any change (changes are watched).",
        DURATION,
    ),
    KUBECONFIG_FLAG,
    ("--kube-api-qps", "KUBE_API_QPS", 5.0, "Client-side API request rate."),
    ("--kube-api-burst", "KUBE_API_BURST", 10, "Client-side API request burst."),
    FEATURE_GATES_FLAG,
    (
        "--imex-mode",
        "IMEX_MODE",
        "driverManaged",
        "IMEX deployment mode: driverManaged (a DaemonSet per ComputeDomain) or hostManaged (the nodes "
        "run nvidia-imex; needs the HostManagedIMEXDaemon feature gate).",
    ),
    (
        "--imex-isolation",
        "IMEX_ISOLATION",
        "domain",
        "IMEX isolation strategy: domain, or channel (not yet supported).",
    ),
    (
        "--simulate",
        "NVDRA_SIMULATE",
        "",
        "Simulated node profile of the cluster's plugins; the CD daemons get it too (fake IMEX).",
    ),
)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@table_options(_FLAGS)
@logging_options()
def main(verbosity: int, **f: Any) -> None:
    """Reconcile ComputeDomains: DaemonSets, claim templates, cliques, status."""
    with process_main("nvdra-cd-controller", verbosity):
        kube = KubernetesKubeApi.from_kubeconfig(
            f["kubeconfig"] or None,
            qps=f["kube_api_qps"],
            burst=f["kube_api_burst"],
            component="cd-controller",
        )
        gates = parse_feature_gates(f["feature_gates"], env=os.environ)
        imex = ImexDeployment(mode=f["imex_mode"], isolation=f["imex_isolation"]).check(
            gate_enabled=gates.enabled(Gate.HOST_MANAGED_IMEX_DAEMON)
        )
        settings = Settings(
            namespace=f["namespace"],
            image=f["image_name"],
            max_nodes=f["max_nodes_per_imex_domain"],
            feature_gates=f["feature_gates"],
            log_verbosity=f["log_verbosity_cd_daemon"],
            pull_secrets=tuple(s for s in f["cd_daemon_image_pull_secret_names"].split(",") if s),
            simulate=f["simulate"],
            host_managed=imex.host_managed,
        )
        elector = None
        if f["leader_election_enabled"]:
            elector = LeaseElector(
                kube,
                namespace=f["leader_election_lease_lock_namespace"],
                name=f["leader_election_lease_lock_name"],
                identity=f["pod_name"],
                timing=LeaseTiming(
                    f["leader_election_lease_duration"],
                    f["leader_election_renew_deadline"],
                    f["leader_election_retry_period"],
                ),
            )
        extra = tuple(n for n in f["additional_namespaces"].split(",") if n)
        controller = ComputeDomainController(
            kube, settings, elector=elector, additional_namespaces=extra, resync_s=f["resync_period"]
        )
        if f["http_endpoint"]:
            start_metrics_server(f["http_endpoint"], f["metrics_path"], controller.metrics)
        controller.run(stop_on_signals())
