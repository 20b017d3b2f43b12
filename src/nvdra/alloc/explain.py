"""Why a claim does (not) get devices: a verdict per request and per candidate device.

For every request (each ``firstAvailable`` subrequest separately) every candidate of the node gets
the first rule it breaks, in the scheduler's order — pool incomplete or invalid, already allocated,
a class selector, a request selector, an untolerated taint, the pool's shared counters (given what
is already allocated) — or ``eligible``. A failing selector is quoted with the values it read: the
attributes and capacities it names and every quantity/semver comparison it made, with the
difference (``81559Mi compareTo 141Gi = -1: short by 61.4Gi``). When every request has enough
eligible devices on its own, the claim-level rules (constraints, counters shared across requests)
are what failed, and the diagnosis says how the eligible devices split by each constrained attribute.
"""

from __future__ import annotations

__all__ = ["CandidateVerdict", "Diagnosis", "RequestDiagnosis", "diagnose"]

from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from nvdra.alloc import celsyntax
from nvdra.alloc._cel import CelError, Comparison, DeviceInput, Selector, compile_selector
from nvdra.alloc.allocator import (
    Allocator,
    Outcome,
    _consumption,
    capacity_refusal,
    lookup_attribute,
    taint_blocks,
)
from nvdra.alloc.model import Candidate, ClaimSpec, RequestSpec, parse_claim
from nvdra.alloc.values import Quantity, readable_quantity


@attrs.frozen
class CandidateVerdict:
    """One device against one request: ``ok`` or the first rule it breaks, with the values read."""

    device: str  # driver/pool/device
    ok: bool
    reason: str
    details: tuple[str, ...] = ()


@attrs.frozen
class RequestDiagnosis:
    """One request (or subrequest) of a claim against every candidate device."""

    claim: str
    request: str
    needs: str  # a count, or "all"
    eligible: int
    verdicts: tuple[CandidateVerdict, ...]
    chosen: tuple[str, ...] = ()  # devices the allocation gave it


@attrs.frozen
class Diagnosis:
    """The outcome plus per-request verdicts and claim-level findings."""

    outcome: Outcome
    requests: tuple[RequestDiagnosis, ...]
    findings: tuple[str, ...]


def _comparison_text(c: Comparison) -> str:
    text = f"{c.left} {c.function} {c.right} = {c.result}"
    if c.difference:
        value = Quantity.parse(c.difference).value
        if value < 0:
            text += f": {readable_quantity(-value)} above"
        elif value:
            text += f": short by {readable_quantity(value)}"
    return text


def _referenced(sel: Selector, c: Candidate) -> list[str]:
    """``domain/name = value`` for each attribute or capacity the expression names literally."""
    tokens = celsyntax.tokenize(sel.expression)
    out = []
    for i in range(len(tokens) - 5):
        kind = tokens[i].text
        if (
            kind not in ("attributes", "capacity")
            or tokens[i + 1].text != "["
            or tokens[i + 2].kind != "string"
        ):
            continue
        if tokens[i + 3].text != "]" or tokens[i + 4].text != "." or tokens[i + 5].kind != "ident":
            continue
        domain, ident = celsyntax.unquote(tokens[i + 2].text), tokens[i + 5].text
        if kind == "attributes":
            attr = lookup_attribute(c.device, c.id[0], f"{domain}/{ident}")
            shown = repr(next(iter(attr.values()))) if attr else "(not set)"
        else:
            caps = c.device.get("capacity") or {}
            cap = caps.get(f"{domain}/{ident}") or (caps.get(ident) if domain == c.id[0] else None)
            shown = str(cap["value"]) if cap else "(not set)"
        line = f"{domain}/{ident} = {shown}"
        if line not in out:
            out.append(line)
    return out


def _false_clause(device: DeviceInput, sel: Selector) -> list[str]:
    """``clause K of N is false: ...`` for the first false top-level ``&&`` clause of a false selector."""
    clauses = celsyntax.conjuncts(sel.expression)
    if len(clauses) < 2:
        return []
    for k, clause in enumerate(clauses, 1):
        try:
            if not device.evaluate(compile_selector(clause)):
                return [f"clause {k} of {len(clauses)} is false: {clause}"]
        except CelError as exc:
            return [f"clause {k} of {len(clauses)} fails: {clause}: {exc}"]
    return []


def _verdict(alloc: Allocator, spec: RequestSpec, c: Candidate) -> CandidateVerdict:
    name = "/".join(c.id)

    def bad(reason: str, *details: str) -> CandidateVerdict:
        return CandidateVerdict(device=name, ok=False, reason=reason, details=details)

    if c.pool.incomplete:
        return bad(f"pool {c.pool.name} is incomplete (being updated)")
    if c.pool.invalid_reason:
        return bad(f"pool {c.pool.name} is invalid: {c.pool.invalid_reason}")
    if not spec.admin_access and c.id in alloc.in_use:
        return bad("already allocated to another claim")
    device = alloc.device_input(c)
    for source, i, sel in alloc.selectors(spec):
        owner = f"class {spec.class_name}" if source == "class" else "request"
        result, seen = device.trace(sel)
        if isinstance(result, CelError):
            return bad(f"{owner} selector #{i} failed: {result}", f"expression: {sel.expression}")
        if not result:
            details = [f"expression: {sel.expression}", *_false_clause(device, sel), *_referenced(sel, c)]
            details += [_comparison_text(x) for x in seen]
            return bad(f"{owner} selector #{i} is false", *details)
    taint = taint_blocks(c.device, spec.tolerations)
    if taint is not None:
        shown = f"={taint['value']}" if taint.get("value") else ""
        return bad(f"taint {taint.get('key')}{shown}:{taint.get('effect')} is not tolerated")
    refusal = capacity_refusal(c.device, spec, alloc.consumed.get(c.id))
    if refusal is not None:
        return bad(f"capacity: {refusal}")
    available = alloc._available[id(c.pool)]
    for cs, counter, value in _consumption(c.device):
        left = available.get((cs, counter))
        if left is not None and value > left:
            remaining = Quantity(max(left, Decimal(0)))
            return bad(f"shared counter {cs}/{counter}: needs {Quantity(value)}, {remaining} left")
    return CandidateVerdict(device=name, ok=True, reason="eligible")


def _constraint_findings(
    alloc: Allocator, claim: ClaimSpec, eligible: Mapping[str, list[Candidate]]
) -> list[str]:
    findings = []
    for con in claim.constraints:
        specs = [s for r in claim.requests for s in r.specs if con.applies(s)]
        devices = {c.order: c for s in specs for c in eligible.get(s.name, [])}
        values: Counter[str] = Counter()
        missing = 0
        for c in devices.values():
            attr = lookup_attribute(c.device, c.id[0], con.attribute)
            if attr is None:
                missing += 1
            else:
                values[repr(next(iter(attr.values())))] += 1
        need = sum(s.count for s in specs if not s.all_devices)
        kind = "distinctAttribute" if con.distinct else "matchAttribute"
        spread = ", ".join(f"{v}: {n}" for v, n in values.most_common(6)) or "none"
        findings.append(
            f"constraint {kind} {con.attribute} over {', '.join(sorted(con.requests)) or 'all requests'}: "
            f"needs {need} devices; eligible devices by value: {spread}; {missing} lack the attribute"
        )
    return findings


def diagnose(alloc: Allocator, claims: Sequence[Mapping[str, Any] | ClaimSpec]) -> Diagnosis:
    """Allocate ``claims`` and explain the answer (see the module docstring)."""
    specs = [c if isinstance(c, ClaimSpec) else parse_claim(c) for c in claims]
    outcome = alloc.allocate(specs)
    requests: list[RequestDiagnosis] = []
    findings: list[str] = []
    if outcome.error:
        findings.append(outcome.error)
    try:
        alloc.prepare(specs)
    except CelError:
        return Diagnosis(outcome=outcome, requests=(), findings=tuple(findings))
    short = False
    for ci, claim in enumerate(specs):
        eligible: dict[str, list[Candidate]] = {}
        results = outcome.allocations[ci]["devices"]["results"] if outcome.allocations else []
        for req in claim.requests:
            for spec in req.specs:
                try:
                    verdicts = [(c, _verdict(alloc, spec, c)) for c in alloc.candidates]
                except CelError as exc:  # a compile error names no device
                    findings.append(f"request {spec.name}: {exc}")
                    continue
                eligible[spec.name] = [c for c, v in verdicts if v.ok]
                count = len(eligible[spec.name])
                short = short or (not spec.all_devices and count < spec.count)
                chosen = tuple(
                    f"{r['driver']}/{r['pool']}/{r['device']}" for r in results if r["request"] == spec.name
                )
                requests.append(
                    RequestDiagnosis(
                        claim=claim.name,
                        request=spec.name,
                        needs="all" if spec.all_devices else str(spec.count),
                        eligible=count,
                        verdicts=tuple(v for _, v in verdicts),
                        chosen=chosen,
                    )
                )
        if not outcome.ok and not outcome.error and not short:
            findings += _constraint_findings(alloc, claim, eligible)
            findings.append(
                "every request has enough eligible devices on its own, so the combination fails: "
                "claim constraints, or shared counters consumed across requests"
            )
    return Diagnosis(outcome=outcome, requests=tuple(requests), findings=tuple(findings))
