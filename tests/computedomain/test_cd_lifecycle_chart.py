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

from nvdra.imex import DOMAIN_LABEL, FINALIZER, Settings, daemon_set_name, plan
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.kubeletplugin.objects import DAEMON_SETS, NAMESPACES, NODES, RESOURCE_CLAIM_TEMPLATES, ResourceType
from nvdra.plugins.computedomain.controller import ComputeDomainController, LeaseElector
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


def compute_domain_lifecycle(
    chart: ChartCluster, namespace: str = "team", *, feature_gates: str = ""
) -> None:
    """The whole lifecycle in ``chart``'s cluster, a domain in a new ``namespace`` (reusable: the
    RBAC usage test runs it in its own cluster to see what each account used). The controller is
    leader-elected (its Lease in the driver namespace); ``feature_gates`` go to plugins and daemons
    (``IMEXDaemonsWithDNSNames=false``: IP mode, where each daemon also watches its domain)."""
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
        ):
            c = SimCluster(
                Path(base),
                Path(sock),
                nodes=2,
                namespace=chart.namespace,
                store=chart.store,
                apis=apis,
                background_controller=True,
                feature_gates=feature_gates,
            )
            elector = LeaseElector(
                c.api("controller"), namespace=chart.namespace, name="cd-controller", identity="controller-0"
            )
            c.controller = ComputeDomainController(
                c.api("controller"), c.controller.settings, elector=elector
            )
            with c:
                _lifecycle(c, namespace)
    finally:
        for api in apis.values():
            api.close()
    objects.delete_object(NAMESPACES, namespace)  # stays Terminating while anything in it has a finalizer
    assert [n["metadata"]["name"] for n in objects.all_objects(NAMESPACES)].count(namespace) == 0
    for role, (account, _) in ACCOUNTS.items():
        assert chart.used(account), f"{role} made no request as {account}"


def _lifecycle(c: SimCluster, namespace: str) -> None:
    """Create -> Ready with both channel claims prepared -> delete -> nothing left."""
    objects = c.store.objects
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


def controller_rereads_after_conflicts(chart: ChartCluster, namespace: str = "busy") -> None:
    """Each conditional write of the controller meets a 409 (someone else wrote the object after the
    controller looked) and is redone on the object it reads again: the domain's finalizer and status,
    an orphaned node label, the finalizers of a deleted domain's DaemonSet and templates."""
    api = KubernetesKubeApi.from_kubeconfig(str(chart.kubeconfig("nvdra-controller")), qps=0)
    controller = ComputeDomainController(api, Settings(namespace=chart.namespace))  # list mode: step by hand
    objects = chart.store.objects
    objects.create_object(NAMESPACES, {"metadata": {"name": namespace}})
    touch = {"metadata": {"labels": {"touched": "yes"}}}

    def perform_stale(kinds: dict[str, tuple[ResourceType, str, str | None]]) -> None:
        actions = plan(controller.observe(), controller.settings)
        for rt, name, ns in kinds.values():
            objects.patch_object(rt, name, touch, ns)  # a newer version than the plan saw
        for action in actions:
            error, _ = controller._perform(action)
            assert error is None, (action, error)

    try:
        objects.create_object(
            COMPUTE_DOMAINS,
            {
                "metadata": {"name": "busy", "namespace": namespace},
                "spec": {"numNodes": 0, "channel": {"resourceClaimTemplate": {"name": "busy-channel"}}},
            },
        )
        chart.store.add_node("orphan-node", labels={DOMAIN_LABEL: "no-such-domain"})
        perform_stale({"cd": (COMPUTE_DOMAINS, "busy", namespace), "node": (NODES, "orphan-node", None)})
        cd = objects.peek(COMPUTE_DOMAINS, "busy", namespace)
        assert FINALIZER in cd["metadata"]["finalizers"] and cd["status"]["status"] == "Ready"
        assert DOMAIN_LABEL not in objects.peek(NODES, "orphan-node")["metadata"]["labels"]
        owned = objects.all_objects(DAEMON_SETS) + objects.all_objects(RESOURCE_CLAIM_TEMPLATES)
        assert len(owned) == 3 and all(FINALIZER in o["metadata"]["finalizers"] for o in owned)
        objects.delete_object(COMPUTE_DOMAINS, "busy", namespace)
        perform_stale(
            {
                f"{o['kind']}/{o['metadata']['name']}": (  # a DaemonSet and a template share a name
                    DAEMON_SETS if o["kind"] == "DaemonSet" else RESOURCE_CLAIM_TEMPLATES,
                    o["metadata"]["name"],
                    o["metadata"]["namespace"],
                )
                for o in owned
            }
        )
        assert not objects.all_objects(DAEMON_SETS) and not objects.all_objects(RESOURCE_CLAIM_TEMPLATES)
        controller.reconcile_once()  # nothing of it left: the domain's own finalizer goes
        assert not objects.all_objects(COMPUTE_DOMAINS)
        assert controller.metrics.failures == {}
    finally:
        api.close()
    objects.delete_object(NAMESPACES, namespace)
    assert namespace not in [n["metadata"]["name"] for n in objects.all_objects(NAMESPACES)]


@pytest.mark.slow
def test_compute_domain_lifecycle_under_chart_identities(chart: ChartCluster) -> None:
    compute_domain_lifecycle(chart)


@pytest.mark.slow
def test_ip_mode_daemons_follow_their_domain_under_chart_identities(chart: ChartCluster) -> None:
    compute_domain_lifecycle(chart, feature_gates="IMEXDaemonsWithDNSNames=false,ComputeDomainCliques=false")


def test_controller_rereads_after_conflicts_under_its_chart_identity(chart: ChartCluster) -> None:
    controller_rereads_after_conflicts(chart)
