"""The allocator's inputs, read from API-shaped dicts: pools of devices, device classes, requests.

Pools follow the scheduler's ``GatherPools``: slices are grouped by (driver, pool name); only the
slices of the highest generation count; a pool is *incomplete* when it has fewer slices at that
generation than ``resourceSliceCount`` and *invalid* when a device name repeats. Slices are taken
for a node by ``nodeName``, ``allNodes``, ``nodeSelector`` (against the node's labels and name) or
``perDeviceNodeSelection``. Pools are ordered by (driver, pool), slices by name, devices as listed:
that order is the order in which candidates are tried, so the first match in slice order wins.

Requests accept the v1 shape (``exactly`` / ``firstAvailable``) and the flat v1beta1 shape.
Anything the allocator cannot honour raises :class:`AllocationInputError` naming the field.
"""

from __future__ import annotations

__all__ = [
    "AllocationInputError",
    "Candidate",
    "ClaimSpec",
    "Constraint",
    "DeviceId",
    "PoolInfo",
    "Request",
    "RequestSpec",
    "allocated_devices",
    "gather_pools",
    "parse_claim",
]

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from nvdra.core.errors import UserError
from nvdra.core.quantity import parse_quantity

DeviceId = tuple[str, str, str]  # (driver, pool, device): a device's identity everywhere
MAX_RESULTS = 32  # resourceapi.AllocationResultsMaxSize


class AllocationInputError(UserError, ValueError):
    """A claim, class or slice cannot be used as given (the message names the field and value)."""


@attrs.frozen(eq=False)
class Candidate:
    """One device of a pool that targets the node, where it sits in the try order."""

    id: DeviceId
    device: Mapping[str, Any]
    slice: Mapping[str, Any]
    pool: PoolInfo
    order: int


@attrs.frozen(eq=False)
class PoolInfo:
    """A resource pool as the scheduler sees it for one node."""

    driver: str
    name: str
    generation: int
    incomplete: bool
    invalid_reason: str
    counter_sets: Mapping[str, Mapping[str, Decimal]]
    device_slices: tuple[Mapping[str, Any], ...]  # slices with devices targeting the node, by name


def _node_matches(spec: Mapping[str, Any], node_name: str, labels: Mapping[str, str]) -> bool | None:
    """True/False when ``spec`` selects nodes (nodeName/allNodes/nodeSelector), None when it does not."""
    if spec.get("nodeName"):
        return bool(spec["nodeName"] == node_name)
    if spec.get("allNodes"):
        return True
    selector = spec.get("nodeSelector")
    if selector is not None:
        return any(_term_matches(t, node_name, labels) for t in selector.get("nodeSelectorTerms") or [])
    return None


def _term_matches(term: Mapping[str, Any], node_name: str, labels: Mapping[str, str]) -> bool:
    for req in term.get("matchFields") or []:
        if req.get("key") != "metadata.name" or not _requirement(req, node_name):
            return False
    return all(
        _requirement(req, labels.get(req.get("key", ""))) for req in term.get("matchExpressions") or []
    )


def _requirement(req: Mapping[str, Any], value: str | None) -> bool:
    op, values = req.get("operator"), req.get("values") or []
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and value.lstrip("-").isdigit() and values:
        return int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0])
    return False


def gather_pools(
    slices: Iterable[Mapping[str, Any]], *, node_name: str, node_labels: Mapping[str, str] | None = None
) -> list[PoolInfo]:
    """The pools usable on ``node_name``, in try order (see the module docstring for the rules)."""
    labels = dict(node_labels or {})
    newest: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for sl in slices:
        spec = sl.get("spec") or {}
        key = (str(spec.get("driver", "")), str((spec.get("pool") or {}).get("name", "")))
        generation = int((spec.get("pool") or {}).get("generation", 0))
        held = newest.get(key)
        if held is None or generation > int(held[0]["spec"]["pool"].get("generation", 0)):
            newest[key] = [sl]
        elif generation == int(held[0]["spec"]["pool"].get("generation", 0)):
            held.append(sl)
    pools = []
    for (driver, name), unordered in sorted(newest.items()):
        members = sorted(unordered, key=lambda s: str((s.get("metadata") or {}).get("name", "")))
        targeting = [s for s in members if _slice_targets(s["spec"], node_name, labels)]
        if not targeting:
            continue
        pool_spec = members[0]["spec"]["pool"]
        pools.append(
            PoolInfo(
                driver=driver,
                name=name,
                generation=int(pool_spec.get("generation", 0)),
                incomplete=len(members) != int(pool_spec.get("resourceSliceCount", 1)),
                invalid_reason=_invalid_reason(members),
                counter_sets=_counter_sets(members),
                device_slices=tuple(s for s in targeting if s["spec"].get("devices")),
            )
        )
    return pools


def _slice_targets(spec: Mapping[str, Any], node_name: str, labels: Mapping[str, str]) -> bool:
    matched = _node_matches(spec, node_name, labels)
    if matched is not None:
        return matched
    if spec.get("perDeviceNodeSelection"):
        return any(_node_matches(d, node_name, labels) for d in spec.get("devices") or [])
    return False  # some future node selection this code does not know


def _invalid_reason(members: Sequence[Mapping[str, Any]]) -> str:
    seen: set[str] = set()
    for sl in members:
        for d in sl["spec"].get("devices") or []:
            if d["name"] in seen:
                return f"duplicate device name {d['name']}"
            seen.add(d["name"])
    return ""


def _counter_sets(members: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Decimal]]:
    sets: dict[str, dict[str, Decimal]] = {}
    for sl in members:
        for cs in sl["spec"].get("sharedCounters") or []:
            counters = cs.get("counters") or {}
            sets[cs["name"]] = {k: parse_quantity(v["value"]) for k, v in counters.items()}
    return sets


def candidates(pools: Sequence[PoolInfo], node_name: str, labels: Mapping[str, str]) -> list[Candidate]:
    """Every device of every pool in try order (incomplete and invalid pools included: callers skip)."""
    out: list[Candidate] = []
    for pool in pools:
        for sl in pool.device_slices:
            per_device = bool(sl["spec"].get("perDeviceNodeSelection"))
            for d in sl["spec"]["devices"]:
                if per_device and not _node_matches(d, node_name, labels):
                    continue
                out.append(
                    Candidate(
                        id=(pool.driver, pool.name, d["name"]), device=d, slice=sl, pool=pool, order=len(out)
                    )
                )
    return out


@attrs.frozen
class RequestSpec:
    """One way to satisfy a request: an ``exactly`` request, or one ``firstAvailable`` subrequest."""

    name: str  # "req" or "req/sub": the name results and constraints use
    base: str
    class_name: str
    selectors: tuple[str, ...]
    all_devices: bool
    count: int
    admin_access: bool
    tolerations: tuple[Mapping[str, Any], ...]
    capacity: Mapping[str, Any] = attrs.field(factory=dict)
    """``capacity.requests``: consumable capacity the request asks of each device (see
    :mod:`nvdra.alloc.capacity` for how the scheduler rounds and counts it)."""


@attrs.frozen
class Request:
    """A claim request: one spec (exactly) or alternatives tried in order (firstAvailable)."""

    name: str
    specs: tuple[RequestSpec, ...]
    first_available: bool


@attrs.frozen
class Constraint:
    """``matchAttribute`` (``distinct=False``) or ``distinctAttribute`` over ``requests`` (empty = all)."""

    attribute: str
    distinct: bool
    requests: frozenset[str]

    def applies(self, spec: RequestSpec) -> bool:
        return not self.requests or spec.base in self.requests or spec.name in self.requests


@attrs.frozen
class ClaimSpec:
    """What the allocator needs of one ResourceClaim (or a template's claim spec)."""

    name: str
    namespace: str
    requests: tuple[Request, ...]
    constraints: tuple[Constraint, ...]
    config: tuple[Mapping[str, Any], ...]


def _spec(raw: Mapping[str, Any], name: str, base: str, path: str, *, sub: bool) -> RequestSpec:
    class_name = raw.get("deviceClassName")
    if not class_name:
        raise AllocationInputError(f"{path}.deviceClassName: required (the DeviceClass to allocate from)")
    mode = raw.get("allocationMode") or "ExactCount"
    if mode not in ("ExactCount", "All"):
        raise AllocationInputError(f'{path}.allocationMode: "{mode}" is not one of ExactCount, All')
    count = int(raw.get("count", 1) if mode == "ExactCount" else 0)
    if mode == "ExactCount" and count <= 0:
        raise AllocationInputError(f"{path}.count: {count} must be greater than zero")
    selectors = []
    for i, sel in enumerate(raw.get("selectors") or []):
        expression = (sel.get("cel") or {}).get("expression")
        if not expression:
            raise AllocationInputError(f"{path}.selectors[{i}]: CEL expression empty (unsupported selector?)")
        selectors.append(str(expression))
    return RequestSpec(
        name=name,
        base=base,
        class_name=str(class_name),
        selectors=tuple(selectors),
        all_devices=mode == "All",
        count=count,
        admin_access=bool(raw.get("adminAccess")) and not sub,
        tolerations=tuple(raw.get("tolerations") or ()),
        capacity=dict((raw.get("capacity") or {}).get("requests") or {}),
    )


def parse_claim(claim: Mapping[str, Any]) -> ClaimSpec:
    """Read a ResourceClaim (v1 or v1beta1 request shape), a template, or a bare claim spec.

    Raises:
        AllocationInputError: a request is malformed (missing class, bad mode or count, a selector
            without CEL, neither or both of exactly/firstAvailable).
    """
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    if claim.get("kind") == "ResourceClaimTemplate":
        spec = spec.get("spec") or {}
    devices = spec.get("devices") or {}
    requests = []
    for i, raw in enumerate(devices.get("requests") or []):
        name, path = str(raw.get("name", "")), f"spec.devices.requests[{i}]"
        if not name:
            raise AllocationInputError(f"{path}.name: required")
        exactly = raw.get("exactly") if "exactly" in raw else (raw if "deviceClassName" in raw else None)
        first = raw.get("firstAvailable")
        if (exactly is None) == (not first):
            raise AllocationInputError(f"{path}: exactly one of exactly or firstAvailable must be set")
        if exactly is not None:
            where = f"{path}.exactly" if "exactly" in raw else path
            requests.append(
                Request(
                    name=name, specs=(_spec(exactly, name, name, where, sub=False),), first_available=False
                )
            )
        else:
            subs = tuple(
                _spec(s, f"{name}/{s.get('name', '')}", name, f"{path}.firstAvailable[{j}]", sub=True)
                for j, s in enumerate(first)
            )
            requests.append(Request(name=name, specs=subs, first_available=True))
    constraints = []
    for i, raw in enumerate(devices.get("constraints") or []):
        attribute, distinct = raw.get("matchAttribute"), False
        if attribute is None and raw.get("distinctAttribute") is not None:
            attribute, distinct = raw["distinctAttribute"], True
        if not attribute:
            raise AllocationInputError(f"spec.devices.constraints[{i}]: empty constraint (unsupported type?)")
        constraints.append(
            Constraint(
                attribute=str(attribute), distinct=distinct, requests=frozenset(raw.get("requests") or ())
            )
        )
    return ClaimSpec(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        requests=tuple(requests),
        constraints=tuple(constraints),
        config=tuple(devices.get("config") or ()),
    )


def allocated_devices(claims: Iterable[Mapping[str, Any]]) -> set[DeviceId]:
    """Devices held by already-allocated claims (admin-access results hold nothing, and a result with a
    ``shareID`` holds a share of a device that allows multiple allocations, not the device)."""
    held: set[DeviceId] = set()
    for claim in claims:
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for r in (allocation.get("devices") or {}).get("results") or []:
            if not r.get("adminAccess") and not r.get("shareID"):
                held.add((str(r["driver"]), str(r["pool"]), str(r["device"])))
    return held
