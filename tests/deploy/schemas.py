"""Validate manifests against the Kubernetes OpenAPI schemas (``kubernetes-validate``) and CRD schemas.

Kubernetes objects are checked in strict mode (unknown fields are errors) for every version in
:data:`KUBE_VERSIONS`. Custom resources are checked against the ``openAPIV3Schema`` of their CRD when
the CRD is at hand (nvdra's own in the chart's ``crds/``); cert-manager's CRDs are not shipped with any
package here, so its objects are reported as unchecked rather than passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jsonschema
import pytest

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (Kubernetes OpenAPI schemas)")

KUBE_VERSIONS = ("1.34.0", "1.35.0")


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
