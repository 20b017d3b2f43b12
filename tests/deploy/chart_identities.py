"""An in-process API server that authorizes like a cluster the chart was installed in.

:func:`chart_cluster` renders the chart (offline, Helm's own engine), loads its Roles, ClusterRoles and
bindings into :class:`~nvdra.kubeletplugin.testing_rbac.Rbac`, installs its CRDs, and hands out a
kubeconfig per ServiceAccount the chart creates or binds (``nvdra-kubeletplugin``,
``nvdra-controller``, ``compute-domain-daemon-service-account``, …), plus an administrator's for the
test's own seeding. Every request a process makes with its kubeconfig is authorized as that account
(403 outside the grants) and recorded: :meth:`ChartCluster.used` is what the account did.

Example::

    with chart_cluster(tmp_path) as cluster:
        config = PluginConfig(kubeconfig=str(cluster.kubeconfig("nvdra-kubeletplugin")), ...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.testing_rbac import Attributes, Grant, Rbac, service_account_user
from tests.deploy.admission import PolicyAdmission
from tests.deploy.helm import NAMESPACE, crds, render

ADMIN_TOKEN = "chart-cluster-admin"


def service_accounts(docs: list[dict[str, Any]], namespace: str) -> list[str]:
    """The ServiceAccounts the rendered chart creates, and those its bindings name in ``namespace``."""
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    for doc in docs:
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            names |= {
                s["name"]
                for s in doc.get("subjects") or []
                if s.get("kind") == "ServiceAccount" and s.get("namespace", namespace) == namespace
            }
    return sorted(names)


def _key(request: Attributes) -> tuple[str, str, str]:
    return (request.verb, request.api_group, request.full_resource)


@attrs.define
class ChartCluster:
    """The server, the chart's RBAC, and a kubeconfig per ServiceAccount."""

    server: ApiServer
    rbac: Rbac
    namespace: str
    kubeconfigs: dict[str, Path]
    admin_kubeconfig: Path

    @property
    def store(self) -> FakeKube:
        """The objects behind the server (test seeding and inspection; never authorized)."""
        return self.server.store

    def kubeconfig(self, account: str, *, node: str | None = None) -> Path:
        """The kubeconfig of the chart's ServiceAccount ``account`` (KeyError naming the known ones);
        with ``node``, of a token bound to a pod on that node (its name in the token's user info, which
        the chart's ValidatingAdmissionPolicies check)."""
        if account not in self.kubeconfigs:
            raise KeyError(f"no ServiceAccount {account!r} in the chart; known: {sorted(self.kubeconfigs)}")
        if node is None:
            return self.kubeconfigs[account]
        path = self.kubeconfigs[account].with_name(f"kubeconfig-{account}-{node}")
        if not path.exists():
            token = self.server.add_service_account(self.namespace, account, node=node)
            self.server.write_kubeconfig(path, token=token)
        return path

    def user(self, account: str) -> str:
        """``system:serviceaccount:<namespace>:<account>``."""
        return service_account_user(self.namespace, account)

    def used(self, account: str) -> set[tuple[str, str, str]]:
        """Every (verb, API group, resource[/subresource]) ``account`` was allowed so far."""
        return {_key(r) for r in self.server.audit(self.user(account)) if r.resource}

    def granted(self, account: str) -> set[tuple[str, str, str]]:
        """Every (verb, API group, resource[/subresource]) the chart grants ``account`` (``*`` as written)."""
        return {_grant_key(g) for g in self.rbac.grants(self.user(account))}


def _grant_key(grant: Grant) -> tuple[str, str, str]:
    return (grant.verb, grant.api_group, grant.resource)


@contextlib.contextmanager
def chart_cluster(
    directory: Path,
    values: Mapping[str, Any] | None = None,
    *,
    store: FakeKube | None = None,
    namespace: str = NAMESPACE,
    admission: bool = False,
) -> Iterator[ChartCluster]:
    """Serve ``store`` (a new FakeKube by default) with the RBAC of the chart rendered with ``values``
    and, with ``admission``, its ValidatingAdmissionPolicies (see :mod:`tests.deploy.admission`)."""
    docs = render(dict(values or {}), namespace=namespace)
    rbac = Rbac(docs)
    policies = PolicyAdmission(docs) if admission else None
    kube = store if store is not None else FakeKube()
    with ApiServer(kube, token=ADMIN_TOKEN, rbac=rbac, admission=policies) as server:
        for crd in crds():
            server.install_crd(crd)
        directory.mkdir(parents=True, exist_ok=True)
        kubeconfigs = {
            account: server.write_kubeconfig(
                directory / f"kubeconfig-{account}", token=server.add_service_account(namespace, account)
            )
            for account in service_accounts(docs, namespace)
        }
        admin = server.write_kubeconfig(directory / "kubeconfig-admin")
        yield ChartCluster(
            server=server, rbac=rbac, namespace=namespace, kubeconfigs=kubeconfigs, admin_kubeconfig=admin
        )
