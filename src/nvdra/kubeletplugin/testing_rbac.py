"""Kubernetes RBAC for the test :class:`~nvdra.kubeletplugin.testing_apiserver.ApiServer`.

:class:`Rbac` evaluates Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (the manifests a Helm
chart renders) the way the kube-apiserver's RBAC authorizer does:

- a request is (user, groups, verb, API group, resource[/subresource], namespace, name), or a
  non-resource path; the verb is get/list/watch/create/update/patch/delete/deletecollection;
- a ClusterRoleBinding grants its ClusterRole everywhere; a RoleBinding grants its Role or ClusterRole
  only in the binding's namespace;
- subjects: ``ServiceAccount`` (the user ``system:serviceaccount:<ns>:<name>``), ``User``, ``Group``;
  every service account is also in ``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and
  ``system:authenticated``;
- a rule matches when its verbs, apiGroups and resources contain the request's (``*`` wildcards,
  ``*/status`` and ``pods/*`` forms) and, if it names ``resourceNames``, the request's object name
  (so never a create or a list); non-resource rules match ``nonResourceURLs`` (a trailing ``*`` is a
  prefix); discovery (``/api``, ``/apis``, ``/version``, …) is open to every authenticated user, as the
  default ``system:discovery`` binding makes it;
- a denial reads as the apiserver's: ``<resource>.<group> "<name>" is forbidden: User "<user>" cannot
  <verb> resource "<resource>[/<sub>]" in API group "<group>" in the namespace "<ns>"`` (or ``at the
  cluster scope``).
"""

from __future__ import annotations

__all__ = ["Attributes", "Grant", "Rbac", "forbidden_message", "service_account_user", "used_but_not_granted"]

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

_DISCOVERY = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz", "/livez", "/readyz")


def service_account_user(namespace: str, name: str) -> str:
    """The user name a ServiceAccount token authenticates as."""
    return f"system:serviceaccount:{namespace}:{name}"


def _groups_of(user: str) -> tuple[str, ...]:
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return ("system:serviceaccounts", f"system:serviceaccounts:{parts[2]}", "system:authenticated")
    return ("system:authenticated",)


@attrs.frozen(kw_only=True)
class Attributes:
    """One request as the authorizer sees it (``resource`` empty: a non-resource ``path``)."""

    user: str
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups the user is in (service accounts: their namespace's and the global ones)."""
        return _groups_of(self.user)

    @property
    def full_resource(self) -> str:
        """``resource`` or ``resource/subresource``."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@attrs.frozen(kw_only=True)
class Grant:
    """One (verb, group, resource[/sub]) a rule grants, and where: ``namespace`` "" means everywhere."""

    verb: str
    api_group: str
    resource: str
    namespace: str = ""
    resource_names: tuple[str, ...] = ()


@attrs.frozen
class _Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str]
    non_resource_urls: tuple[str, ...]

    @classmethod
    def parse(cls, rule: Mapping[str, Any], where: str) -> _Rule:
        verbs = rule.get("verbs")
        if not verbs:
            raise ValueError(f"{where}: a rule needs verbs, got {rule!r}")
        return cls(
            verbs=frozenset(verbs),
            api_groups=frozenset(rule.get("apiGroups") or []),
            resources=frozenset(rule.get("resources") or []),
            resource_names=frozenset(rule.get("resourceNames") or []),
            non_resource_urls=tuple(rule.get("nonResourceURLs") or []),
        )

    def _resource_matches(self, attrs_: Attributes) -> bool:
        wanted = attrs_.full_resource
        for resource in self.resources:
            if resource in ("*", wanted):
                return True
            if attrs_.subresource and resource in (f"*/{attrs_.subresource}", f"{attrs_.resource}/*"):
                return True
        return False

    def allows(self, attrs_: Attributes) -> bool:
        if not ({"*", attrs_.verb} & self.verbs):
            return False
        if not attrs_.resource:
            return any(
                url == attrs_.path or (url.endswith("*") and attrs_.path.startswith(url[:-1]))
                for url in self.non_resource_urls
            )
        if not ({"*", attrs_.api_group} & self.api_groups) or not self._resource_matches(attrs_):
            return False
        return not self.resource_names or attrs_.name in self.resource_names


@attrs.frozen
class _Binding:
    namespace: str  # "" for a ClusterRoleBinding
    role_kind: str
    role_name: str
    users: frozenset[str]
    groups: frozenset[str]


class Rbac:
    """An RBAC authorizer over rendered manifests (other kinds among them are ignored).

    Raises (constructor):
        ValueError: a binding or rule that the apiserver would refuse (named by kind/namespace/name).
    """

    def __init__(self, manifests: Iterable[Mapping[str, Any]]) -> None:
        self._roles: dict[tuple[str, str, str], tuple[_Rule, ...]] = {}  # (kind, namespace, name)
        self._bindings: list[_Binding] = []
        for doc in manifests:
            kind = doc.get("kind")
            meta = doc.get("metadata") or {}
            where = f"{kind} {meta.get('namespace', '')}/{meta.get('name')}"
            if kind in ("Role", "ClusterRole"):
                namespace = meta.get("namespace", "") if kind == "Role" else ""
                rules = tuple(_Rule.parse(r, where) for r in doc.get("rules") or [])
                self._roles[(kind, namespace, meta["name"])] = rules
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                self._bindings.append(self._binding(doc, where))

    @staticmethod
    def _binding(doc: Mapping[str, Any], where: str) -> _Binding:
        meta = doc.get("metadata") or {}
        ref = doc.get("roleRef") or {}
        if ref.get("kind") not in ("Role", "ClusterRole") or not ref.get("name"):
            raise ValueError(f"{where}: roleRef must name a Role or ClusterRole, got {ref!r}")
        if doc["kind"] == "ClusterRoleBinding" and ref["kind"] == "Role":
            raise ValueError(f"{where}: a ClusterRoleBinding can only reference a ClusterRole")
        users: set[str] = set()
        groups: set[str] = set()
        for subject in doc.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                namespace = subject.get("namespace") or meta.get("namespace")
                if not namespace:
                    raise ValueError(
                        f"{where}: ServiceAccount subject {subject.get('name')!r} needs a namespace"
                    )
                users.add(service_account_user(namespace, subject["name"]))
            elif subject.get("kind") == "User":
                users.add(subject["name"])
            elif subject.get("kind") == "Group":
                groups.add(subject["name"])
            else:
                raise ValueError(
                    f"{where}: subject kind {subject.get('kind')!r}: ServiceAccount, User or Group"
                )
        namespace = meta.get("namespace", "") if doc["kind"] == "RoleBinding" else ""
        if doc["kind"] == "RoleBinding" and not namespace:
            raise ValueError(f"{where}: a RoleBinding needs a namespace")
        return _Binding(namespace, ref["kind"], ref["name"], frozenset(users), frozenset(groups))

    def _rules_for(self, user: str) -> Iterable[tuple[str, _Rule]]:
        """(namespace the rule is limited to, or "" for everywhere; rule) for every binding of ``user``."""
        groups = set(_groups_of(user))
        for binding in self._bindings:
            if user not in binding.users and not (groups & binding.groups):
                continue
            role_ns = binding.namespace if binding.role_kind == "Role" else ""
            for rule in self._roles.get((binding.role_kind, role_ns, binding.role_name), ()):
                yield binding.namespace, rule

    def allows(self, request: Attributes) -> bool:
        """Whether RBAC (plus the default discovery grant) allows ``request``."""
        if not request.resource and any(
            url == request.path or (url.endswith("*") and request.path.startswith(url[:-1]))
            for url in _DISCOVERY
        ):
            return request.verb == "get"
        for namespace, rule in self._rules_for(request.user):
            if namespace and (not request.resource or namespace != request.namespace):
                continue
            if rule.allows(request):
                return True
        return False

    def grants(self, user: str) -> set[Grant]:
        """Every (verb, group, resource, namespace) granted to ``user``, wildcards left as written."""
        out: set[Grant] = set()
        for namespace, rule in self._rules_for(user):
            for verb in rule.verbs:
                for group in rule.api_groups:
                    for resource in rule.resources:
                        out.add(
                            Grant(
                                verb=verb,
                                api_group=group,
                                resource=resource,
                                namespace=namespace,
                                resource_names=tuple(sorted(rule.resource_names)),
                            )
                        )
        return out

    def users(self) -> list[str]:
        """Every user a binding names (service accounts as ``system:serviceaccount:<ns>:<name>``)."""
        return sorted({u for b in self._bindings for u in b.users})


def forbidden_message(request: Attributes) -> str:
    """The apiserver's 403 message for a denied request."""
    if not request.resource:
        return f'forbidden: User "{request.user}" cannot {request.verb} path "{request.path}"'
    qualified = f"{request.resource}.{request.api_group}" if request.api_group else request.resource
    subject = f'{qualified} "{request.name}"' if request.name else qualified
    where = f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
    return (
        f'{subject} is forbidden: User "{request.user}" cannot {request.verb} resource '
        f'"{request.full_resource}" in API group "{request.api_group}" {where}'
    )


def used_but_not_granted(rbac: Rbac, used: Sequence[Attributes]) -> list[Attributes]:
    """The requests in ``used`` that ``rbac`` does not allow (an audit log checked afterwards)."""
    return [request for request in used if not rbac.allows(request)]
