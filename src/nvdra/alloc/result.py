"""Render a found allocation as the ``status.allocation`` the scheduler writes.

- ``devices.results``: one entry per device in allocation order, naming ``request`` (or
  ``request/subrequest`` when ``firstAvailable`` chose one), driver, pool and device, plus
  ``adminAccess``, the request's ``tolerations`` and the device's binding conditions when set;
- ``devices.config``: first every class config (``source: FromClass``, once per class, listing the
  requests that used the class), then the claim's configs (``FromClaim``) that apply to an allocated
  request or chosen subrequest; a config that covers every request of the claim drops ``requests``
  ("empty means all");
- ``nodeSelector``: the node by name when any device is node-local, else the slices' selectors, and
  no selector at all when every device is available everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nvdra.alloc.model import Candidate, ClaimSpec, RequestSpec

ClassOf = Callable[[RequestSpec], Mapping[str, Any]]
"""The DeviceClass object a request names (the allocator's lookup)."""

__all__ = ["allocation_result"]


def _result(spec: RequestSpec, c: Candidate) -> dict[str, Any]:
    out: dict[str, Any] = {"request": spec.name, "driver": c.id[0], "pool": c.id[1], "device": c.id[2]}
    if spec.admin_access:
        out["adminAccess"] = True
    if spec.tolerations:
        out["tolerations"] = [dict(t) for t in spec.tolerations]
    for key in ("bindingConditions", "bindingFailureConditions"):
        if c.device.get(key):
            out[key] = list(c.device[key])
    return out


def _configs(
    class_of: ClassOf, claim: ClaimSpec, ci: int, picked_sub: Mapping[tuple[int, int], int]
) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = []
    by_class: dict[str, list[dict[str, Any]]] = {}
    chosen_names = []
    for ri, req in enumerate(claim.requests):
        spec = req.specs[picked_sub.get((ci, ri), 0)]
        chosen_names.append(spec.name)
        if spec.class_name in by_class:
            for entry in by_class[spec.class_name]:
                entry["requests"].append(spec.name)
            continue
        entries = [
            {
                "source": "FromClass",
                "requests": [spec.name],
                **{k: v for k, v in cfg.items() if k != "requests"},
            }
            for cfg in (class_of(spec).get("spec") or {}).get("config") or []
        ]
        by_class[spec.class_name] = entries
        configs.extend(entries)
    for cfg in claim.config:
        wanted = list(cfg.get("requests") or [])
        body = {k: v for k, v in cfg.items() if k != "requests"}
        if not wanted:
            configs.append({"source": "FromClaim", **body})
            continue
        for req, name in zip(claim.requests, chosen_names, strict=True):
            if req.name in wanted or (req.first_available and name in wanted):
                configs.append({"source": "FromClaim", "requests": wanted, **body})
    for entry in configs:
        if len(entry.get("requests", ())) == len(claim.requests):
            del entry["requests"]
    return configs


def _node_selector(chosen: Sequence[tuple[RequestSpec, Candidate]], node_name: str) -> dict[str, Any] | None:
    fields: list[dict[str, Any]] = []
    expressions: list[dict[str, Any]] = []
    for _, c in chosen:
        holder = c.device if c.slice["spec"].get("perDeviceNodeSelection") else c.slice["spec"]
        if holder.get("nodeName") or c.device.get("bindsToNode"):
            match = {"key": "metadata.name", "operator": "In", "values": [node_name]}
            return {"nodeSelectorTerms": [{"matchFields": [match]}]}
        terms = (holder.get("nodeSelector") or {}).get("nodeSelectorTerms") or []
        if len(terms) == 1:
            fields.extend(r for r in terms[0].get("matchFields") or [] if r not in fields)
            expressions.extend(r for r in terms[0].get("matchExpressions") or [] if r not in expressions)
    if not fields and not expressions:
        return None
    term: dict[str, Any] = {}
    if fields:
        term["matchFields"] = fields
    if expressions:
        term["matchExpressions"] = expressions
    return {"nodeSelectorTerms": [term]}


def allocation_result(
    claim: ClaimSpec,
    ci: int,
    chosen: Sequence[tuple[RequestSpec, Candidate]],
    picked_sub: Mapping[tuple[int, int], int],
    *,
    class_of: ClassOf,
    node_name: str,
) -> dict[str, Any]:
    """The ``status.allocation`` object for claim number ``ci`` of the search."""
    out: dict[str, Any] = {
        "devices": {
            "results": [_result(spec, c) for spec, c in chosen],
            "config": _configs(class_of, claim, ci, picked_sub),
        }
    }
    selector = _node_selector(chosen, node_name)
    if selector is not None:
        out["nodeSelector"] = selector
    return out
