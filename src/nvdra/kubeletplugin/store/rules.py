"""The apiserver's validation of the kinds nvdra writes: ObjectMeta, ResourceClaim specs, immutable
fields, and the RawExtensions compared by their bytes."""

from __future__ import annotations

__all__ = [
    "builtin_update_problems",
    "claim_spec_problems",
    "compact_json",
    "invalid",
    "meta_problems",
    "raw_extension_paths",
    "raw_extensions",
]

import json
import re
from collections.abc import Mapping
from typing import Any

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.objects import JsonObject, ResourceType
from nvdra.kubeletplugin.store.schema import value_at


def compact_json(value: Any) -> str:
    """The bytes the apiserver's JSON encoder writes for a value: compact, keys in their order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def raw_extension_paths(rt: ResourceType) -> tuple[str, ...] | None:
    """Where ``rt``'s spec holds RawExtensions (opaque ``parameters``): the path of the config list."""
    if (rt.group, rt.plural) == ("resource.k8s.io", "resourceclaims"):
        return ("spec", "devices", "config")
    if (rt.group, rt.plural) == ("resource.k8s.io", "resourceclaimtemplates"):
        return ("spec", "spec", "devices", "config")
    if (rt.group, rt.plural) == ("resource.k8s.io", "deviceclasses"):
        return ("spec", "config")
    return None


def raw_extensions(rt: ResourceType, obj: JsonObject) -> dict[str, Any]:
    """Field path → value of each opaque ``parameters`` RawExtension in ``obj``'s spec."""
    where = raw_extension_paths(rt)
    configs = value_at(obj, where) if where else None
    if not isinstance(configs, list):
        return {}
    prefix = ".".join(where or ())
    return {
        f"{prefix}[{i}].opaque.parameters": c["opaque"]["parameters"]
        for i, c in enumerate(configs)
        if isinstance(c, dict) and isinstance(c.get("opaque"), dict) and "parameters" in c["opaque"]
    }


def invalid(rt: ResourceType, name: str, problems: list[str]) -> KubeApiError:
    detail = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
    return KubeApiError(f'{rt.qualified_kind} "{name}" is invalid: {detail}', status=422)


_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_HELP = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_NAME_PART_HELP = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_HELP = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _qualified_name_problems(path: str, key: str) -> list[str]:
    """Kubernetes' qualified names (``prefix/name``: label and annotation keys, finalizers)."""
    prefix, slash, name = key.rpartition("/")
    problems = []
    if slash and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        problems.append(f'{path}: Invalid value: "{key}": prefix part {_SUBDOMAIN_HELP}')
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        problems.append(f'{path}: Invalid value: "{key}": {_NAME_PART_HELP}')
    return problems


def meta_problems(rt: ResourceType, meta: Mapping[str, Any]) -> list[str]:
    """The apiserver's ObjectMeta validation: name, namespace, labels, annotations, finalizers."""
    problems: list[str] = []
    name = str(meta.get("name", ""))
    is_namespace = (rt.group, rt.plural) == ("", "namespaces")
    if is_namespace and (len(name) > 63 or not _SUBDOMAIN.match(name) or "." in name):
        problems.append(f'metadata.name: Invalid value: "{name}": {_LABEL_HELP}')
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        problems.append(f'metadata.name: Invalid value: "{name}": {_SUBDOMAIN_HELP}')
    namespace = meta.get("namespace")
    if (
        rt.namespaced
        and namespace
        and (len(namespace) > 63 or "." in namespace or not _SUBDOMAIN.match(namespace))
    ):
        problems.append(f'metadata.namespace: Invalid value: "{namespace}": {_LABEL_HELP}')
    for key, value in (meta.get("labels") or {}).items():
        problems += _qualified_name_problems("metadata.labels", str(key))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f'metadata.labels: Invalid value: "{value}": {_VALUE_HELP}')
    for key in meta.get("annotations") or {}:
        problems += _qualified_name_problems("metadata.annotations", str(key))
    if len(json.dumps(meta.get("annotations") or {})) > 256 * 1024:
        problems.append("metadata.annotations: Too long: must have at most 262144 bytes")
    for i, finalizer in enumerate(meta.get("finalizers") or []):
        problems += _qualified_name_problems(f"metadata.finalizers[{i}]", str(finalizer))
    return problems


_ALLOCATION_MODES = ("All", "ExactCount")
_MAX_REQUESTS = 32
_MAX_SUBREQUESTS = 8
_MAX_PARAMETERS = 10 * 1024


def _dns_label_problems(path: str, value: Any) -> list[str]:
    text = str(value) if value is not None else ""
    if not text:
        return [f"{path}: Required value"]
    if len(text) > 63 or "." in text or not _SUBDOMAIN.match(text):
        return [f'{path}: Invalid value: "{text}": {_LABEL_HELP}']
    return []


def _class_problems(path: str, exact: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    device_class = exact.get("deviceClassName")
    if not device_class:
        problems.append(f"{path}.deviceClassName: Required value")
    elif len(device_class) > 253 or not _SUBDOMAIN.match(device_class):
        problems.append(f'{path}.deviceClassName: Invalid value: "{device_class}": {_SUBDOMAIN_HELP}')
    mode = exact.get("allocationMode", "ExactCount")
    if mode not in _ALLOCATION_MODES:
        problems.append(
            f'{path}.allocationMode: Unsupported value: "{mode}": supported values: "All", "ExactCount"'
        )
    count = exact.get("count")
    if mode == "ExactCount" and count is not None and (not isinstance(count, int) or count <= 0):
        problems.append(f"{path}.count: Invalid value: {count}: must be greater than zero")
    if mode == "All" and count is not None:
        problems.append(
            f"{path}.count: Invalid value: {count}: must not be specified when allocationMode is 'All'"
        )
    return problems


def _request_problems(where: str, request: Mapping[str, Any], names: set[str]) -> list[str]:
    """One request's rules; adds its name (and ``name/sub`` of its subrequests) to ``names``."""
    name = request.get("name")
    problems = _dns_label_problems(f"{where}.name", name)
    if name in names:
        problems.append(f'{where}.name: Duplicate value: "{name}"')
    names.add(str(name))
    if len([k for k in ("exactly", "firstAvailable") if request.get(k)]) != 1:
        problems.append(f"{where}: Invalid value: exactly one of `exactly` or `firstAvailable` is required")
    if request.get("exactly"):
        problems += _class_problems(f"{where}.exactly", request["exactly"])
    subrequests = request.get("firstAvailable") or []
    if len(subrequests) > _MAX_SUBREQUESTS:
        problems.append(f"{where}.firstAvailable: Too many: {len(subrequests)}: must have at most 8 items")
    for j, sub in enumerate(subrequests):
        problems += _dns_label_problems(f"{where}.firstAvailable[{j}].name", sub.get("name"))
        problems += _class_problems(f"{where}.firstAvailable[{j}]", sub)
        names.add(f"{name}/{sub.get('name')}")
    return problems


_NOT_A_REQUEST = (
    "must be the name of a request in the claim or the name of a request and a subrequest separated by '/'"
)


def _config_problems(where: str, config: Mapping[str, Any], names: set[str]) -> list[str]:
    problems = [
        f'{where}.requests[{j}]: Invalid value: "{ref}": {_NOT_A_REQUEST}'
        for j, ref in enumerate(config.get("requests") or [])
        if ref not in names
    ]
    opaque = config.get("opaque")
    if not isinstance(opaque, dict):
        return [*problems, f"{where}.opaque: Required value"]
    driver = opaque.get("driver") or ""
    if not driver or len(driver) > 63 or not _SUBDOMAIN.match(driver):
        problems.append(f'{where}.opaque.driver: Invalid value: "{driver}": {_SUBDOMAIN_HELP}')
    parameters = opaque.get("parameters")
    if not isinstance(parameters, dict):
        problems.append(f"{where}.opaque.parameters: Invalid value: parameters must be a valid JSON object")
    elif len(compact_json(parameters)) > _MAX_PARAMETERS:
        problems.append(f"{where}.opaque.parameters: Too long: may not be more than {_MAX_PARAMETERS} bytes")
    return problems


def claim_spec_problems(spec: Any, path: str) -> list[str]:
    """The apiserver's ResourceClaimSpec rules (v1 shape) that a driver's generated objects can break:
    request names, exactly one of ``exactly``/``firstAvailable``, a device class, allocation mode and
    count, config and constraint references to known requests, the opaque driver and parameters."""
    devices = (spec or {}).get("devices") or {}
    requests = devices.get("requests") or []
    problems: list[str] = []
    if len(requests) > _MAX_REQUESTS:
        problems.append(
            f"{path}.devices.requests: Too many: {len(requests)}: must have at most {_MAX_REQUESTS} items"
        )
    names: set[str] = set()
    for i, request in enumerate(requests):
        problems += _request_problems(
            f"{path}.devices.requests[{i}]", request if isinstance(request, dict) else {}, names
        )
    for i, config in enumerate(devices.get("config") or []):
        problems += _config_problems(f"{path}.devices.config[{i}]", config, names)
    for i, constraint in enumerate(devices.get("constraints") or []):
        problems += [
            f'{path}.devices.constraints[{i}].requests[{j}]: Invalid value: "{ref}": {_NOT_A_REQUEST}'
            for j, ref in enumerate(constraint.get("requests") or [])
            if ref not in names
        ]
    return problems


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def _pod_spec_core(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
    for field in ("containers", "initContainers"):
        out[field] = [
            {k: v for k, v in c.items() if k != "image"} for c in spec.get(field) or [] if isinstance(c, dict)
        ]
    return out


def builtin_update_problems(
    rt: ResourceType, old: JsonObject, new: JsonObject, old_raw: Mapping[str, str], new_raw: Mapping[str, str]
) -> list[str]:
    """The apiserver's immutable-field rules of the built-in kinds nvdra writes."""
    what = (rt.group, rt.plural)
    claims = (("resource.k8s.io", "resourceclaims"), ("resource.k8s.io", "resourceclaimtemplates"))
    if what in claims and (old.get("spec") != new.get("spec") or dict(old_raw) != dict(new_raw)):
        return [f"spec: Invalid value: {compact_json(new.get('spec'))}: field is immutable"]
    if what in (("apps", "daemonsets"), ("apps", "deployments")):
        before, after = value_at(old, ("spec", "selector")), value_at(new, ("spec", "selector"))
        if before != after:
            return [f"spec.selector: Invalid value: {compact_json(after)}: field is immutable"]
    if what == ("", "pods") and _pod_spec_core(old.get("spec")) != _pod_spec_core(new.get("spec")):
        return [
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
            "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only "
            "additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set "
            "to 1 if it was previously negative)"
        ]
    return []
