"""ComputeDomains against API servers serving one ``resource.k8s.io`` version each (1.32 to 1.36).

The simulated rack of :class:`SimCluster`, but every driver call (CD plugins, controller, daemons) goes
over HTTP through the ``kubernetes``-client adapter to an in-memory API server that plays a release and
serves a single version: the controller's ResourceClaimTemplates, the plugins' ResourceSlices and the
claims they read all travel at that version, in its shape.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.imex import DOMAIN_LABEL
from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin._kube import KubernetesKubeApi
from nvdra.kubeletplugin.objects import RESOURCE_CLAIM_TEMPLATES
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS, CountingApi
from nvdra.plugins.computedomain.simcluster import SimCluster

JsonObject = dict[str, Any]

MODES = [
    pytest.param(("v1",), (1, 36), id="v1-only-1.36"),
    pytest.param(("v1beta2",), (1, 33), id="v1beta2-only-1.33"),
    pytest.param(("v1beta1",), (1, 32), id="v1beta1-only-1.32"),
]


class VersionedCluster(SimCluster):
    """A SimCluster whose drivers reach its store only through HTTP, at the one version served."""

    def __init__(
        self, base: Path, sock_base: Path, *, served: tuple[str, ...], release: tuple[int, int], nodes: int
    ) -> None:
        self._client: KubernetesKubeApi | None = None
        super().__init__(base, sock_base, nodes=nodes)
        self.store = FakeKube(served_versions=served, kubernetes_version=release)
        for node in self.nodes:
            self.store.add_node(node.name)
        self.server = ApiServer(self.store)
        for rt in (CLIQUES, COMPUTE_DOMAINS):
            self.server.register(rt)
        self.requests: list[tuple[str, str, JsonObject]] = []
        inner = self.server.route

        def route(method: str, path: str, query: dict[str, str], body: JsonObject) -> tuple[int, JsonObject]:
            self.requests.append((method, path, body))
            return inner(method, path, query, body)

        self.server.route = route  # type: ignore[method-assign]
        kubeconfig = self.server.write_kubeconfig(base / "versioned-kubeconfig")
        self._client = KubernetesKubeApi.from_kubeconfig(str(kubeconfig), qps=0)
        self.controller = self.new_controller()

    def api(self, role: str) -> Any:
        """The HTTP client (once built), counted under ``role``."""
        inner = self._client if self._client is not None else self.store
        return CountingApi(inner, role, self.counter, self._count_lock)

    def __enter__(self) -> VersionedCluster:
        self._stack.enter_context(self.server)
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._client is not None:
            self._client.close()

    def resource_versions(self) -> set[str]:
        """The resource.k8s.io versions the drivers' requests named (discovery excluded)."""
        return {p.split("/")[3] for _, p, _ in self.requests if p.startswith("/apis/resource.k8s.io/")}

    def resource_writes(self, plural: str) -> list[JsonObject]:
        """Bodies POSTed or PUT to a resource.k8s.io collection or object of ``plural``."""
        return [
            b
            for m, p, b in self.requests
            if m in ("POST", "PUT") and p.startswith("/apis/resource.k8s.io/") and f"/{plural}" in p
        ]


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="nvdra-cdv-") as sock:
        yield tmp_path, Path(sock)


@pytest.mark.parametrize(("served", "release"), MODES)
def test_domain_reaches_ready_and_channels_are_prepared_at_the_only_served_version(
    dirs: tuple[Path, Path], served: tuple[str, ...], release: tuple[int, int]
) -> None:
    """Two trays: templates, slices and claims travel at the served version; the domain gets Ready."""
    (version,) = served
    with VersionedCluster(*dirs, served=served, release=release, nodes=2) as c:
        cd = c.create_domain("job", num_nodes=2)
        c.schedule_workload(cd, c.nodes)
        c.run_until("channels prepared", lambda: all(not n.pending for n in c.nodes))
        assert c.domain("job")["status"]["status"] == "Ready"
        assert [e for n in c.nodes for e in n.errors] == []
        assert c.resource_versions() == {version}

        templates = c.resource_writes("resourceclaimtemplates")
        assert len(templates) == 2
        for body in templates:
            assert body["apiVersion"] == f"resource.k8s.io/{version}"
            (request,) = body["spec"]["spec"]["devices"]["requests"]
            if version == "v1beta1":
                assert "exactly" not in request and request["deviceClassName"].endswith(".nvidia.com")
            else:
                assert set(request) == {"name", "exactly"}
        stored = c.store.objects.list_objects(RESOURCE_CLAIM_TEMPLATES, label_selector=DOMAIN_LABEL)
        assert sorted(t["spec"]["spec"]["devices"]["requests"][0]["name"] for t in stored) == [
            "channel",
            "daemon",
        ]

        slices = c.resource_writes("resourceslices")
        assert {b["spec"]["nodeName"] for b in slices} == {n.name for n in c.nodes}
        for body in slices:
            assert body["apiVersion"] == f"resource.k8s.io/{version}"
            device = body["spec"]["devices"][0]
            assert ("basic" in device) == (version == "v1beta1")


@pytest.mark.parametrize(("served", "release"), MODES)
def test_a_restarted_controller_finds_its_templates_at_the_served_version(
    dirs: tuple[Path, Path], served: tuple[str, ...], release: tuple[int, int]
) -> None:
    """A second controller lists the templates back (converted to v1) and creates no duplicate."""
    with VersionedCluster(*dirs, served=served, release=release, nodes=1) as c:
        c.create_domain("job", num_nodes=1)
        c.controller.reconcile_once()
        before = len(c.resource_writes("resourceclaimtemplates"))
        again = c.new_controller()
        actions = again.reconcile_once()
        assert [a for a in actions if a.kind == "ResourceClaimTemplate"] == []
        assert len(c.resource_writes("resourceclaimtemplates")) == before == 2
