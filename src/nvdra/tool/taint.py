"""``nvdra taint`` / ``nvdra untaint``: take GPUs out of service cluster-wide with DeviceTaintRules.

A rule selects ``gpu.nvidia.com`` devices by pool (a node's GPUs: the GPU plugin names its pool after
the node), by device name within the pool, or by GPU UUID (looked up in the node's published slices).
The rule is written at the newest version the server serves (``resource.k8s.io/v1beta2`` from 1.36,
``v1alpha3`` from 1.33) and labelled ``app.kubernetes.io/managed-by: nvdra``; ``untaint`` deletes only
such rules. The plugin's own health taints live in its slices and are never touched here, so an
operator's rule and a health taint never overwrite each other: a device is blocked while either says so.
"""

from __future__ import annotations

__all__ = [
    "RULE_VERSIONS",
    "NoTaintRuleApi",
    "UnknownDevice",
    "find_rule_type",
    "resolve_device",
    "taint",
    "untaint",
]

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from nvdra.alloc.taintrules import MANAGED_BY, rule_selects, taint_rule
from nvdra.core.errors import KubeConflict, KubeNotFound, UserError
from nvdra.kubeletplugin.objects import ObjectApi, ResourceType
from nvdra.plugins.gpu.config import DRIVER_NAME

RULE_VERSIONS = ("v1beta2", "v1alpha3")
"""DeviceTaintRule versions, newest first (v1beta2: Kubernetes 1.36; v1alpha3: 1.33-1.35)."""


class NoTaintRuleApi(UserError):
    """The API server serves no DeviceTaintRules."""


class UnknownDevice(UserError):
    """The device or UUID is not published on the node."""


_RULES = ResourceType.of(
    "resource.k8s.io/v1beta2", "DeviceTaintRule", namespaced=False, status_subresource=False
)


def find_rule_type(api: ObjectApi) -> ResourceType:
    """DeviceTaintRules at the first version the server lists.

    Raises:
        UserError: the server serves DeviceTaintRules at no known version (feature gate off).
    """
    for version in RULE_VERSIONS:
        rt = attrs.evolve(_RULES, version=version)
        try:
            api.list_objects(rt)
        except KubeNotFound:
            continue
        return rt
    raise NoTaintRuleApi(
        "the API server serves no DeviceTaintRules (resource.k8s.io/v1beta2 or v1alpha3): enable the "
        "DRADeviceTaints and DRADeviceTaintRules feature gates and runtime-config"
    )


def resolve_device(
    slices: Sequence[Mapping[str, Any]], node: str, *, device: str = "", uuid: str = ""
) -> str:
    """The device name on ``node`` for ``device`` or a GPU ``uuid`` ("" for all the node's GPUs).

    Raises:
        UserError: the UUID or device is not published on the node.
    """
    published = [
        d
        for s in slices
        if (s.get("spec") or {}).get("driver") == DRIVER_NAME
        and ((s.get("spec") or {}).get("pool") or {}).get("name") == node
        for d in (s.get("spec") or {}).get("devices") or []
    ]
    if uuid:
        for d in published:
            if ((d.get("attributes") or {}).get("uuid") or {}).get("string") == uuid:
                return str(d["name"])
        raise UnknownDevice(f"--uuid {uuid}: no {DRIVER_NAME} device of node {node} has that UUID")
    if device and published and device not in {d.get("name") for d in published}:
        known = ", ".join(sorted(str(d.get("name")) for d in published))
        raise UnknownDevice(f"--device {device}: node {node} publishes no such device (known: {known})")
    return device


def taint(
    api: ObjectApi, *, node: str, key: str, effect: str, value: str = "", device: str = ""
) -> dict[str, Any]:
    """Create (or update) the rule; returns it as stored.

    Raises:
        UserError: a bad key or effect, or no DeviceTaintRule API.
    """
    rt = find_rule_type(api)
    rule = taint_rule(
        key=key, effect=effect, value=value, pool=node, device=device, api_version=f"{rt.group}/{rt.version}"
    )
    try:
        return api.create_object(rt, rule)
    except KubeConflict:
        current = api.get_object(rt, rule["metadata"]["name"])
        return api.update_object(rt, {**current, "spec": rule["spec"]})


def untaint(api: ObjectApi, *, node: str, device: str = "", key: str = "") -> list[str]:
    """Delete nvdra's rules selecting ``node``'s GPUs (or one device; of one key, if given).

    Returns the names deleted.
    """
    rt = find_rule_type(api)
    gone = []
    for rule in api.list_objects(rt):
        labels = (rule.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in MANAGED_BY.items()):
            continue
        selector = (rule.get("spec") or {}).get("deviceSelector") or {}
        if selector.get("pool") != node or (device and selector.get("device") != device):
            continue
        if key and ((rule.get("spec") or {}).get("taint") or {}).get("key") != key:
            continue
        if device and not rule_selects(rule, DRIVER_NAME, node, device):
            continue
        api.delete_object(rt, rule["metadata"]["name"])
        gone.append(str(rule["metadata"]["name"]))
    return sorted(gone)
