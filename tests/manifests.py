"""Builders for the Kubernetes manifests the tool, webhook and fabric tests feed in: a v1 ResourceClaim
or ResourceClaimTemplate asking for one GPU, and a Deployment around a pod spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

JsonObject = dict[str, Any]


def gpu_request(name: str = "gpu", **exactly: Any) -> JsonObject:
    """A v1 device request for ``gpu.nvidia.com`` devices; ``exactly`` adds fields (count, capacity …)."""
    return {"name": name, "exactly": {"deviceClassName": "gpu.nvidia.com", **exactly}}


def gpu_claim(
    name: str, namespace: str = "default", *, config: Sequence[JsonObject] = (), **exactly: Any
) -> JsonObject:
    """A v1 ResourceClaim with one :func:`gpu_request` (and ``config`` entries when given)."""
    devices: JsonObject = {"requests": [gpu_request(**exactly)]}
    if config:
        devices["config"] = list(config)
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": devices},
    }


def gpu_claim_template(name: str, namespace: str = "default") -> JsonObject:
    """A v1 ResourceClaimTemplate whose claims ask for one GPU (request ``gpu``)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"spec": {"devices": {"requests": [gpu_request()]}}},
    }


def deployment(
    name: str, namespace: str, pod_spec: JsonObject, labels: dict[str, str], replicas: int | None = None
) -> JsonObject:
    """An apps/v1 Deployment of ``pod_spec`` selecting its pods by ``labels``."""
    spec: JsonObject = {"replicas": replicas} if replicas is not None else {}
    spec["selector"] = {"matchLabels": labels}
    spec["template"] = {"metadata": {"labels": labels}, "spec": pod_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
