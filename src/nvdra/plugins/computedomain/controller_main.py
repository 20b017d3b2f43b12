"""``nvdra-cd-controller``: reconcile ComputeDomains (leader-elected; flags as upstream's controller).

Leader-election durations take Go spellings (``15s``) or plain seconds (``15``); ``--simulate``
(``NVDRA_SIMULATE``) is handed to the ComputeDomain daemons the controller starts.
"""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
from typing import Any

import click

from nvdra.core.errors import NvdraError
from nvdra.core.featuregates import Gate, parse_feature_gates
from nvdra.imex import Settings
from nvdra.imex.hostmode import ImexDeployment
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.plugins.computedomain.controller import ComputeDomainController, LeaseElector, Metrics
from nvdra.plugins.computedomain.flags import DURATION
from nvdra.plugins.flags import configure_logging, logging_options
from nvdra.plugins.flags import option as _opt

__all__ = ["main"]


def _serve_metrics(endpoint: str, path: str, metrics: Metrics) -> http.server.ThreadingHTTPServer:
    host, _, port = endpoint.rpartition(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render().encode() if self.path == path else b"not found\n"
            self.send_response(200 if self.path == path else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@_opt("--pod-name", env="POD_NAME", required=True, help="Lease identity.")
@_opt("--namespace", env="NAMESPACE", default="default", show_default=True, help="Driver namespace.")
@_opt("--image-name", env="IMAGE_NAME", required=True, help="Image of the CD daemon pods.")
@_opt(
    "--cd-daemon-image-pull-secret-names",
    env="CD_DAEMON_IMAGE_PULL_SECRET_NAMES",
    default="",
    help="Comma list of image pull Secrets for the CD daemon pods.",
)
@_opt(
    "--log-verbosity-cd-daemon",
    env="LOG_VERBOSITY_CD_DAEMON",
    default=0,
    type=int,
    help="The -v level the CD daemon pods log with.",
)
@_opt(
    "--max-nodes-per-imex-domain",
    env="MAX_NODES_PER_IMEX_DOMAIN",
    default=18,
    type=int,
    show_default=True,
    help="Most nodes in one IMEX domain (clique); the daemons of more nodes wait.",
)
@_opt("--http-endpoint", env="HTTP_ENDPOINT", default="", help="Metrics listen address (off when empty).")
@_opt(
    "--metrics-path",
    env="METRICS_PATH",
    default="/metrics",
    show_default=True,
    help="HTTP path of the metrics.",
)
@_opt(
    "--additional-namespaces",
    env="ADDITIONAL_NAMESPACES",
    default="",
    help="Comma list of more namespaces the controller may create daemon objects in.",
)
@_opt(
    "--leader-election-enabled",
    env="LEADER_ELECTION_ENABLED",
    default=False,
    type=bool,
    help="Run only while holding the Lease (several replicas, one active).",
)
@_opt(
    "--leader-election-lease-lock-namespace",
    env="LEADER_ELECTION_LEASE_LOCK_NAMESPACE",
    default="default",
    help="Namespace of the leader-election Lease.",
)
@_opt(
    "--leader-election-lease-lock-name",
    env="LEADER_ELECTION_LEASE_LOCK_NAME",
    default="nvidia-compute-domain-controller",
    help="Name of the leader-election Lease.",
)
@_opt(
    "--leader-election-lease-duration",
    env="LEADER_ELECTION_LEASE_DURATION",
    default="15s",
    type=DURATION,
    show_default=True,
    help="How long a Lease holds without renewal.",
)
@_opt(
    "--leader-election-renew-deadline",
    env="LEADER_ELECTION_RENEW_DEADLINE",
    default="10s",
    type=DURATION,
    show_default=True,
    help="How long the holder tries to renew before it gives up.",
)
@_opt(
    "--leader-election-retry-period",
    env="LEADER_ELECTION_RETRY_PERIOD",
    default="2s",
    type=DURATION,
    show_default=True,
    help="How often candidates try to take the Lease.",
)
@_opt(
    "--resync-period",
    env="RESYNC_PERIOD",
    default="5m",
    type=DURATION,
    show_default=True,
    help="A full reconcile pass this often even without any change (changes are watched).",
)
@_opt("--kubeconfig", env="KUBECONFIG", default="", help="Kubeconfig path; in-cluster config when empty.")
@_opt("--kube-api-qps", env="KUBE_API_QPS", default=5.0, type=float, help="Client-side API request rate.")
@_opt("--kube-api-burst", env="KUBE_API_BURST", default=10, type=int, help="Client-side API request burst.")
@_opt("--feature-gates", env="FEATURE_GATES", default="", help="Comma list of Gate=true|false.")
@_opt(
    "--imex-mode",
    env="IMEX_MODE",
    default="driverManaged",
    show_default=True,
    help="IMEX deployment mode: driverManaged (a DaemonSet per ComputeDomain) or hostManaged (the nodes "
    "run nvidia-imex; needs the HostManagedIMEXDaemon feature gate).",
)
@_opt(
    "--imex-isolation",
    env="IMEX_ISOLATION",
    default="domain",
    show_default=True,
    help="IMEX isolation strategy: domain, or channel (not yet supported).",
)
@_opt(
    "--simulate",
    env="NVDRA_SIMULATE",
    default="",
    help="Simulated node profile of the cluster's plugins; the CD daemons get it too (fake IMEX).",
)
@logging_options()
def main(verbosity: int, **f: Any) -> None:
    """Reconcile ComputeDomains: DaemonSets, claim templates, cliques, status."""
    configure_logging(verbosity)
    try:
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
                duration_s=f["leader_election_lease_duration"],
                renew_deadline_s=f["leader_election_renew_deadline"],
                retry_period_s=f["leader_election_retry_period"],
            )
        extra = tuple(n for n in f["additional_namespaces"].split(",") if n)
        controller = ComputeDomainController(
            kube, settings, elector=elector, additional_namespaces=extra, resync_s=f["resync_period"]
        )
        if f["http_endpoint"]:
            _serve_metrics(f["http_endpoint"], f["metrics_path"], controller.metrics)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        controller.run(stop)
    except NvdraError as exc:
        click.echo(f"nvdra-cd-controller: {exc}", err=True)
        sys.exit(1)
