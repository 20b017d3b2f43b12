"""``nvdra validate``: check ResourceClaims, ResourceClaimTemplates and DeviceClasses offline.

Per object: the shape the API server would insist on (names, exactly one of ``exactly`` /
``firstAvailable``, allocation mode and count, the per-claim limits), every CEL selector compiled in
the Kubernetes device environment (errors carry line, column and a caret), and every opaque config
for the GPU driver decoded strictly and validated with the given feature gates. Nothing is sent
anywhere; a problem is reported as ``FILE#DOC KIND/NAME: PATH: message``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nvdra.alloc import AllocationInputError, CelError, compile_selector, parse_claim
from nvdra.core.config import load_config
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates
from nvdra.plugins.gpu.config import DRIVER_NAME

__all__ = ["validate_object"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
LIMIT = 32  # requests, constraints, configs and selectors per claim / class (protocols §4.4)


def _selectors(selectors: Sequence[Mapping[str, Any]], path: str) -> list[str]:
    problems = []
    if len(selectors) > LIMIT:
        problems.append(f"{path}: {len(selectors)} selectors, at most {LIMIT}")
    for i, sel in enumerate(selectors):
        expression = (sel.get("cel") or {}).get("expression")
        if not expression:
            problems.append(f"{path}[{i}].cel.expression: required")
            continue
        try:
            compile_selector(str(expression))
        except CelError as exc:
            problems.append(f"{path}[{i}].cel.expression: {exc}")
    return problems


def _configs(
    configs: Sequence[Mapping[str, Any]], path: str, gates: FeatureGates, requests: set[str] | None
) -> list[str]:
    problems = []
    if len(configs) > LIMIT:
        problems.append(f"{path}: {len(configs)} entries, at most {LIMIT}")
    for i, cfg in enumerate(configs):
        opaque = cfg.get("opaque")
        if not isinstance(opaque, Mapping):
            problems.append(f"{path}[{i}].opaque: required (the only config type)")
            continue
        driver = str(opaque.get("driver", ""))
        if not _DNS_SUBDOMAIN.match(driver):
            problems.append(f"{path}[{i}].opaque.driver: {driver!r} is not a DNS subdomain")
        for name in cfg.get("requests") or []:
            if requests is not None and str(name).split("/")[0] not in requests:
                problems.append(f"{path}[{i}].requests: {name!r} names no request of this claim")
        if driver == DRIVER_NAME:
            try:
                load_config(
                    opaque.get("parameters") or {}, gates=gates, path=f"{path}[{i}].opaque.parameters"
                )
            except ConfigError as exc:
                problems.append(str(exc))
    return problems


def _claim_problems(obj: Mapping[str, Any], gates: FeatureGates) -> list[str]:
    spec = obj.get("spec") or {}
    base = "spec.spec.devices" if obj.get("kind") == "ResourceClaimTemplate" else "spec.devices"
    if obj.get("kind") == "ResourceClaimTemplate":
        spec = spec.get("spec") or {}
    devices = spec.get("devices") or {}
    problems = []
    try:
        claim = parse_claim(obj)
    except AllocationInputError as exc:
        return [str(exc)]
    for field, limit in (("requests", LIMIT), ("constraints", LIMIT)):
        if len(devices.get(field) or []) > limit:
            problems.append(f"{base}.{field}: {len(devices[field])} entries, at most {limit}")
    names = [r.name for r in claim.requests]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"{base}.requests: duplicate request name {name!r}")
    for i, req in enumerate(devices.get("requests") or []):
        path = f"{base}.requests[{i}]"
        if not _DNS_LABEL.match(str(req.get("name", ""))):
            problems.append(f"{path}.name: {req.get('name')!r} is not a DNS label")
        subs = req.get("firstAvailable") or []
        if len(subs) > 8:
            problems.append(f"{path}.firstAvailable: {len(subs)} subrequests, at most 8")
        for j, sub in enumerate(subs):
            problems += _selectors(sub.get("selectors") or [], f"{path}.firstAvailable[{j}].selectors")
        exactly = req.get("exactly") or (req if "deviceClassName" in req else {})
        problems += _selectors(exactly.get("selectors") or [], f"{path}.exactly.selectors")
    known = set(names) | {s.name for r in claim.requests for s in r.specs}
    for i, con in enumerate(claim.constraints):
        if "/" not in con.attribute:
            problems.append(
                f"{base}.constraints[{i}]: {con.attribute!r} must be fully qualified (domain/name)"
            )
        for name in sorted(con.requests - known):
            problems.append(f"{base}.constraints[{i}].requests: {name!r} names no request of this claim")
    problems += _configs(devices.get("config") or [], f"{base}.config", gates, set(names))
    return problems


def _class_problems(obj: Mapping[str, Any], gates: FeatureGates) -> list[str]:
    spec = obj.get("spec") or {}
    return _selectors(spec.get("selectors") or [], "spec.selectors") + _configs(
        spec.get("config") or [], "spec.config", gates, None
    )


def validate_object(obj: Mapping[str, Any], gates: FeatureGates) -> list[str]:
    """Problems with one object (empty when it is fine); unknown kinds are a problem too."""
    kind = obj.get("kind")
    name = str((obj.get("metadata") or {}).get("name", ""))
    problems = [] if name else ["metadata.name: required"]
    if name and not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS subdomain")
    if kind in ("ResourceClaim", "ResourceClaimTemplate"):
        return problems + _claim_problems(obj, gates)
    if kind == "DeviceClass":
        return problems + _class_problems(obj, gates)
    return [f"kind {kind!r}: not one of ResourceClaim, ResourceClaimTemplate, DeviceClass"]


def validate_documents(
    docs: Iterable[tuple[str, Mapping[str, Any]]], gates: FeatureGates
) -> list[tuple[str, list[str]]]:
    """(``where kind/name``, problems) for every document, in order."""
    out = []
    for where, obj in docs:
        label = f"{where} {obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"
        out.append((label, validate_object(obj, gates)))
    return out
