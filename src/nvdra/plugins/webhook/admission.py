"""Admission decisions for ResourceClaims and ResourceClaimTemplates: pure code, no I/O.

What the webhook checks is exactly what the kubelet plugins check at prepare time: every
``devices.config[i].opaque`` entry whose driver is one of nvdra's is decoded strictly, normalized and
validated by :func:`nvdra.core.config.load_config`, the same function the plugins call. So a claim the
webhook admits cannot fail on its configs later, and one it denies would have failed on the node.

Invariants owned here:
- objects: ``resource.k8s.io`` ``resourceclaims`` (configs at ``spec.devices.config``) and
  ``resourceclaimtemplates`` (``spec.spec.devices.config``) in v1, v1beta2 and v1beta1. The config
  list has the same shape in all three versions (only requests differ in v1beta1), so no conversion
  is needed to read it;
- drivers: ``gpu.nvidia.com`` takes GpuConfig, MigDeviceConfig and VfioDeviceConfig (upstream's
  webhook wrongly rejects the last); ``compute-domain.nvidia.com`` takes the two ComputeDomain configs
  (upstream never looks at them). A kind no device of its driver can use is denied: the plugin would
  skip it silently. Entries of other drivers and non-opaque entries are left alone;
- every problem of every entry is reported, each as ``<field path>: <what is wrong>``, joined with
  ``"; "``, reason ``Invalid``, as upstream; the path starts at the object
  (``spec.devices.config[0].opaque.parameters.sharing.strategy``);
- feature gates are the cluster's (the chart hands every component one map), with one exception:
  FabricTopologySupport may be switched on per node by a Node label, which a cluster-wide webhook
  cannot see, so fabric fields are checked for validity as if the gate were on and the node's plugin
  enforces the gate itself at prepare time;
- a malformed request never raises: it is answered with a denial that says what is wrong.
"""

from __future__ import annotations

__all__ = [
    "ADMISSION_API_VERSION",
    "CONFIG_PATHS",
    "DRIVER_KINDS",
    "RESOURCE_GROUP",
    "RESOURCE_VERSIONS",
    "admission_gates",
    "config_problems",
    "review",
]

from collections.abc import Mapping, Sequence
from typing import Any

from nvdra.core.config import ConfigErrors, load_config
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.fabric.requirements import demand_problems

ADMISSION_API_VERSION = "admission.k8s.io/v1"
RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_VERSIONS = ("v1", "v1beta2", "v1beta1")
"""The ``resource.k8s.io`` versions the webhook accepts (and the chart registers it for)."""

CONFIG_PATHS: dict[str, tuple[str, ...]] = {
    "resourceclaims": ("spec", "devices", "config"),
    "resourceclaimtemplates": ("spec", "spec", "devices", "config"),
}
"""Where each resource keeps its device configs."""

DRIVER_KINDS: dict[str, frozenset[str]] = {
    "gpu.nvidia.com": frozenset({"GpuConfig", "MigDeviceConfig", "VfioDeviceConfig"}),
    "compute-domain.nvidia.com": frozenset({"ComputeDomainChannelConfig", "ComputeDomainDaemonConfig"}),
}
"""nvdra's drivers and the config kinds their devices can use."""

_FABRIC_DETAIL = "webhook: nodes may enable it by label, their plugins enforce it"


def admission_gates(gates: FeatureGates) -> FeatureGates:
    """The gates the webhook validates under: the cluster's, with FabricTopologySupport treated as on."""
    if gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT):
        return gates
    return gates.with_override(Gate.FABRIC_TOPOLOGY_SUPPORT, True, detail=_FABRIC_DETAIL)


def _dig(obj: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _entry_problems(entry: Any, path: str, gates: FeatureGates) -> list[str]:
    if not isinstance(entry, Mapping):
        return [f"{path}: expected an object, got {entry!r}"]
    opaque = entry.get("opaque")
    if not isinstance(opaque, Mapping):
        return []
    driver = opaque.get("driver")
    allowed_kinds = DRIVER_KINDS.get(driver) if isinstance(driver, str) else None
    if allowed_kinds is None:
        return []
    params_path = f"{path}.opaque.parameters"
    # Not checked here on purpose: the decoder reports a non-object with the path, like any other problem.
    params: Any = opaque.get("parameters")
    try:
        config = load_config(params, gates=gates, path=params_path)
    except ConfigErrors as errs:
        return [str(e) for e in errs.errors]
    except ConfigError as err:
        return [str(err)]
    if config.KIND not in allowed_kinds:
        return [
            f"{params_path}.kind: kind {config.KIND!r} is not a configuration for driver {driver}; "
            f"allowed: {', '.join(sorted(allowed_kinds))}"
        ]
    return []


def config_problems(obj: Mapping[str, Any], resource: str, gates: FeatureGates) -> list[str]:
    """Every problem of the nvdra opaque configs in a ResourceClaim or ResourceClaimTemplate.

    Args:
        obj: the object as sent to the API server (any supported version).
        resource: ``resourceclaims`` or ``resourceclaimtemplates``.
        gates: the gates to validate under (see :func:`admission_gates`).

    Returns:
        One ``"<path>: <problem>"`` line per problem; empty when the object is fine.

    Raises:
        ValueError: ``resource`` is not one the webhook handles.
    """
    keys = CONFIG_PATHS.get(resource)
    if keys is None:
        raise ValueError(f"unsupported resource {resource!r}; allowed: {', '.join(CONFIG_PATHS)}")
    configs = _dig(obj, keys)
    base = ".".join(keys)
    if configs is None:
        return []
    if not isinstance(configs, list):
        return [f"{base}: expected a list, got {configs!r}"]
    problems: list[str] = []
    for index, entry in enumerate(configs):
        problems += _entry_problems(entry, f"{base}[{index}]", gates)
    # A fabricTopologyConfig the selectors do not express would be allocated where prepare refuses it.
    return problems + demand_problems(obj, template=resource == "resourceclaimtemplates")


def _response(uid: Any, problems: Sequence[str]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid if isinstance(uid, str) else "", "allowed": not problems}
    if problems:
        response["status"] = {
            "status": "Failure",
            "code": 422,
            "reason": "Invalid",
            "message": "; ".join(problems),
        }
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def _request_problem(request: Mapping[str, Any]) -> str | None:
    resource = request.get("resource")
    if not isinstance(resource, Mapping):
        return "request.resource: missing"
    group, version, name = resource.get("group"), resource.get("version"), resource.get("resource")
    # ``name`` may be any JSON value (a list is unhashable): compare only strings with the table.
    if (
        group != RESOURCE_GROUP
        or version not in RESOURCE_VERSIONS
        or not isinstance(name, str)
        or name not in CONFIG_PATHS
    ):
        return (
            f"request.resource: unsupported resource {group}/{version}/{name}; allowed: "
            f"{RESOURCE_GROUP} {', '.join(RESOURCE_VERSIONS)} {' or '.join(CONFIG_PATHS)}"
        )
    if not isinstance(request.get("object"), Mapping):
        return "request.object: expected the object being created or updated"
    return None


def review(body: Any, gates: FeatureGates) -> dict[str, Any]:
    """Answer one AdmissionReview (``admission.k8s.io/v1``) request.

    Args:
        body: the decoded JSON the API server sent.
        gates: the cluster's feature gates (already passed through :func:`admission_gates`).

    Returns:
        The AdmissionReview to send back: allowed, or denied with every problem and its field path.
    """
    if not isinstance(body, Mapping) or body.get("apiVersion") != ADMISSION_API_VERSION:
        got = body.get("apiVersion") if isinstance(body, Mapping) else type(body).__name__
        return _response("", [f"apiVersion: expected {ADMISSION_API_VERSION} AdmissionReview, got {got!r}"])
    request = body.get("request")
    if not isinstance(request, Mapping):
        return _response("", ["request: missing"])
    uid = request.get("uid")
    problem = _request_problem(request)
    if problem is not None:
        return _response(uid, [problem])
    resource = request["resource"]["resource"]
    return _response(uid, config_problems(request["object"], resource, gates))
