"""``nvdra validate``: check manifests offline, as the API server and the nvdra plugins would.

Per object (see :func:`validate_documents`):

- every kind: its Kubernetes OpenAPI schema for ``--kubernetes-version`` (strict: unknown fields are
  errors; :mod:`nvdra.tool.schemas`), or "skipped" with the reason when there is none;
- DRA objects (ResourceClaim, ResourceClaimTemplate, DeviceClass, ResourceSlice, every served
  version): names, request shape and limits, every CEL selector compiled in the scheduler's
  environment, constraints and config entries naming existing requests, device classes known;
- every opaque config of the GPU and ComputeDomain drivers (claims, templates, DeviceClasses) decoded
  strictly and validated. A config that needs a feature gate is valid with a note naming the gate;
  with ``--feature-gates`` (the cluster's plugin gates) a config whose gate is off is an error;
- Pods and workload templates (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob): every
  container's ``resources.claims`` names an entry of ``spec.resourceClaims``, a ``request`` names a
  request of that claim, and the claims and templates they name resolve in the given files (a note
  otherwise: they may exist in the cluster);
- the removed ``resource.k8s.io/v1alpha2`` shape: an error that shows the ``v1`` equivalent
  (:func:`v1_equivalent`; ``--fix`` writes it).

Valid Kubernetes that nvdra cannot serve (a consumable-capacity request) is valid here; ``nvdra
explain`` says why no device fits it.
"""

from __future__ import annotations

__all__ = ["Finding", "Report", "fix_sources", "v1_equivalent", "validate_documents"]

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import attrs
import yaml

from nvdra.alloc import CelError, builtin_device_classes, compile_selector
from nvdra.core.config import load_config
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import KNOWN_GATES, FeatureGates, GateSource, GateState
from nvdra.fabric.requirements import demand_findings, fix_claim
from nvdra.imex.objects import workload_claim_template
from nvdra.plugins.gpu.config import DRIVER_NAME
from nvdra.tool.inputs import POD_SPEC_PATHS, Document, field_path, parse_path
from nvdra.tool.schemas import (
    CrdSchemas,
    SchemaUnavailable,
    crd_problems,
    crd_schemas,
    packaged_crds,
    schema_problems,
)

CD_DRIVER = "compute-domain.nvidia.com"
CONFIG_DRIVERS = (DRIVER_NAME, CD_DRIVER)
DRA_GROUP = "resource.k8s.io"
DRA_KINDS = ("ResourceClaim", "ResourceClaimTemplate", "DeviceClass", "ResourceSlice")
REMOVED_VERSIONS = {"v1alpha2": "1.31", "v1alpha3": "1.32"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
LIMIT = 32  # requests, constraints, configs and selectors per claim / class
SUBREQUEST_LIMIT = 8
# v1alpha2 class names the old drivers and examples used → today's DeviceClass
CLASS_NAMES = {"nvidia.com/gpu": "gpu.nvidia.com", "gpu.nvidia.com": "gpu.nvidia.com"}
DRIVER_NAMES = {"gpu.resource.nvidia.com": DRIVER_NAME}  # the classic (v1alpha2) driver's name


@attrs.frozen
class Finding:
    """One result for an object: ``error``, ``note`` or ``skipped``; ``path`` is a field path."""

    severity: str
    path: str
    message: str
    line: int

    def text(self) -> str:
        """``line N: PATH: message`` (the path omitted when empty)."""
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message}"


@attrs.define
class Report:
    """What :func:`validate_documents` found for one document."""

    doc: Document
    findings: list[Finding] = attrs.Factory(list)
    fixed: dict[str, Any] | None = None
    """The ``v1`` equivalent of a removed-API object (what ``--fix`` writes)."""

    @property
    def errors(self) -> list[Finding]:
        """The findings that make the object invalid."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def status(self) -> str:
        """``invalid``, ``skipped`` or ``valid``."""
        if self.errors:
            return "invalid"
        if any(f.severity == "skipped" for f in self.findings):
            return "skipped"
        return "valid"


def _value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Collects findings of one document."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def add(self, severity: str, path: str | Sequence[str | int], message: str) -> None:
        text = path if isinstance(path, str) else field_path(path)
        line = self.report.doc.line_of(parse_path(text))
        finding = Finding(severity, text, message, line)
        if finding not in self.report.findings:
            self.report.findings.append(finding)

    def error(self, path: str | Sequence[str | int], message: str) -> None:
        self.add("error", path, message)

    def note(self, path: str | Sequence[str | int], message: str) -> None:
        self.add("note", path, message)


# -- gates -----------------------------------------------------------------------------------------


def _all_gates_on() -> FeatureGates:
    """Every gate enabled (rules not checked): what a config can be valid under at all."""
    return FeatureGates(
        tuple(
            GateState(spec=s, enabled=True, source=GateSource.OVERRIDE)
            for s in sorted(KNOWN_GATES, key=lambda s: s.name)
        )
    )


def _without(gates: FeatureGates, name: str) -> FeatureGates:
    return FeatureGates(
        tuple(attrs.evolve(st, enabled=False) if st.name == name else st for st in gates.states)
    )


def _config_check(chk: _Checker, parameters: Any, path: str, gates: FeatureGates | None) -> None:
    """One opaque config's parameters: an error, or (without ``gates``) a note naming needed gates."""
    if not isinstance(parameters, Mapping):
        chk.error(f"{path}.parameters", f"got {_value(parameters)}, must be an object (a config kind)")
        return
    text = json.dumps(parameters, sort_keys=True, default=str)
    for severity, where, message in _config_findings(text, path, gates.to_spec() if gates else None):
        chk.add(severity, where, message)


@lru_cache(maxsize=4096)
def _config_findings(parameters: str, path: str, gate_spec: str | None) -> tuple[tuple[str, str, str], ...]:
    """(severity, path, message) of one config (cached: a file repeats the same configs)."""
    from nvdra.core.featuregates import parse_feature_gates

    obj = json.loads(parameters)
    gates = parse_feature_gates(gate_spec) if gate_spec is not None else None
    try:
        load_config(obj, gates=gates or _all_gates_on(), path=f"{path}.parameters")
    except ConfigError as exc:
        out = []
        for line in str(exc).splitlines():
            where, sep, message = line.partition(": ")
            out.append(("error", where if sep else f"{path}.parameters", message if sep else line))
        return tuple(out)
    if gates is not None:
        return ()
    everything = _all_gates_on()
    needed = []
    for spec in KNOWN_GATES:
        if spec.default:
            continue
        try:
            load_config(obj, gates=_without(everything, spec.name), path=path)
        except ConfigError:
            needed.append(spec.name)
    if not needed:
        return ()
    message = (
        "valid when the plugin runs with feature gate "
        + " and ".join(f"{g}=true" for g in needed)
        + " (pass the cluster's gates with --feature-gates to check)"
    )
    return (("note", f"{path}.parameters", message),)


def _configs(
    chk: _Checker, configs: Any, path: str, gates: FeatureGates | None, requests: set[str] | None
) -> None:
    if not isinstance(configs, list):
        return
    if len(configs) > LIMIT:
        chk.error(path, f"{len(configs)} entries, at most {LIMIT}")
    for i, cfg in enumerate(configs):
        where = f"{path}[{i}]"
        if not isinstance(cfg, Mapping):
            continue
        for name in cfg.get("requests") or []:
            if requests is not None and str(name).split("/")[0] not in requests:
                known = ", ".join(sorted(requests)) or "none"
                chk.error(f"{where}.requests", f'"{name}" names no request of this claim (requests: {known})')
        opaque = cfg.get("opaque")
        if not isinstance(opaque, Mapping):
            continue
        driver = opaque.get("driver")
        if not isinstance(driver, str) or not _DNS_SUBDOMAIN.match(driver):
            chk.error(
                f"{where}.opaque.driver", f"got {_value(driver)}, must be a DNS subdomain (a driver name)"
            )
        elif driver in CONFIG_DRIVERS:
            _config_check(chk, opaque.get("parameters"), f"{where}.opaque", gates)


# -- DRA objects -----------------------------------------------------------------------------------


def _selectors(chk: _Checker, selectors: Any, path: str) -> None:
    if not isinstance(selectors, list):
        return
    if len(selectors) > LIMIT:
        chk.error(path, f"{len(selectors)} selectors, at most {LIMIT}")
    for i, sel in enumerate(selectors):
        cel = sel.get("cel") if isinstance(sel, Mapping) else None
        expression = cel.get("expression") if isinstance(cel, Mapping) else None
        if not isinstance(expression, str) or not expression.strip():
            chk.error(f"{path}[{i}].cel.expression", "required: a CEL expression")
            continue
        try:
            compile_selector(expression)
        except CelError as exc:
            chk.error(f"{path}[{i}].cel.expression", str(exc).replace("\n", "\n    "))


def _request_spec(chk: _Checker, raw: Mapping[str, Any], path: str, classes: set[str]) -> None:
    name = raw.get("deviceClassName")
    if not isinstance(name, str) or not name:
        chk.error(f"{path}.deviceClassName", "required: the DeviceClass to allocate from")
    elif name not in classes:
        chk.note(
            f"{path}.deviceClassName",
            f'DeviceClass "{name}" is neither one of the chart\'s '
            f"({', '.join(sorted(builtin_device_classes()))}) nor in the given files; "
            "it must exist in the cluster",
        )
    mode = raw.get("allocationMode") or "ExactCount"
    if mode not in ("ExactCount", "All"):
        chk.error(f"{path}.allocationMode", f"got {_value(mode)}, must be ExactCount or All")
    count = raw.get("count")
    if mode == "ExactCount" and isinstance(count, int) and count <= 0:
        chk.error(f"{path}.count", f"got {count}, must be greater than zero")
    if mode == "All" and count is not None:
        chk.error(f"{path}.count", "must not be set with allocationMode All")
    _selectors(chk, raw.get("selectors"), f"{path}.selectors")


def _requests(chk: _Checker, requests: list[Any], base: str, classes: set[str]) -> tuple[list[str], set[str]]:
    """Check each request; returns the request names and the ``request/subrequest`` names."""
    if len(requests) > LIMIT:
        chk.error(f"{base}.requests", f"{len(requests)} entries, at most {LIMIT}")
    names: list[str] = []
    subs: set[str] = set()
    for i, req in enumerate(requests):
        path = f"{base}.requests[{i}]"
        if not isinstance(req, Mapping):
            continue
        name = req.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            chk.error(f"{path}.name", f"got {_value(name)}, must be a DNS label (lower case, digits, '-')")
        elif name in names:
            chk.error(f"{path}.name", f'duplicate request name "{name}"')
        else:
            names.append(name)
        first = req.get("firstAvailable")
        exactly = req.get("exactly") if "exactly" in req else (req if "deviceClassName" in req else None)
        if (exactly is None) == (not first):
            chk.error(path, "exactly one of exactly or firstAvailable must be set")
        if isinstance(exactly, Mapping):
            _request_spec(chk, exactly, f"{path}.exactly" if "exactly" in req else path, classes)
        if isinstance(first, list):
            if len(first) > SUBREQUEST_LIMIT:
                chk.error(f"{path}.firstAvailable", f"{len(first)} subrequests, at most {SUBREQUEST_LIMIT}")
            for j, sub in enumerate(first):
                if isinstance(sub, Mapping):
                    _request_spec(chk, sub, f"{path}.firstAvailable[{j}]", classes)
                    subs.add(f"{name}/{sub.get('name')}")
    return names, subs


def _constraints(chk: _Checker, constraints: list[Any], base: str, known: set[str]) -> None:
    if len(constraints) > LIMIT:
        chk.error(f"{base}.constraints", f"{len(constraints)} entries, at most {LIMIT}")
    for i, con in enumerate(constraints):
        if not isinstance(con, Mapping):
            continue
        attribute = con.get("matchAttribute") or con.get("distinctAttribute")
        if isinstance(attribute, str) and "/" not in attribute:
            field = "matchAttribute" if "matchAttribute" in con else "distinctAttribute"
            chk.error(
                f"{base}.constraints[{i}].{field}",
                f'"{attribute}" must be fully qualified (DOMAIN/NAME, e.g. gpu.nvidia.com/{attribute})',
            )
        for name in con.get("requests") or []:
            if name not in known:
                chk.error(
                    f"{base}.constraints[{i}].requests",
                    f'"{name}" names no request of this claim '
                    f"(requests: {', '.join(sorted(known)) or 'none'})",
                )


def _claim_spec(
    chk: _Checker, spec: Any, base: str, gates: FeatureGates | None, classes: set[str]
) -> set[str]:
    """Check a claim spec (``spec`` of a claim, ``spec.spec`` of a template); returns request names."""
    devices = spec.get("devices") if isinstance(spec, Mapping) else None
    if not isinstance(devices, Mapping):
        return set()
    base = f"{base}.devices"
    requests = devices.get("requests")
    names, subs = _requests(chk, requests if isinstance(requests, list) else [], base, classes)
    constraints = devices.get("constraints")
    _constraints(chk, constraints if isinstance(constraints, list) else [], base, set(names) | subs)
    _configs(chk, devices.get("config"), f"{base}.config", gates, set(names))
    return set(names)


def _dra_object(chk: _Checker, obj: Mapping[str, Any], gates: FeatureGates | None, classes: set[str]) -> None:
    kind = obj.get("kind")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not name and not (isinstance(meta, Mapping) and meta.get("generateName")):
        chk.error("metadata.name", "required field is missing")
    elif isinstance(name, str) and not _DNS_SUBDOMAIN.match(name):
        chk.error("metadata.name", f'"{name}" is not a DNS subdomain (lower case, digits, "-", ".")')
    spec = obj.get("spec")
    if kind == "ResourceClaim":
        _claim_spec(chk, spec, "spec", gates, classes)
    elif kind == "ResourceClaimTemplate":
        inner = spec.get("spec") if isinstance(spec, Mapping) else None
        _claim_spec(chk, inner, "spec.spec", gates, classes)
    if kind in ("ResourceClaim", "ResourceClaimTemplate") and not chk.report.errors:
        _fabric_demands(chk, obj)  # advice for well-formed claims only (it reads typed fields)
    elif kind == "DeviceClass" and isinstance(spec, Mapping):
        _selectors(chk, spec.get("selectors"), "spec.selectors")
        _configs(chk, spec.get("config"), "spec.config", gates, None)


def _fabric_demands(chk: _Checker, obj: Mapping[str, Any]) -> None:
    """fabricTopologyConfig fields the selectors and constraints do not say (``--fix`` adds them)."""
    for path, message in demand_findings(obj):
        chk.error(path, message)
    fixed, changes = fix_claim(obj)
    if changes:
        chk.report.fixed = fixed


# -- Pods and workloads ----------------------------------------------------------------------------


@attrs.frozen
class _Index:
    """Claims and templates of the input by (namespace, name), and the DeviceClass names known."""

    claims: Mapping[tuple[str, str], Mapping[str, Any]]
    templates: Mapping[tuple[str, str], Mapping[str, Any]]
    classes: set[str]


def _namespace(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    return ns if isinstance(ns, str) and ns else "default"


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else ""


def _request_names(claim_spec: Any) -> set[str]:
    devices = claim_spec.get("devices") if isinstance(claim_spec, Mapping) else None
    reqs = devices.get("requests") if isinstance(devices, Mapping) else None
    out = set()
    for r in reqs if isinstance(reqs, list) else []:
        if isinstance(r, Mapping) and isinstance(r.get("name"), str):
            out.add(r["name"])
            for sub in r.get("firstAvailable") or []:
                if isinstance(sub, Mapping):
                    out.add(f"{r['name']}/{sub.get('name')}")
    return out


def _pod_claims(
    chk: _Checker, claims: list[Any], base: str, namespace: str, index: _Index
) -> dict[str, set[str] | None]:
    """The pod's ``resourceClaims`` entries: name → the request names of the claim (None: unknown)."""
    entries: dict[str, set[str] | None] = {}
    for i, entry in enumerate(claims):
        if not isinstance(entry, Mapping):
            continue
        path = f"{base}.resourceClaims[{i}]"
        by_name, by_template = entry.get("resourceClaimName"), entry.get("resourceClaimTemplateName")
        if (by_name is None) == (by_template is None):
            chk.error(path, "exactly one of resourceClaimName or resourceClaimTemplateName must be set")
            continue
        if by_name is not None:
            field, kind, found = (
                "resourceClaimName",
                "ResourceClaim",
                index.claims.get((namespace, str(by_name))),
            )
            spec = found.get("spec") if found is not None else None
        else:
            field, kind = "resourceClaimTemplateName", "ResourceClaimTemplate"
            found = index.templates.get((namespace, str(by_template)))
            outer = found.get("spec") if found is not None else None
            spec = outer.get("spec") if isinstance(outer, Mapping) else None
        if found is None:
            chk.note(
                f"{path}.{field}",
                f"{kind} {namespace}/{by_name or by_template} is not in the given files; "
                "it must exist in the cluster",
            )
        if isinstance(entry.get("name"), str):
            entries[entry["name"]] = _request_names(spec) if found is not None else None
    return entries


def _pod_spec(chk: _Checker, obj: Mapping[str, Any], where: tuple[str, ...], index: _Index) -> None:
    spec: Any = obj
    for key in where:
        spec = spec.get(key) if isinstance(spec, Mapping) else None
    if not isinstance(spec, Mapping):
        return
    base = ".".join(where)
    claims = spec.get("resourceClaims")
    entries = _pod_claims(chk, claims if isinstance(claims, list) else [], base, _namespace(obj), index)
    for group in ("initContainers", "containers"):
        containers = spec.get(group)
        for c, container in enumerate(containers if isinstance(containers, list) else []):
            resources = container.get("resources") if isinstance(container, Mapping) else None
            used = resources.get("claims") if isinstance(resources, Mapping) else None
            for j, use in enumerate(used if isinstance(used, list) else []):
                if isinstance(use, Mapping):
                    _container_claim(chk, use, f"{base}.{group}[{c}].resources.claims[{j}]", base, entries)


def _container_claim(
    chk: _Checker, use: Mapping[str, Any], path: str, base: str, entries: Mapping[str, set[str] | None]
) -> None:
    name = use.get("name")
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        chk.error(
            f"{path}.name", f"{_value(name)} names no entry of {base}.resourceClaims (entries: {known})"
        )
        return
    request, requests = use.get("request"), entries[str(name)]
    if request and requests is not None and request not in requests:
        chk.error(
            f"{path}.request",
            f'"{request}" names no request of claim "{name}" '
            f"(requests: {', '.join(sorted(requests)) or 'none'})",
        )


# -- the removed v1alpha2 API ----------------------------------------------------------------------


def v1_equivalent(obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
    """The ``resource.k8s.io/v1`` object for a ``v1alpha2`` ResourceClaim, ResourceClaimTemplate or
    ResourceClass, and what could not be carried over; None for other objects."""
    kind = obj.get("kind")
    meta = dict(obj.get("metadata") or {})
    lost: list[str] = []
    if kind == "ResourceClass":
        driver = str(obj.get("driverName") or DRIVER_NAME)
        driver = DRIVER_NAMES.get(driver, driver)
        if obj.get("parametersRef"):
            lost.append("parametersRef: put the parameters under spec.config[].opaque.parameters")
        if obj.get("suitableNodes"):
            lost.append("suitableNodes: devices now say where they are (ResourceSlices)")
        selectors = {"selectors": [{"cel": {"expression": f"device.driver == '{driver}'"}}]}
        return {
            "apiVersion": f"{DRA_GROUP}/v1",
            "kind": "DeviceClass",
            "metadata": meta,
            "spec": selectors,
        }, lost
    if kind not in ("ResourceClaim", "ResourceClaimTemplate"):
        return None
    outer: Mapping[str, Any] = obj["spec"] if isinstance(obj.get("spec"), Mapping) else {}
    inner = outer.get("spec") if kind == "ResourceClaimTemplate" else outer
    old: Mapping[str, Any] = inner if isinstance(inner, Mapping) else {}
    class_name = str(old.get("resourceClassName") or "gpu.nvidia.com")
    parameters = old.get("parameters")
    fabric = parameters.get("fabricTopologyConfig") if isinstance(parameters, Mapping) else None
    size = fabric.get("partitionSize") if isinstance(fabric, Mapping) else None
    count = size if isinstance(size, int) and size > 1 else 1
    request = "gpus" if count > 1 else "gpu"
    exactly: dict[str, Any] = {"deviceClassName": CLASS_NAMES.get(class_name, class_name)}
    if count > 1:
        exactly["count"] = count
    devices: dict[str, Any] = {"requests": [{"name": request, "exactly": exactly}]}
    if count > 1:
        devices["constraints"] = [
            {"requests": [request], "matchAttribute": f"{DRIVER_NAME}/partition{count}"}
        ]
    if isinstance(parameters, Mapping):
        devices["config"] = [
            {"requests": [request], "opaque": {"driver": DRIVER_NAME, "parameters": dict(parameters)}}
        ]
    if old.get("parametersRef"):
        ref = old["parametersRef"]
        lost.append(
            f"parametersRef ({_value(ref)}): put that object's GpuConfig under "
            "spec.devices.config[].opaque.parameters"
        )
    if old.get("allocationMode"):
        lost.append(
            "allocationMode (Immediate/WaitForFirstConsumer): the scheduler allocates when a pod needs it"
        )
    claim_spec = {"devices": devices}
    spec: dict[str, Any] = claim_spec if kind == "ResourceClaim" else {"spec": claim_spec}
    if kind == "ResourceClaimTemplate" and isinstance(outer.get("metadata"), Mapping):
        spec = {"metadata": outer["metadata"], **spec}
    return {"apiVersion": f"{DRA_GROUP}/v1", "kind": kind, "metadata": meta, "spec": spec}, lost


def v1alpha3_equivalent(obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
    """The ``resource.k8s.io/v1`` object for a ``v1alpha3`` one (structured parameters, 1.31): the
    same fields, but a request's device fields move under ``exactly``."""
    kind = obj.get("kind")
    if kind not in ("ResourceClaim", "ResourceClaimTemplate", "DeviceClass"):
        return None
    fixed: dict[str, Any] = json.loads(json.dumps(obj))
    fixed["apiVersion"] = f"{DRA_GROUP}/v1"
    spec: Any = fixed.get("spec")
    claim_spec: Any = spec.get("spec") if kind == "ResourceClaimTemplate" and isinstance(spec, dict) else spec
    devices: Any = claim_spec.get("devices") if isinstance(claim_spec, dict) else None
    requests: Any = devices.get("requests") if isinstance(devices, dict) else None
    if not isinstance(requests, list):
        requests = []
    for i, req in enumerate(requests):
        if isinstance(req, dict) and "exactly" not in req and "firstAvailable" not in req:
            body = {k: v for k, v in req.items() if k != "name"}
            requests[i] = {"name": req.get("name"), "exactly": body}
    return fixed, []


def _removed_api(chk: _Checker, obj: Mapping[str, Any], version: str) -> dict[str, Any] | None:
    api_version = str(obj.get("apiVersion"))
    removed_in = REMOVED_VERSIONS[version]
    converted = v1_equivalent(obj) if version == "v1alpha2" else v1alpha3_equivalent(obj)
    if converted is None:
        chk.error(
            "apiVersion",
            f"{api_version} was removed in Kubernetes {removed_in}; write {obj.get('kind')} as "
            f"{DRA_GROUP}/v1 (Kubernetes 1.34+) or v1beta1/v1beta2",
        )
        return None
    fixed, lost = converted
    shown = yaml.safe_dump(fixed, sort_keys=False).rstrip().replace("\n", "\n    ")
    message = (
        f"{api_version} was removed in Kubernetes {removed_in} (drivers no longer allocate; the "
        f"scheduler does). The {DRA_GROUP}/v1 equivalent (nvdra validate --fix writes it):\n    {shown}"
    )
    for item in lost:
        message += f"\n  not carried over: {item}"
    chk.error("apiVersion", message)
    return fixed


# -- driver ----------------------------------------------------------------------------------------


def _index(docs: Sequence[Document]) -> _Index:
    claims, templates = {}, {}
    classes = set(builtin_device_classes())
    for doc in docs:
        key = (_namespace(doc.obj), _name(doc.obj))
        if doc.kind == "ResourceClaim":
            claims[key] = doc.obj
        elif doc.kind == "ResourceClaimTemplate":
            templates[key] = doc.obj
        elif doc.kind == "DeviceClass":
            classes.add(key[1])
    for doc in docs:  # the channel template a ComputeDomain's controller creates for its workloads
        if doc.kind == "ComputeDomain":
            meta = doc.obj.get("metadata")
            named = meta if isinstance(meta, dict) else {}
            with_uid = {**doc.obj, "metadata": {"uid": "assigned-by-the-api-server", **named}}
            try:
                made = workload_claim_template(with_uid)
            except (KeyError, TypeError, AttributeError, ValueError):
                continue  # no channel template named: nothing to resolve against
            templates.setdefault((_namespace(made), _name(made)), made)
    return _Index(claims=claims, templates=templates, classes=classes)


def validate_document(
    doc: Document,
    *,
    gates: FeatureGates | None,
    kubernetes_version: str,
    index: _Index,
    crds: CrdSchemas | None = None,
) -> Report:
    """Everything :func:`validate_documents` checks, for one document (``crds``: the schemas of
    custom resources, by apiVersion and kind)."""
    crds = crds or {}
    report = Report(doc)
    chk = _Checker(report)
    obj = doc.obj
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        chk.error("apiVersion", "required field is missing")
    if not isinstance(kind, str) or not kind:
        chk.error("kind", "required field is missing")
    if report.errors:
        return report
    group, _, version = str(api_version).rpartition("/")
    if group == DRA_GROUP and version in REMOVED_VERSIONS:
        report.fixed = _removed_api(chk, obj, version)
        if report.fixed is not None:  # the v1 equivalent also says its fabricTopologyConfig
            report.fixed = fix_claim(report.fixed)[0]
        return report
    try:
        custom = crd_problems(obj, crds)
        found = custom if custom is not None else schema_problems(obj, kubernetes_version)
        for path, message in found:
            chk.error(path, message)
    except SchemaUnavailable as exc:
        if group == DRA_GROUP and kind in DRA_KINDS:
            chk.note("", f"schema not checked: {exc}")
        elif kind not in POD_SPEC_PATHS:
            chk.add("skipped", "", str(exc))
    if group == DRA_GROUP and kind in DRA_KINDS:
        _dra_object(chk, obj, gates, index.classes)
    elif kind in POD_SPEC_PATHS:
        _pod_spec(chk, obj, POD_SPEC_PATHS[str(kind)], index)
    return report


def validate_documents(
    docs: Sequence[Document],
    *,
    gates: FeatureGates | None,
    kubernetes_version: str,
    crds: Sequence[Mapping[str, Any]] = (),
) -> list[Report]:
    """A report for every document, in order (claims and templates resolve across all of them).

    Custom resources are checked against the CustomResourceDefinitions in ``docs``, else ``crds``, else
    the ones nvdra ships (ComputeDomain, ComputeDomainClique).
    """
    index = _index(docs)
    inputs = [d.obj for d in docs if d.kind == "CustomResourceDefinition"]
    definitions = [*packaged_crds(), *crds, *inputs]  # later ones win: what the user gives, then its inputs
    schemas = crd_schemas(definitions)
    return [
        validate_document(d, gates=gates, kubernetes_version=kubernetes_version, index=index, crds=schemas)
        for d in docs
    ]


def fix_sources(reports: Iterable[Report]) -> dict[str, str]:
    """Source label → its text with every removed-API document replaced by its ``v1`` equivalent."""
    by_source: dict[str, list[Report]] = {}
    for r in reports:
        if r.fixed is not None and r.doc.item is None:
            by_source.setdefault(r.doc.source.label, []).append(r)
    out = {}
    for label, fixes in by_source.items():
        text = fixes[0].doc.source.text
        for r in sorted(fixes, key=lambda r: r.doc.span[0], reverse=True):
            start, end = r.doc.span
            text = text[:start] + yaml.safe_dump(r.fixed, sort_keys=False) + text[end:].lstrip("\n")
        out[label] = text
    return out
