"""The chart's ValidatingAdmissionPolicies enforced by the test API server, over HTTP, per identity."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin import KubernetesKubeApi
from nvdra.kubeletplugin.objects import NODES
from tests.deploy.admission import PolicyAdmission, standard_cel
from tests.deploy.chart_identities import ChartCluster, chart_cluster
from tests.deploy.helm import render

PLUGIN = "nvdra-kubeletplugin"
CONTROLLER = "nvdra-controller"


@pytest.fixture
def chart() -> Iterator[ChartCluster]:
    """A chart cluster with admission by every ValidatingAdmissionPolicy the chart renders."""
    with (
        tempfile.TemporaryDirectory(prefix="vap-") as directory,
        chart_cluster(Path(directory), admission=True) as c,
    ):
        for node in ("n1", "n2"):
            c.store.add_node(node, labels={"kubernetes.io/hostname": node})
        yield c


def api(chart: ChartCluster, account: str, node: str | None = None) -> KubernetesKubeApi:
    return KubernetesKubeApi.from_kubeconfig(str(chart.kubeconfig(account, node=node)), qps=0)


def label(value: str | None, key: str = "resource.nvidia.com/computeDomain") -> dict[str, object]:
    return {"metadata": {"labels": {key: value}}}


def test_a_kubelet_plugin_may_label_only_its_own_node_under_resource_nvidia_com(chart: ChartCluster) -> None:
    plugin = api(chart, PLUGIN, node="n1")
    try:
        assert (
            plugin.patch_object(NODES, "n1", label("cd-1"))["metadata"]["labels"][
                "resource.nvidia.com/computeDomain"
            ]
            == "cd-1"
        )
        assert (
            "resource.nvidia.com/computeDomain"
            not in plugin.patch_object(NODES, "n1", label(None))["metadata"]["labels"]
        )
        with pytest.raises(KubeApiError) as other_node:
            plugin.patch_object(NODES, "n2", label("cd-1"))
        assert other_node.value.status == 422
        assert (
            "nodes \"n2\" is invalid: : ValidatingAdmissionPolicy 'nodes-policy-nvdra' with binding "
            "'nodes-policy-nvdra' denied request: the kubelet plugin on node n1 may not modify node n2"
        ) in str(other_node.value)
        with pytest.raises(KubeApiError, match=r"only labels under resource\.nvidia\.com/ may be"):
            plugin.patch_object(NODES, "n1", label("x", key="team"))
    finally:
        plugin.close()


def test_a_token_without_a_node_is_refused_and_the_controller_may_label_any_node(chart: ChartCluster) -> None:
    unbound, controller = api(chart, PLUGIN), api(chart, CONTROLLER)
    try:
        with pytest.raises(KubeApiError, match="no node name in this service account's token"):
            unbound.patch_object(NODES, "n1", label("cd-1"))
        controller.patch_object(NODES, "n2", label("cd-2"))
        with pytest.raises(KubeApiError, match="not its spec or annotations"):
            controller.patch_object(NODES, "n2", {"spec": {"unschedulable": True}})
    finally:
        unbound.close()
        controller.close()
    assert chart.store.get_node("n2")["metadata"]["labels"]["resource.nvidia.com/computeDomain"] == "cd-2"


def slice_for(node: str) -> dict[str, object]:
    return {
        "metadata": {"generateName": f"{node}-gpu.nvidia.com-"},
        "spec": {
            "driver": "gpu.nvidia.com",
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": "gpu-0"}],
        },
    }


def test_a_kubelet_plugin_may_write_only_its_own_nodes_slices(chart: ChartCluster) -> None:
    plugin, unbound = api(chart, PLUGIN, node="n1"), api(chart, PLUGIN)
    try:
        mine = plugin.create_resource_slice(slice_for("n1"))
        with pytest.raises(
            KubeApiError, match="the kubelet plugin on node n1 may not modify ResourceSlices of node n2"
        ):
            plugin.create_resource_slice(slice_for("n2"))
        with pytest.raises(KubeApiError, match="no node name in this service account's token"):
            unbound.create_resource_slice(slice_for("n1"))
        plugin.delete_resource_slice(mine["metadata"]["name"])
    finally:
        plugin.close()
        unbound.close()
    assert chart.store.resource_slices() == []


@pytest.mark.parametrize(
    ("expression", "standard"),
    [
        (
            "m[?'k'][0].orValue('')",
            "((('k'in(m))&&(size((m)['k'])>0))?(((m)['k'])[0]):(''))",
        ),
        (
            "(a ? b : c).spec.?f.orValue(1)",
            "(((has((((a?b:c)).spec).f)))?((((a?b:c)).spec).f):(1))",
        ),
        ("x.y == 1", "x.y==1"),
    ],
)
def test_optional_chains_are_rewritten_into_standard_cel(expression: str, standard: str) -> None:
    assert standard_cel(expression).replace(" ", "") == standard


def test_other_optional_syntax_is_refused() -> None:
    with pytest.raises(ValueError, match="optional syntax other than"):
        standard_cel("m[?'k'].hasValue()")


def test_every_policy_of_the_chart_can_be_evaluated_here() -> None:
    assert len(PolicyAdmission(render({})).bound) == 2
