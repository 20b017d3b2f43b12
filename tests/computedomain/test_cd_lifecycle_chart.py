"""A ComputeDomain from create to delete, every nvdra process under the ServiceAccount the chart gives it.

The strict in-process API server authorizes each request with the chart's rendered RBAC: the controller
runs its own loop (informers, as ``nvdra-cd-controller``) as ``nvdra-controller``, the CD plugins as
``nvdra-kubeletplugin``, the IMEX daemons (watching their clique) as the daemon account. What Kubernetes
itself does (DaemonSet controller, scheduler, kubelet) is the simulation's stand-ins, writing as the
administrator. The domain must get Ready, a workload channel claim per node must be prepared, and after
the delete nothing of it may be left — DaemonSet, templates, cliques, node labels, daemon pods, CDI files
— so that its namespace can be deleted.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.imex import DOMAIN_LABEL, daemon_set_name
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.kubeletplugin.objects import DAEMON_SETS, NAMESPACES, RESOURCE_CLAIM_TEMPLATES
from nvdra.plugins.computedomain.kube import COMPUTE_DOMAINS
from nvdra.plugins.computedomain.simcluster import SimCluster
from tests.deploy.chart_identities import ChartCluster, chart_cluster

ACCOUNTS = {
    "controller": ("nvdra-controller", "cd-controller"),
    "plugin": ("nvdra-kubeletplugin", "cd-plugin"),
    "daemon": ("compute-domain-daemon-service-account", "cd-daemon"),
}


@pytest.fixture
def chart() -> Iterator[ChartCluster]:
    with (
        tempfile.TemporaryDirectory(prefix="cd-chart-") as directory,
        chart_cluster(Path(directory)) as cluster,
    ):
        yield cluster


def compute_domain_lifecycle(chart: ChartCluster, namespace: str = "team") -> None:
    """The whole lifecycle in ``chart``'s cluster, a domain in a new ``namespace`` (reusable: the
    RBAC usage test runs it in its own cluster to see what each account used)."""
    apis = {
        role: KubernetesKubeApi.from_kubeconfig(str(chart.kubeconfig(account)), qps=0, component=component)
        for role, (account, component) in ACCOUNTS.items()
    }
    objects = chart.store.objects
    objects.create_object(NAMESPACES, {"metadata": {"name": namespace}})
    try:
        with (
            tempfile.TemporaryDirectory(prefix="cd-life-") as base,
            tempfile.TemporaryDirectory(prefix="cdl-") as sock,
            SimCluster(
                Path(base),
                Path(sock),
                nodes=2,
                namespace=chart.namespace,
                store=chart.store,
                apis=apis,
                background_controller=True,
            ) as c,
        ):
            cd = c.create_domain("job", namespace, num_nodes=2)
            uid = cd["metadata"]["uid"]
            refs = c.schedule_workload(cd, c.nodes)  # waits for the workload template
            assert objects.all_objects(DAEMON_SETS)[0]["metadata"]["name"] == daemon_set_name(uid)
            assert len(objects.list_objects(RESOURCE_CLAIM_TEMPLATES, None, label_selector=DOMAIN_LABEL)) == 2
            c.run_until(
                "the domain Ready and both channel claims prepared",
                lambda: (
                    (c.domain("job", namespace).get("status") or {}).get("status") == "Ready"
                    and all(not n.pending for n in c.nodes)
                ),
                max_rounds=1500,
            )
            assert [len(n.prepared) for n in c.nodes] == [1, 1]
            assert all(n.errors == [] for n in c.nodes), [n.errors for n in c.nodes]
            c.release_workload(refs, c.nodes)
            c.delete_domain("job", namespace)
            c.run_until(
                "everything of the domain gone",
                lambda: not objects.all_objects(COMPUTE_DOMAINS) and not c.leftovers(uid),
                max_rounds=1500,
            )
            failures = c.controller.metrics.failures
            assert not [k for k in failures if k[2] == 403], failures
    finally:
        for api in apis.values():
            api.close()
    objects.delete_object(NAMESPACES, namespace)  # stays Terminating while anything in it has a finalizer
    assert [n["metadata"]["name"] for n in objects.all_objects(NAMESPACES)].count(namespace) == 0
    for role, (account, _) in ACCOUNTS.items():
        assert chart.used(account), f"{role} made no request as {account}"


@pytest.mark.slow
def test_compute_domain_lifecycle_under_chart_identities(chart: ChartCluster) -> None:
    compute_domain_lifecycle(chart)
