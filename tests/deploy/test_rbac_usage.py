"""Each process runs under the ServiceAccount the chart gives it; what it used must be what it is granted.

The API server authorizes every request with the chart's rendered RBAC (a missing verb is a 403 the
process meets, and its flow fails here), and records what each account did. The last test compares,
account by account, every (verb, API group, resource) used with every one granted: nothing missing,
nothing unused.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.imex import Settings
from nvdra.kubeletplugin import ClaimRef, KubeletClient, KubernetesKubeApi
from nvdra.kubeletplugin.objects import DAEMON_SETS, RESOURCE_CLAIM_TEMPLATES, RESOURCE_CLAIMS
from nvdra.plugins.computedomain.controller import ComputeDomainController
from nvdra.plugins.computedomain.kube import COMPUTE_DOMAINS
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
from tests.computedomain.test_cd_lifecycle_chart import (
    compute_domain_lifecycle,
    controller_rereads_after_conflicts,
)
from tests.deploy.chart_identities import ChartCluster, chart_cluster
from tests.plugin_harness import wait_for
from tests.plugins.conftest import DRIVER, NODE, PROFILE, allocated_claim, result

KUBELET_PLUGIN = "nvdra-kubeletplugin"
CONTROLLER = "nvdra-controller"
DAEMON = "compute-domain-daemon-service-account"

# The GPU plugin runs here, so its part of the chart must be on (the default is ComputeDomains only).
GPUS_ON = {"resources": {"gpus": {"enabled": True}}}
# The processes that run under each account: all of them must have run before the comparison.
EXPECTED = {KUBELET_PLUGIN: {"gpu plugin", "cd plugin"}, CONTROLLER: {"controller"}, DAEMON: {"cd daemon"}}
USED_BY: dict[str, list[str]] = {}


def stale_slice(prefix: str) -> dict[str, Any]:
    """A slice of an older publication of this node's pool (index 0 when ``prefix`` is "00000")."""
    return {
        "metadata": {"generateName": f"{prefix}-{DRIVER}-{NODE}-"},
        "spec": {
            "driver": DRIVER,
            "nodeName": NODE,
            "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "gpu-0"}],
        },
    }


def pinned(claim: dict[str, Any]) -> dict[str, Any]:
    """``claim`` with the node selector the scheduler writes into every node-local allocation."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
    claim["status"]["allocation"]["nodeSelector"] = {"nodeSelectorTerms": [term]}
    return claim


def device_status(chart: ChartCluster, ref: ClaimRef) -> list[dict[str, Any]]:
    claim = chart.store.get_object(RESOURCE_CLAIMS, ref.name, ref.namespace)
    return list((claim.get("status") or {}).get("devices") or [])


@pytest.fixture(scope="module")
def chart() -> Iterator[ChartCluster]:
    with (
        tempfile.TemporaryDirectory(prefix="rbac-") as directory,
        chart_cluster(Path(directory), GPUS_ON) as cluster,
    ):
        cluster.store.add_node(NODE)
        yield cluster


def test_gpu_plugin_publishes_and_prepares_under_its_chart_identity(chart: ChartCluster) -> None:
    with tempfile.TemporaryDirectory(prefix="gpu-") as directory:
        base = Path(directory)
        config = PluginConfig(
            node_name=NODE,
            # A plugin pod's token names its node (the chart's slice policy and 1.36's device-status
            # check both rely on it).
            kubeconfig=str(chart.kubeconfig(KUBELET_PLUGIN, node=NODE)),
            cdi_root=base / "cdi",
            simulate=PROFILE,
            kubelet_registrar_directory_path=base / "reg",
            kubelet_plugins_directory_path=base / "plugins",
            healthcheck_port=0,
        )
        # Two slices of an older publication: the plugin updates its own (index 0), deletes the other.
        for prefix in ("00000", "stale"):
            chart.store.create_resource_slice(stale_slice(prefix))
        # As the console script serves: watching its own Node for the fabric-topology label.
        with (
            serve(config, on_node_change=lambda: None) as plugin,
            KubeletClient(config.kubelet_registrar_directory_path) as kubelet,
        ):
            registered = kubelet.register(config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock")
            wait_for("the plugin's one slice", lambda: len(chart.store.resource_slices()) == 1)
            wait_for("the Node watch", lambda: ("watch", "", "nodes") in chart.used(KUBELET_PLUGIN))
            meta = chart.store.add_claim(pinned(allocated_claim([result("gpu-1")])))["metadata"]
            ref = ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
            assert registered.prepare([ref])[ref.uid].error == ""
            # The device status write is best-effort (a refusal is only logged) and may land just
            # after the answer: wait for it.
            wait_for(
                "gpu-1 in the claim's status",
                lambda: [d["device"] for d in device_status(chart, ref)] == ["gpu-1"],
            )
            assert registered.unprepare([ref]) == {ref.uid: ""}
            wait_for("the claim's device status cleared", lambda: device_status(chart, ref) == [])
            assert plugin is not None
    USED_BY.setdefault(KUBELET_PLUGIN, []).append("gpu plugin")


def test_controller_reconciles_a_domain_under_its_chart_identity(chart: ChartCluster) -> None:
    """The controller as its console script builds it (informers, its loop), from create to delete."""
    api = KubernetesKubeApi.from_kubeconfig(
        str(chart.kubeconfig(CONTROLLER)), qps=0, component="cd-controller"
    )
    controller = ComputeDomainController(api, Settings(namespace=chart.namespace), resync_s=1.0)
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    loop.start()
    objects = chart.store.objects
    try:
        objects.create_object(
            COMPUTE_DOMAINS,
            {
                "metadata": {"name": "job", "namespace": "team"},
                "spec": {"numNodes": 0, "channel": {"resourceClaimTemplate": {"name": "job-channel"}}},
            },
        )
        wait_for(
            "the domain's DaemonSet and templates",
            lambda: (
                objects.all_objects(DAEMON_SETS) and len(objects.all_objects(RESOURCE_CLAIM_TEMPLATES)) >= 2
            ),
        )
        objects.delete_object(COMPUTE_DOMAINS, "job", "team")
        wait_for(
            "everything of the domain gone",
            lambda: (
                not objects.all_objects(DAEMON_SETS)
                and not objects.all_objects(RESOURCE_CLAIM_TEMPLATES)
                and not objects.all_objects(COMPUTE_DOMAINS)
            ),
        )
    finally:
        stop.set()
        loop.join(10)
        api.close()
    USED_BY.setdefault(CONTROLLER, []).append("controller")


def test_compute_domain_lifecycle_under_chart_identities(chart: ChartCluster) -> None:
    """Engineer B's lifecycle (controller, CD plugins, IMEX daemons), here in this module's cluster."""
    compute_domain_lifecycle(chart, "lifecycle")
    ip_mode = "IMEXDaemonsWithDNSNames=false,ComputeDomainCliques=false"
    compute_domain_lifecycle(chart, "ip-mode", feature_gates=ip_mode)
    controller_rereads_after_conflicts(chart)
    for account, process in (
        (CONTROLLER, "controller"),
        (KUBELET_PLUGIN, "cd plugin"),
        (DAEMON, "cd daemon"),
    ):
        USED_BY.setdefault(account, []).append(process)


def _covered(used: tuple[str, str, str], granted: set[tuple[str, str, str]]) -> bool:
    verb, group, resource = used
    return any(
        v in ("*", verb) and g in ("*", group) and r in ("*", resource, f"*/{resource.partition('/')[2]}")
        for v, g, r in granted
    )


@pytest.mark.parametrize("account", [KUBELET_PLUGIN, CONTROLLER, DAEMON])
def test_what_each_account_used_is_what_the_chart_grants(chart: ChartCluster, account: str) -> None:
    if not EXPECTED[account] <= set(USED_BY.get(account, [])):
        pytest.skip(f"not every process of {account} ran here (run the whole module)")
    used, granted = chart.used(account), chart.granted(account)
    missing = sorted(u for u in used if not _covered(u, granted))
    unused = sorted(g for g in granted if not any(_covered(u, {g}) for u in used))
    assert not missing and not unused, (
        f"{account}, as used by {', '.join(USED_BY[account])}:\n  used but not granted: {missing}\n"
        f"  granted but not used: {unused}"
    )
