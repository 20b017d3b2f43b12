"""Validate manifests against the Kubernetes OpenAPI schemas (``kubernetes-validate``) and CRD schemas.

Kubernetes objects are checked in strict mode (unknown fields are errors) for every version in
:data:`KUBE_VERSIONS` (1.32 to 1.36). Custom resources are checked against the ``openAPIV3Schema`` of
their CRD when the CRD is at hand (nvdra's own in the chart's ``crds/``); cert-manager's CRDs are not
shipped with any package here, so its objects are reported as unchecked rather than passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jsonschema
import pytest

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (Kubernetes OpenAPI schemas)")

KUBE_VERSIONS = ("1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0")
"""Every Kubernetes version nvdra supports; kubernetes-validate ships the schemas of each."""

RESOURCE_API = {
    "1.32.0": "resource.k8s.io/v1beta1",
    "1.33.0": "resource.k8s.io/v1beta2",
    "1.34.0": "resource.k8s.io/v1",
    "1.35.0": "resource.k8s.io/v1",
    "1.36.0": "resource.k8s.io/v1",
}
"""The newest resource.k8s.io version each serves: what the chart's DeviceClasses use there. (Helm's
offline ``.Capabilities`` list is its client's, not the cluster's, so renderings for 1.32 and 1.33
set ``resourceApiVersion`` as the cluster's discovery would have chosen.)"""


def crd_schemas(crds: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the served version's openAPIV3Schema."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if schema is not None:
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return out


def problems(
    doc: dict[str, Any], version: str, custom: dict[tuple[str, str], dict[str, Any]]
) -> list[str] | None:
    """Schema problems of one object (empty: valid); ``None`` when no schema is known for it."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in custom:
        validator = jsonschema.Draft7Validator(custom[key])
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        kv.validate(doc, version, strict=True)
    except kv.SchemaNotFoundError:
        return None
    except kv.ValidationError as exc:
        return [str(exc)]
    return []
