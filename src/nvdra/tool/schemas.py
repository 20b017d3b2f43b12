"""Objects checked against the Kubernetes OpenAPI schemas of one Kubernetes version.

The schemas come from the ``kubernetes-validate`` package (strict variants: an unknown field is an
error), an optional dependency (``pip install 'nvdra[validate]'``): it weighs ~100 MB for every
Kubernetes release, which a node plugin's image should not carry. Without it, DRA objects are still
checked by nvdra's own rules and other kinds are reported as skipped, with the reason.

Every error is reported (not just the first), each as (field path, message) where the message names
the value found and what is allowed; an unknown field is named as unknown, with the nearest known
field when one is close.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_KUBERNETES_VERSION",
    "CrdSchemas",
    "SchemaUnavailable",
    "available",
    "crd_problems",
    "crd_schemas",
    "schema_problems",
]

import difflib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

DEFAULT_KUBERNETES_VERSION = "1.35"
Problem = tuple[tuple[str | int, ...], str]


class SchemaUnavailable(Exception):
    """No schema for this object: the package is missing, or the kind/version is unknown to it."""


def available() -> bool:
    """Whether the Kubernetes schemas are installed."""
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        return False
    return True


def _version_dir(version: str) -> str:
    import kubernetes_validate as kv
    import kubernetes_validate.utils

    wanted = tuple(int(p) for p in version.removeprefix("v").split(".")[:2])
    known = sorted(
        (tuple(int(p) for p in v.split(".")[:2]), v)
        for v in kv.utils.all_versions()
        if re.match(r"^\d+\.\d+", v)
    )
    usable = [v for k, v in known if k <= wanted]
    if not usable:
        raise SchemaUnavailable(f"no Kubernetes schemas for version {version}")
    return f"v{usable[-1]}-local-strict"


@lru_cache(maxsize=256)
def _validator(version: str, api_version: str, kind: str) -> tuple[Any, Any]:
    """Validators of the object without its metadata, and of its metadata (ObjectMeta)."""
    import jsonschema
    import kubernetes_validate as kv
    import kubernetes_validate.utils
    from referencing import Registry, Resource

    folder = _version_dir(version)
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv.utils.schema_contents(
            f"kubernetes-json-schema/{folder}/{kind.lower()}-{group}.json", version
        )
    except (FileNotFoundError, kubernetes_validate.utils.VersionNotSupportedError) as exc:
        raise SchemaUnavailable(
            f"{kind} {api_version} is not an API of Kubernetes {version} (no schema)"
        ) from exc
    definitions = kv.utils.schema_contents(f"kubernetes-json-schema/{folder}/_definitions.json", version)
    registry: Any = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    meta_ref = ((schema.get("properties") or {}).get("metadata") or {}).get("$ref")
    meta_schema = {"$id": schema.get("$id", ""), "$ref": meta_ref} if meta_ref else {}
    return (
        jsonschema.validators.Draft202012Validator(schema, registry=registry),
        jsonschema.validators.Draft202012Validator(meta_schema, registry=registry),
    )


def _value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _types(schema: Mapping[str, Any]) -> str:
    kinds = schema.get("type")
    names = [kinds] if isinstance(kinds, str) else [k for k in kinds or [] if k != "null"]
    return " or ".join(names) or "another type"


def _explain(error: Any) -> list[Problem]:
    path = tuple(error.absolute_path)
    validator, schema, instance = error.validator, error.schema, error.instance
    if validator == "additionalProperties" and isinstance(instance, dict):
        known = sorted(schema.get("properties") or {})
        out = []
        for field in sorted(set(instance) - set(known)):
            near = difflib.get_close_matches(str(field), known, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            allowed = ", ".join(known) if len(known) <= 12 else ", ".join(known[:12]) + ", ..."
            out.append(((*path, field), f'unknown field "{field}" (known: {allowed}){hint}'))
        return out
    if validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return [((*path, name), "required field is missing") for name in missing] or [(path, error.message)]
    if validator == "type":
        return [(path, f"got {_value(instance)}, must be {_types(schema)}")]
    if validator == "enum":
        allowed = ", ".join(_value(v) for v in schema.get("enum") or [] if v is not None)
        return [(path, f"got {_value(instance)}, must be one of {allowed}")]
    if validator == "format":
        return [(path, f"got {_value(instance)}, must be a {schema.get('format')}")]
    if validator in ("oneOf", "anyOf"):
        return [(path, f"got {_value(instance)}, which matches none of the allowed shapes")]
    return [(path, f"got {_value(instance)}: {error.message}")]


def schema_problems(obj: Mapping[str, Any], version: str) -> list[Problem]:
    """Every schema problem of ``obj`` for Kubernetes ``version`` (empty: valid).

    Raises:
        SchemaUnavailable: the schemas are not installed, or none exists for this apiVersion/kind.
    """
    if not available():
        raise SchemaUnavailable("Kubernetes schemas not installed (pip install 'nvdra[validate]')")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise SchemaUnavailable("apiVersion and kind are required")
    _, meta = _validator(version, api_version, kind)
    # Objects of one file are often alike but for their metadata: the rest is checked once per shape.
    rest = json.dumps({k: v for k, v in obj.items() if k != "metadata"}, sort_keys=True, default=str)
    out = list(_body_problems(version, api_version, kind, rest))
    metadata = obj.get("metadata", {})
    for error in sorted(meta.iter_errors(metadata), key=lambda e: [str(p) for p in e.absolute_path]):
        out += [(("metadata", *path), message) for path, message in _explain(error)]
    return out


@lru_cache(maxsize=4096)
def _body_problems(version: str, api_version: str, kind: str, rest: str) -> tuple[Problem, ...]:
    body, _ = _validator(version, api_version, kind)
    obj = {**json.loads(rest), "metadata": {}}
    out: list[Problem] = []
    for error in sorted(body.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        out += _explain(error)
    return tuple(out)


CrdSchemas = dict[tuple[str, str], Mapping[str, Any]]
"""(apiVersion, kind) → the served version's ``openAPIV3Schema`` of a CustomResourceDefinition."""


@lru_cache(maxsize=1)
def packaged_crds() -> tuple[Mapping[str, Any], ...]:
    """The CustomResourceDefinitions nvdra serves (ComputeDomain, ComputeDomainClique), as installed
    with the package: the chart's ``crds/`` files themselves (``nvdra/imex/crds`` links to them)."""
    from importlib.resources import files

    import yaml

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    folder = files("nvdra.imex").joinpath("crds")
    return tuple(
        yaml.load(item.read_text(encoding="utf-8"), Loader=loader)
        for item in sorted(folder.iterdir(), key=lambda i: i.name)
        if item.name.endswith(".yaml")
    )


def crd_schemas(crds: list[Mapping[str, Any]]) -> CrdSchemas:
    """The schema of every served version of every CustomResourceDefinition given."""
    out: CrdSchemas = {}
    for crd in crds:
        spec = crd.get("spec") or {}
        kind = (spec.get("names") or {}).get("kind")
        for version in spec.get("versions") or []:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if kind and isinstance(schema, Mapping) and version.get("served", True):
                out[(f"{spec.get('group')}/{version.get('name')}", str(kind))] = schema
    return out


def _unknown(schema: Mapping[str, Any], value: Any, path: tuple[str | int, ...]) -> list[Problem]:
    """Fields a structural schema does not declare (the API server prunes them; strict field
    validation, as ``kubectl apply`` asks for, reports them)."""
    if isinstance(value, dict) and isinstance(schema.get("properties"), Mapping):
        if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("additionalProperties"):
            return []
        known = schema["properties"]
        out: list[Problem] = []
        for key, item in value.items():
            where = (*path, key)
            if key not in known:
                if not path and key in ("apiVersion", "kind", "metadata"):
                    continue
                near = difflib.get_close_matches(str(key), list(known), n=1)
                hint = f"; did you mean {near[0]}?" if near else ""
                out.append((where, f'unknown field "{key}" (known: {", ".join(sorted(known))}){hint}'))
            else:
                out += _unknown(known[key], item, where)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [p for i, item in enumerate(value) for p in _unknown(schema["items"], item, (*path, i))]
    return []


def crd_problems(obj: Mapping[str, Any], schemas: CrdSchemas) -> list[Problem] | None:
    """Problems of a custom resource against its CRD's schema; None when no CRD given serves it.

    Raises:
        SchemaUnavailable: a CRD serves it, but jsonschema (of the ``validate`` extra) is not installed.
    """
    schema = schemas.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if schema is None:
        return None
    try:
        import jsonschema
    except ImportError as exc:
        raise SchemaUnavailable("CRD schemas need jsonschema (pip install 'nvdra[validate]')") from exc
    validator = jsonschema.Draft7Validator(schema)
    out: list[Problem] = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        out += _explain(error)
    return out + _unknown(schema, obj, ())
