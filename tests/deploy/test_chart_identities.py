"""The CD kubelet plugin runs under the chart's own identity: the in-process API server authorizes its
requests with the Roles and bindings the chart renders, as a real kube-apiserver with RBAC does (the
GPU plugin and the controller: tests/deploy/test_rbac_usage.py).

A verb the code uses and the chart does not grant makes a step fail here (403), and the audit of what
the plugin did must lie within the chart's grants.
"""

from __future__ import annotations

from pathlib import Path

from nvdra.kubeletplugin import ApiServer, FakeKube, KubeletClient
from nvdra.kubeletplugin.testing_rbac import Rbac, service_account_user
from nvdra.plugins.computedomain.serve import serve as serve_cd
from tests.deploy.helm import NAMESPACE, render
from tests.plugin_harness import cd_plugin_config, wait_for

PLUGIN_ACCOUNT = "nvdra-kubeletplugin"
USER = service_account_user(NAMESPACE, PLUGIN_ACCOUNT)


def used(server: ApiServer) -> set[tuple[str, str, str]]:
    """(verb, group, resource[/subresource]) of every request the plugin's account made."""
    out = set()
    for request in server.audit(USER):
        if request.resource:
            resource = (
                f"{request.resource}/{request.subresource}" if request.subresource else request.resource
            )
            out.add((request.verb, request.api_group, resource))
    return out


def test_cd_plugin_starts_and_publishes_under_its_chart_identity(sockdir: Path) -> None:
    """The CD plugin's start, registration and channel slice publishing pass the rendered RBAC."""
    rbac = Rbac(render({}))
    store = FakeKube()
    store.add_node("n1")
    with ApiServer(store, rbac=rbac) as server:
        token = server.add_service_account(NAMESPACE, PLUGIN_ACCOUNT)
        kubeconfig = str(server.write_kubeconfig(sockdir / "kubeconfig", token=token))
        config = cd_plugin_config(sockdir, namespace=NAMESPACE, kubeconfig=kubeconfig)
        with serve_cd(config) as running, KubeletClient(sockdir / "reg") as kubelet:
            assert running.helper is not None
            kubelet.register(running.helper.registration_socket)
            wait_for("the ResourceSlice", store.resource_slices)
        calls = used(server)
    granted = {(g.verb, g.api_group, g.resource) for g in rbac.grants(USER)}
    assert calls <= granted
    assert ("create", "resource.k8s.io", "resourceslices") in calls
