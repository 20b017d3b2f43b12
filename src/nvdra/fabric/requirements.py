"""What a claim's selectors and constraints must say for its ``fabricTopologyConfig`` (pure).

The scheduler picks GPUs from what is published; the opaque ``GpuConfig`` is read only at prepare. So
every device-choosing field of ``fabricTopologyConfig`` must also be said to the scheduler, or it may
allocate GPUs that prepare refuses forever. For a config group (the GPUs of the requests a
``GpuConfig`` applies to, ``S`` its partition size: ``partitionSize``, else the requests' total count):

==========================  ==============================================================================
field                       what the claim must carry
==========================  ==============================================================================
partitionSize (or count)    request counts adding up to S (2, 4 or 8), and a constraint
                            ``matchAttribute: gpu.nvidia.com/partition<S>`` over the group's requests
partitionIDs                per request, ``device.attributes["gpu.nvidia.com"].partition<S> in [ids]``
minBandwidth                ``…partition<S>Bandwidth >= ceil(minBandwidth)`` (FullPassthrough:
                            ``…partition<S>PassthroughBandwidth``)
maxLatency                  ``…partition<S>LatencyNs <= floor(maxLatency * 1e6)``
virtualizationModel         ``…fabricManagerMode in [the modes that serve the model]`` (fabric logic on)
==========================  ==============================================================================

Each selector is written guarded (``has(x) && x …``) so that a node that publishes no fabric attributes
(the gate off there) simply does not match, rather than failing the scheduler's CEL evaluation. An
existing selector counts when it is the same comparison (guarded or not) or a stricter one of the forms
above (a larger lower bound, a smaller upper bound, a subset of the ids or modes).

Bounds no NVLink partition can meet are refused outright (:func:`unmeetable`), with the numbers:
``minBandwidth`` above the fastest GPU's total NVLink bandwidth, ``maxLatency`` below the modelled
GPU-to-GPU latency (see :mod:`nvdra.fabric.topology`).

:func:`fabric_demands` lists every demand and whether the claim meets it; :func:`demand_problems` the
unmet ones as one line each (``nvdra validate``, the admission webhook); :func:`fix_claim` adds them
(``nvdra validate --fix``). Works on API-shaped dicts: ResourceClaim and ResourceClaimTemplate, the v1
``exactly`` request shape and the older flat one.
"""

from __future__ import annotations

__all__ = [
    "MAX_GPU_BANDWIDTH_GBPS",
    "MIN_PAIR_LATENCY_MS",
    "Demand",
    "demand_findings",
    "demand_problems",
    "fabric_demands",
    "fix_claim",
    "group_selectors",
    "selector",
    "unmeetable",
]

import copy
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from nvdra.core.config import GpuConfig, VfioDeviceConfig, decode_config
from nvdra.core.config.fabric import PARTITION_SIZES, FabricTopologyConfig, VirtualizationModel
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import Gate, parse_feature_gates
from nvdra.fabric.attributes import (
    DOMAIN,
    MODE_ATTRIBUTE,
    bandwidth_attribute,
    latency_attribute,
    max_latency_ns,
    model_modes,
    partition_attribute,
    passthrough_bandwidth_attribute,
)
from nvdra.fabric.topology import LINK_RATES, PATH_LATENCY_MS, PathClass

MAX_GPU_NVLINKS = 18
"""The most NVLinks any GPU has (Hopper and Blackwell SXM: 18)."""

MAX_GPU_BANDWIDTH_GBPS = MAX_GPU_NVLINKS * max(r.bidirectional_gbps for r in LINK_RATES.values())
"""The largest per-GPU NVLink bandwidth of any known GPU (18 NVLink 5.0 links: 1,800 GB/s)."""

MIN_PAIR_LATENCY_MS = min(PATH_LATENCY_MS[PathClass.NVLINK_DIRECT], PATH_LATENCY_MS[PathClass.NVSWITCH])
"""The smallest modelled latency between two distinct GPUs (a direct NVLink)."""

_DRIVERS = frozenset({DOMAIN})
_GATES = parse_feature_gates(f"{Gate.FABRIC_TOPOLOGY_SUPPORT}=true,{Gate.PASSTHROUGH_SUPPORT}=true")


@attrs.frozen(kw_only=True)
class Demand:
    """One thing the claim must carry for a ``fabricTopologyConfig`` field, and whether it does."""

    field: str  # the fabricTopologyConfig field (or "count")
    config: str  # path of the fabricTopologyConfig in the object
    kind: str  # "selector" | "constraint" | "count"
    where: str  # path where it belongs (a request's selectors, the constraints, a request's count)
    requests: tuple[str, ...]  # the requests it concerns
    text: str  # the CEL expression, the qualified attribute, or the count
    present: bool
    detail: str = ""  # why it cannot be added automatically, when it cannot

    def problem(self) -> str:
        """The one line ``nvdra validate`` and the webhook print for an unmet demand."""
        return f"{self.where}: {self.advice()}"

    def advice(self) -> str:
        """What is missing and what to add (the line without its path)."""
        if self.kind == "selector":
            add = f"add the selector {{cel: {{expression: '{self.text}'}}}}"
        elif self.kind == "constraint":
            add = f"add the constraint {{requests: {list(self.requests)}, matchAttribute: {self.text}}}"
        else:
            add = self.detail
        return (
            f"{self.config}.{self.field} is not said to the scheduler, which may then allocate GPUs that "
            f"prepare refuses; {add}"
        )


def _attr(name: str) -> str:
    return f'device.attributes["{DOMAIN}"].{name}'


def _guarded(name: str, comparison: str) -> str:
    return f"has({_attr(name)}) && {_attr(name)} {comparison}"


def _int_list(values: Sequence[int]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _str_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def group_selectors(fabric: FabricTopologyConfig, size: int) -> list[tuple[str, str]]:
    """(field, CEL expression) of every selector a group of partition size ``size`` needs."""
    out: list[tuple[str, str]] = []
    if not fabric.active:
        return out
    model = fabric.effective_model
    out.append(("virtualizationModel", _guarded(MODE_ATTRIBUTE, f"in {_str_list(model_modes(model))}")))
    if fabric.partition_ids:
        ids = sorted(set(fabric.partition_ids))
        out.append(("partitionIDs", _guarded(partition_attribute(size), f"in {_int_list(ids)}")))
    if fabric.min_bandwidth:
        name = (
            passthrough_bandwidth_attribute(size)
            if model is VirtualizationModel.FULL_PASSTHROUGH
            else bandwidth_attribute(size)
        )
        out.append(("minBandwidth", _guarded(name, f">= {math.ceil(fabric.min_bandwidth)}")))
    if fabric.max_latency is not None:
        out.append(
            ("maxLatency", _guarded(latency_attribute(size), f"<= {max_latency_ns(fabric.max_latency)}"))
        )
    return out


def selector(fabric: FabricTopologyConfig, size: int, field: str) -> str | None:
    """The selector expressing one field for partition size ``size`` (None: the field needs none)."""
    return dict(group_selectors(fabric, size)).get(field)


def unmeetable(fabric: FabricTopologyConfig) -> list[tuple[str, str]]:
    """(field, why) for bounds no NVLink partition can meet, with the numbers (see the module docstring)."""
    out: list[tuple[str, str]] = []
    if not fabric.active:
        return out
    if fabric.min_bandwidth is not None and fabric.min_bandwidth > MAX_GPU_BANDWIDTH_GBPS:
        out.append(
            (
                "minBandwidth",
                f"minBandwidth {fabric.min_bandwidth:g} GB/s is more than any GPU's NVLink bandwidth "
                f"(at most {MAX_GPU_BANDWIDTH_GBPS} GB/s: {MAX_GPU_NVLINKS} NVLink 5.0 links x "
                f"{LINK_RATES[7].bidirectional_gbps} GB/s)",
            )
        )
    if fabric.max_latency is not None and fabric.max_latency < MIN_PAIR_LATENCY_MS:
        out.append(
            (
                "maxLatency",
                f"maxLatency {fabric.max_latency:g} ms is below the modelled GPU-to-GPU latency of every "
                f"NVLink path (direct NVLink {PATH_LATENCY_MS[PathClass.NVLINK_DIRECT]:g} ms, via NVSwitch "
                f"{PATH_LATENCY_MS[PathClass.NVSWITCH]:g} ms; docs/fabric.md gives their sources)",
            )
        )
    return out


# -- reading claims ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Request:
    name: str
    path: str  # of the request entry
    body_path: str  # where selectors and count live (…exactly, or the request itself)
    count: int | None  # None: not an ExactCount request (All, firstAvailable)
    selectors: tuple[str, ...]
    device_class: str = ""

    @property
    def other_driver(self) -> bool:
        """Whether the request's class is another driver's (ComputeDomain channels, daemons)."""
        return self.device_class.startswith("compute-domain")


def _devices(obj: Mapping[str, Any], template: bool | None = None) -> tuple[Mapping[str, Any], str]:
    spec = obj.get("spec") or {}
    if template is None:
        template = obj.get("kind") == "ResourceClaimTemplate"
    if template:
        return ((spec.get("spec") or {}).get("devices") or {}), "spec.spec.devices"
    return (spec.get("devices") or {}), "spec.devices"


def _requests(devices: Mapping[str, Any], base: str) -> list[_Request]:
    out = []
    for i, req in enumerate(devices.get("requests") or []):
        if not isinstance(req, Mapping):
            continue
        path = f"{base}.requests[{i}]"
        if isinstance(req.get("exactly"), Mapping):
            body, body_path = req["exactly"], f"{path}.exactly"
        elif "deviceClassName" in req:
            body, body_path = req, path
        else:
            out.append(
                _Request(name=str(req.get("name", "")), path=path, body_path=path, count=None, selectors=())
            )
            continue
        mode = body.get("allocationMode") or "ExactCount"
        count = int(body.get("count") or 1) if mode == "ExactCount" else None
        selectors = tuple(
            str((s.get("cel") or {}).get("expression", ""))
            for s in body.get("selectors") or []
            if isinstance(s, Mapping)
        )
        out.append(
            _Request(
                name=str(req.get("name", "")),
                path=path,
                body_path=body_path,
                count=count,
                selectors=selectors,
                device_class=str(body.get("deviceClassName", "")),
            )
        )
    return out


def _fabric_configs(
    devices: Mapping[str, Any], base: str
) -> Iterator[tuple[int, FabricTopologyConfig, tuple[str, ...] | None]]:
    """(config index, fabric config, request names or None for all) of every GPU-driver fabric config."""
    for i, entry in enumerate(devices.get("config") or []):
        if not isinstance(entry, Mapping):
            continue
        opaque = entry.get("opaque")
        if not isinstance(opaque, Mapping):
            continue
        driver = opaque.get("driver")
        if not isinstance(driver, str) or driver not in _DRIVERS:
            continue
        params = opaque.get("parameters")
        if not isinstance(params, Mapping):
            continue
        try:
            config = decode_config(params, gates=_GATES, strict=False, path=f"{base}.config[{i}]")
        except ConfigError:
            continue  # the config's own problems are reported by whoever validates it
        if not isinstance(config, GpuConfig | VfioDeviceConfig):
            continue
        try:
            fabric = config.effective_fabric_topology
        except ValueError:
            continue  # a legacy fabricPartitionID that is no partition id: its config's own problem
        if fabric is None or not fabric.active:
            continue
        names = entry.get("requests")
        yield i, fabric, (tuple(str(n).split("/")[0] for n in names) if names else None)


_NUMBER = r"-?\d+(?:\.\d+)?"
_COMPARISON = re.compile(
    r"^(?:has\((?P<guard>[^()]+)\)\s*&&\s*)?(?P<lhs>device\.attributes\[\"[^\"]+\"\]\.\w+)\s*"
    r"(?P<op>>=|<=|==|in)\s*(?P<rhs>.+)$"
)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).replace("'", '"')


def _parse(expression: str) -> tuple[str, str, Any] | None:
    """(attribute path, operator, value) of a simple comparison selector, else None."""
    match = _COMPARISON.match(_norm(expression))
    if match is None:
        return None
    lhs, op, rhs = match["lhs"], match["op"], match["rhs"].strip()
    if match["guard"] is not None and match["guard"].strip() != lhs:
        return None
    if op == "in":
        if not (rhs.startswith("[") and rhs.endswith("]")):
            return None
        items = [item.strip() for item in rhs[1:-1].split(",") if item.strip()]
        return lhs, "in", frozenset(item.strip('"') for item in items)
    value: Any = rhs.strip('"') if rhs.startswith('"') else rhs
    if op != "==" and not re.fullmatch(_NUMBER, rhs):
        return None
    return lhs, op, value


def _satisfies(existing: str, wanted: str) -> bool:
    """Whether the selector ``existing`` says ``wanted`` or something stricter."""
    if _norm(existing) == _norm(wanted):
        return True
    have, want = _parse(existing), _parse(wanted)
    if have is None or want is None or have[0] != want[0]:
        return False
    (_, op, value), (_, wop, wvalue) = have, want
    if wop == "in":
        chosen = value if op == "in" else frozenset({value}) if op == "==" else None
        return chosen is not None and bool(chosen) and chosen <= wvalue
    if op != wop and not (op == "==" and wop in (">=", "<=")):
        return False
    number, bound = float(value), float(wvalue)
    return number >= bound if wop == ">=" else number <= bound


def _constraint_covers(constraint: Mapping[str, Any], attribute: str, group: Sequence[str]) -> bool:
    if constraint.get("matchAttribute") != attribute:
        return False
    names = constraint.get("requests")
    return not names or set(group) <= {str(n).split("/")[0] for n in names}


def fabric_demands(obj: Mapping[str, Any], *, template: bool | None = None) -> list[Demand]:
    """Every demand the claim's fabric configs make of its requests and constraints, met or not.

    ``template``: whether ``obj`` is a ResourceClaimTemplate (default: from its ``kind``).
    """
    devices, base = _devices(obj, template)
    requests = _requests(devices, base)
    constraints = [c for c in devices.get("constraints") or [] if isinstance(c, Mapping)]
    out: list[Demand] = []
    for index, fabric, names in _fabric_configs(devices, base):
        config_path = f"{base}.config[{index}].opaque.parameters.fabricTopologyConfig"
        # A config naming no requests applies to the GPU driver's devices of every request.
        group = (
            [r for r in requests if r.name in names]
            if names is not None
            else [r for r in requests if not r.other_driver]
        )
        if not group:
            continue
        group_names = tuple(r.name for r in group)
        counts = [r.count for r in group]
        total = sum(c for c in counts if c is not None)
        size = fabric.partition_size or total
        count_ok = None not in counts and total == size and size in PARTITION_SIZES
        if not count_ok:
            if None in counts:
                why = "use requests with exactly and allocationMode ExactCount (a partition has a fixed size)"
            elif size not in PARTITION_SIZES:
                why = f"set the request count to a partition size (2, 4 or 8), got {total}"
            else:
                why = f"make the request counts add up to partitionSize {size} (they add up to {total})"
            out.append(
                Demand(
                    field="partitionSize",
                    config=config_path,
                    kind="count",
                    where=f"{group[0].body_path}.count",
                    requests=group_names,
                    text=str(size),
                    present=False,
                    detail=why,
                )
            )
        if size not in PARTITION_SIZES:
            continue
        attribute = f"{DOMAIN}/{partition_attribute(size)}"
        out.append(
            Demand(
                field="partitionSize",
                config=config_path,
                kind="constraint",
                where=f"{base}.constraints",
                requests=group_names,
                text=attribute,
                present=any(_constraint_covers(c, attribute, group_names) for c in constraints),
            )
        )
        for field, expression in group_selectors(fabric, size):
            for request in group:
                out.append(
                    Demand(
                        field=field,
                        config=config_path,
                        kind="selector",
                        where=f"{request.body_path}.selectors",
                        requests=(request.name,),
                        text=expression,
                        present=any(_satisfies(s, expression) for s in request.selectors),
                    )
                )
    return out


def demand_findings(obj: Mapping[str, Any], *, template: bool | None = None) -> list[tuple[str, str]]:
    """(field path, message) per bound no partition can meet and per unmet demand."""
    devices, base = _devices(obj, template)
    found = [
        (
            f"{base}.config[{index}].opaque.parameters.fabricTopologyConfig.{field}",
            f"{why}; no allocation could ever be prepared",
        )
        for index, fabric, _ in _fabric_configs(devices, base)
        for field, why in unmeetable(fabric)
    ]
    return found + [(d.where, d.advice()) for d in fabric_demands(obj, template=template) if not d.present]


def demand_problems(obj: Mapping[str, Any], *, template: bool | None = None) -> list[str]:
    """One ``path: message`` line per :func:`demand_findings` (empty: the claim says it all)."""
    return [f"{path}: {message}" for path, message in demand_findings(obj, template=template)]


def fix_claim(obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of the claim with every missing selector, constraint and (single-request) count added.

    Returns:
        The fixed object, and one line per change; demands that cannot be fixed automatically (counts
        split over several requests, non-ExactCount requests) stay and are reported by validation.
    """
    fixed: dict[str, Any] = copy.deepcopy(dict(obj))
    changes: list[str] = []
    devices, base = _devices(fixed)
    raw_requests = devices.get("requests") or []
    by_name = {str(r.get("name", "")): r for r in raw_requests if isinstance(r, Mapping)}
    # The size a group's selectors and constraint name does not depend on its counts (partitionSize
    # when given, else the counts as they are), so one pass adds everything.
    for demand in fabric_demands(fixed):
        if demand.present:
            continue
        if demand.kind == "count":
            if len(demand.requests) != 1 or _mode_of(by_name[demand.requests[0]]) != "ExactCount":
                continue
            _body(by_name[demand.requests[0]])["count"] = int(demand.text)
            changes.append(f"{demand.where}: set to {demand.text} ({demand.config}.partitionSize)")
        elif demand.kind == "constraint":
            assert isinstance(devices, dict)  # a deep copy of JSON: plain dicts
            devices.setdefault("constraints", []).append(
                {"requests": list(demand.requests), "matchAttribute": demand.text}
            )
            changes.append(f"{base}.constraints: added matchAttribute {demand.text}")
        else:
            body = _body(by_name[demand.requests[0]])
            body.setdefault("selectors", []).append({"cel": {"expression": demand.text}})
            changes.append(f"{demand.where}: added {demand.text!r} ({demand.config}.{demand.field})")
    return fixed, changes


def _body(request: Any) -> dict[str, Any]:
    exactly = request.get("exactly")
    out: dict[str, Any] = exactly if isinstance(exactly, dict) else request
    return out


def _mode_of(request: Any) -> str:
    body = request.get("exactly") if isinstance(request.get("exactly"), Mapping) else request
    if "deviceClassName" not in body:
        return "firstAvailable"
    return str(body.get("allocationMode") or "ExactCount")
