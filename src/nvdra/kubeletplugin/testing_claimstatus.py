"""Who may write a ResourceClaim's status: the kube-apiserver's synthetic authorization checks.

Since Kubernetes 1.36 (``DRAResourceClaimGranularStatusAuthorization``, beta, on by default) an update
of ``resourceclaims/status`` is authorized twice: once as the request itself (``update`` or ``patch`` of
``resourceclaims/status``), then, by the claim's status strategy, per field that changed:

- ``status.allocation`` or ``status.reservedFor`` changed: the caller needs the request's verb on the
  synthetic subresource ``resourceclaims/binding``, cluster-wide (the scheduler's "bind claim");
- ``status.devices`` changed for a driver (an entry added, removed or different, keyed by driver,
  pool, device and shareID), on an allocated claim: the caller needs, on ``resourceclaims/driver``
  named after that driver in the claim's namespace, the verb ``associated-node:<verb>`` when it is a
  ServiceAccount whose token names the node the claim is allocated on (a kubelet plugin's pod), or
  ``arbitrary-node:<verb>`` (which also serves that case).

A denial is a 422 (the status strategy's validation), not a 403: ``ResourceClaim.resource.k8s.io
"<name>" is invalid: status.devices: Forbidden: changing status.devices requires
resource="resourceclaims/driver", verb="[associated-node:update arbitrary-node:update]" permission:
<the RBAC denial>``. A kubelet plugin's ClusterRole therefore names ``resourceclaims/driver`` with
``resourceNames: [<driver>]`` and ``associated-node:update``; ``resourceclaims/status`` alone is refused.
"""

from __future__ import annotations

__all__ = ["NODE_NAME_EXTRA", "allocated_node", "claim_status_denial", "modified_drivers"]

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nvdra.kubeletplugin.testing_rbac import Attributes, forbidden_message
from nvdra.kubeletplugin.types import device_status_key

NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
_GROUP = "resource.k8s.io"
_SERVICE_ACCOUNT = re.compile(r"^system:serviceaccount:[^:]+:[^:]+$")
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def modified_drivers(new_status: Mapping[str, Any], old_status: Mapping[str, Any]) -> list[str]:
    """The drivers whose ``status.devices`` entries were added, removed or changed, sorted."""
    old = {device_status_key(d): _canonical(d) for d in old_status.get("devices") or []}
    drivers: set[str] = set()
    for entry in new_status.get("devices") or []:
        key = device_status_key(entry)
        before = old.pop(key, None)
        if before is None or before != _canonical(entry):
            drivers.add(key[0])
    drivers.update(key[0] for key in old)
    return sorted(drivers)


def allocated_node(status: Mapping[str, Any]) -> str:
    """The one node an allocation is pinned to (a single ``metadata.name In [node]`` field term), else ""."""
    selector = (status.get("allocation") or {}).get("nodeSelector") or {}
    terms = selector.get("nodeSelectorTerms") or []
    if len(terms) != 1 or terms[0].get("matchExpressions") or len(terms[0].get("matchFields") or []) != 1:
        return ""
    field = terms[0]["matchFields"][0]
    values = field.get("values") or []
    if field.get("key") != "metadata.name" or field.get("operator") != "In" or len(values) != 1:
        return ""
    return str(values[0])


def _associated(user: str, extra: Mapping[str, Sequence[str]], node: str) -> bool:
    names = list(extra.get(NODE_NAME_EXTRA) or [])
    return bool(
        node
        and _SERVICE_ACCOUNT.match(user)
        and len(names) == 1
        and _NODE_NAME.match(names[0])
        and names[0] == node
    )


def claim_status_denial(
    allows: Callable[[Attributes], bool],
    *,
    user: str,
    extra: Mapping[str, Sequence[str]],
    verb: str,
    claim_name: str,
    namespace: str,
    new: Mapping[str, Any],
    old: Mapping[str, Any],
    granted: list[Attributes] | None = None,
) -> str | None:
    """The 422 message refusing this update of ``resourceclaims/status``, or None when it is allowed.

    Args:
        allows: the authorizer (RBAC) of one synthetic request.
        user, extra: who asks (``extra`` holds the token's node name for a pod-bound ServiceAccount).
        verb: the request's verb (``update`` or ``patch``).
        new, old: the claim after and before the update.
        granted: when given, each synthetic request that was allowed is appended (an audit of use).
    """
    new_status, old_status = new.get("status") or {}, old.get("status") or {}
    problems: list[str] = []
    if any(
        _canonical(new_status.get(f)) != _canonical(old_status.get(f)) for f in ("allocation", "reservedFor")
    ):
        binding = Attributes(
            user=user, verb=verb, api_group=_GROUP, resource="resourceclaims", subresource="binding"
        )
        if allows(binding):
            if granted is not None:
                granted.append(binding)
        else:
            problems.append(
                "status.allocation: Forbidden: changing status.allocation or status.reservedFor requires "
                f'resource="resourceclaims/binding", verb="{verb}" permission: {forbidden_message(binding)}'
            )
    if new_status.get("allocation"):
        associated = _associated(user, extra, allocated_node(new_status))
        verbs = ([f"associated-node:{verb}"] if associated else []) + [f"arbitrary-node:{verb}"]
        for driver in modified_drivers(new_status, old_status):
            tried = [
                Attributes(
                    user=user,
                    verb=v,
                    api_group=_GROUP,
                    resource="resourceclaims",
                    subresource="driver",
                    namespace=namespace,
                    name=driver,
                )
                for v in verbs
            ]
            allowed = next((a for a in tried if allows(a)), None)
            if allowed is not None:
                if granted is not None:
                    granted.append(allowed)
                continue
            problems.append(
                "status.devices: Forbidden: changing status.devices requires "
                f'resource="resourceclaims/driver", verb="[{" ".join(verbs)}]" permission: '
                f"{forbidden_message(tried[0])}"
            )
    if not problems:
        return None
    detail = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
    return f'ResourceClaim.resource.k8s.io "{claim_name}" is invalid: {detail}'
