"""DeviceTaintRules (KEP-5055, feature DRADeviceTaintRules; ``resource.k8s.io/v1alpha3`` from 1.33,
``v1beta2`` from 1.36): an operator taints devices cluster-wide without touching the driver's slices.

The scheduler treats a rule's taint exactly like one the driver put in the ResourceSlice: a device gets
every taint of its slice plus the taint of every rule whose ``deviceSelector`` matches it (``driver``,
``pool`` and ``device`` each, when set, must equal the device's; an empty selector matches every device,
a missing one none). :func:`with_taint_rules` returns slices with those taints added, so the allocator
and ``explain`` apply rules and slice taints alike; the driver's own taints (health) stay in the slice,
the operator's in rules, and neither side ever rewrites the other's.

Also here: the DeviceTaintRule objects ``nvdra taint`` writes (:func:`taint_rule`), named after what
they select and labelled as nvdra's, so ``nvdra untaint`` removes exactly those.
"""

from __future__ import annotations

__all__ = [
    "MANAGED_BY",
    "TAINT_EFFECTS",
    "rule_selects",
    "taint_rule",
    "with_taint_rules",
]

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nvdra.alloc.model import AllocationInputError

TAINT_EFFECTS = ("NoSchedule", "NoExecute")
MANAGED_BY = {"app.kubernetes.io/managed-by": "nvdra"}
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def rule_selects(rule: Mapping[str, Any], driver: str, pool: str, device: str) -> bool:
    """Whether a DeviceTaintRule's ``spec.deviceSelector`` matches the device."""
    selector = (rule.get("spec") or {}).get("deviceSelector")
    if selector is None:
        return False
    wanted = (selector.get("driver"), selector.get("pool"), selector.get("device"))
    return all(w in (None, "", have) for w, have in zip(wanted, (driver, pool, device), strict=True))


def with_taint_rules(
    slices: Iterable[Mapping[str, Any]], rules: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The slices with each rule's taint added to the devices it selects (inputs unchanged)."""
    out: list[dict[str, Any]] = []
    for sl in slices:
        spec = sl.get("spec") or {}
        driver, pool = str(spec.get("driver", "")), str((spec.get("pool") or {}).get("name", ""))
        devices = []
        changed = False
        for d in spec.get("devices") or []:
            extra = [
                dict((r.get("spec") or {}).get("taint") or {})
                for r in rules
                if rule_selects(r, driver, pool, str(d.get("name", "")))
            ]
            changed = changed or bool(extra)
            devices.append({**d, "taints": [*(d.get("taints") or []), *extra]} if extra else d)
        out.append({**sl, "spec": {**spec, "devices": devices}} if changed else dict(sl))
    return out


def taint_rule(
    *,
    key: str,
    effect: str,
    value: str = "",
    driver: str = "gpu.nvidia.com",
    pool: str = "",
    device: str = "",
    api_version: str = "resource.k8s.io/v1beta2",
) -> dict[str, Any]:
    """A DeviceTaintRule tainting ``driver``'s devices of ``pool`` (a node's, for node-local drivers),
    or one ``device`` of it.

    Raises:
        AllocationInputError: an empty key or one that is not a label name, an effect other than
            NoSchedule or NoExecute, a device without its pool.
    """
    if not _KEY.match(key):
        raise AllocationInputError(
            f"taint key {key!r}: must be a label name (optionally prefix/), e.g. example.com/maintenance"
        )
    if effect not in TAINT_EFFECTS:
        raise AllocationInputError(f"taint effect {effect!r}: allowed: {', '.join(TAINT_EFFECTS)}")
    if device and not pool:
        raise AllocationInputError(
            f"device {device!r}: give its pool (the node) too, device names repeat per node"
        )
    selector = {k: v for k, v in (("driver", driver), ("pool", pool), ("device", device)) if v}
    taint = {"key": key, "effect": effect, **({"value": value} if value else {})}
    digest = hashlib.sha256(f"{driver}/{pool}/{device}/{key}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{pool or 'all'}-{device or 'all'}".lower()).strip("-")[:40]
    return {
        "apiVersion": api_version,
        "kind": "DeviceTaintRule",
        "metadata": {"name": f"nvdra-{readable}-{digest}", "labels": dict(MANAGED_BY)},
        "spec": {"deviceSelector": selector, "taint": taint},
    }
