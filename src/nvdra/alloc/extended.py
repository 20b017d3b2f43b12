"""Extended resources backed by DRA (KEP-5004, feature DRAExtendedResource; alpha 1.34, beta 1.36).

A DeviceClass with ``spec.extendedResourceName`` (e.g. ``gpu.nvidia.com`` → ``nvidia.com/gpu``), and
every class under the implicit name ``deviceclass.resource.kubernetes.io/<class>``, serves a container's
``resources.limits`` (or ``requests``) of that name on a node no device plugin advertises it on. The
scheduler then allocates, for the whole pod, one special ResourceClaim annotated
``resource.kubernetes.io/extended-resource-claim: "true"``, with one ``ExactCount`` request per
container and extended resource, named ``container-<i>-request-<j>`` (``i`` the container's index, init
containers first; ``j`` the resource's index among that container's extended resources by name), its
count the quantity. When several classes name the same resource, the newest one (by
``creationTimestamp``, then name) serves it.

Pure: :func:`extended_resource_claim` builds that claim from a pod spec and the classes.
"""

from __future__ import annotations

__all__ = [
    "EXTENDED_CLAIM_ANNOTATION",
    "IMPLICIT_PREFIX",
    "extended_resource_claim",
    "extended_resource_classes",
]

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from nvdra.alloc.model import AllocationInputError
from nvdra.core.quantity import parse_quantity

EXTENDED_CLAIM_ANNOTATION = "resource.kubernetes.io/extended-resource-claim"
IMPLICIT_PREFIX = "deviceclass.resource.kubernetes.io/"


def extended_resource_classes(classes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Extended resource name → the DeviceClass serving it (explicit names and the implicit ones)."""
    named: dict[str, tuple[str, str]] = {}
    out: dict[str, str] = {}
    for cls in classes:
        meta = cls.get("metadata") or {}
        name = str(meta.get("name", ""))
        out[IMPLICIT_PREFIX + name] = name
        resource = (cls.get("spec") or {}).get("extendedResourceName")
        if not resource:
            continue
        key = (str(meta.get("creationTimestamp") or ""), name)
        if resource not in named or key > named[resource]:
            named[resource] = key
    out.update({resource: name for resource, (_, name) in named.items()})
    return out


def _count(raw: Any, where: str) -> int:
    try:
        value = parse_quantity(raw)
    except ValueError as exc:
        raise AllocationInputError(f"{where}: {exc}") from exc
    if value != value.to_integral_value() or value < Decimal(0):
        raise AllocationInputError(f"{where}: {raw!r}; an extended resource is a whole number of devices")
    return int(value)


def extended_resource_claim(
    pod_spec: Mapping[str, Any],
    classes: Iterable[Mapping[str, Any]],
    *,
    pod_name: str,
    namespace: str,
) -> dict[str, Any] | None:
    """The claim the scheduler makes for the pod's DRA-backed extended resources, or None.

    Raises:
        AllocationInputError: a quantity that is not a whole number (the field path names it).
    """
    served = extended_resource_classes(classes)
    requests: list[dict[str, Any]] = []
    containers = [
        *(("initContainers", c) for c in pod_spec.get("initContainers") or []),
        *(("containers", c) for c in pod_spec.get("containers") or []),
    ]
    for i, (field, container) in enumerate(containers):
        resources = container.get("resources") or {}
        amounts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        mine = sorted(name for name in amounts if name in served)
        for j, name in enumerate(mine):
            index = (pod_spec.get(field) or []).index(container)
            count = _count(amounts[name], f"spec.{field}[{index}].resources.limits[{name}]")
            if count == 0:
                continue
            requests.append(
                {
                    "name": f"container-{i}-request-{j}",
                    "exactly": {
                        "deviceClassName": served[name],
                        "allocationMode": "ExactCount",
                        "count": count,
                    },
                }
            )
    if not requests:
        return None
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "name": f"{pod_name}-extended-resources",
            "namespace": namespace,
            "annotations": {EXTENDED_CLAIM_ANNOTATION: "true"},
        },
        "spec": {"devices": {"requests": requests}},
    }
