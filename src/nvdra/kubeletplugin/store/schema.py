"""OpenAPI schemas: the fields a schema does not declare (pruning, strict field validation), and a
CRD's ``self == oldSelf`` transition rules."""

from __future__ import annotations

__all__ = ["CrdRules", "drop_field", "transition_rules", "unknown_fields", "value_at"]

import re
from collections.abc import Mapping
from typing import Any

import attrs

from nvdra.kubeletplugin.objects import JsonObject

_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def unknown_fields(
    schema: Mapping[str, Any], obj: Any, path: str = "", *, defs: Mapping[str, Any] | None = None
) -> list[str]:
    """Field paths in ``obj`` that an OpenAPI v3 ``schema`` does not declare (``spec.foo``, …).

    ``$ref`` (``#/$defs/<name>`` or ``#/definitions/<name>``) resolves in ``defs``; maps
    (``additionalProperties``), ``x-kubernetes-preserve-unknown-fields`` and RawExtensions accept any key.
    """
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name.endswith("runtime.RawExtension"):
            return []
        schema = (defs or {}).get(name, {})
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if path == "metadata" and not properties:
            found += [f"metadata.{k}" for k in obj if k not in _OBJECT_META_FIELDS]
            return found
        for key, value in obj.items():
            here = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                found += unknown_fields(properties[key], value, here, defs=defs)
            elif isinstance(extra, dict):
                found += unknown_fields(extra, value, here, defs=defs)
            elif properties is not None and extra is not True:
                found.append(here)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(schema["items"], item, f"{path}[{i}]", defs=defs)
    return found


def drop_field(obj: JsonObject, path: str) -> None:
    """Remove the field at a path :func:`unknown_fields` reported (``a.b[2].c``)."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = obj
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.get(part)
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


@attrs.frozen
class CrdRules:
    schema: Mapping[str, Any]
    immutable: tuple[tuple[tuple[str, ...], str], ...]  # (field path, message) of `self == oldSelf` rules


def transition_rules(
    schema: Mapping[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str]]:
    rules: list[tuple[tuple[str, ...], str]] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if rule.get("rule", "").replace(" ", "") != "self==oldSelf":
            raise ValueError(
                f"x-kubernetes-validations at {'.'.join(path) or '<root>'}: only the rule "
                f"'self == oldSelf' is evaluated here, got {rule.get('rule')!r}"
            )
        rules.append((path, rule.get("message") or "Invalid value"))
    for key, sub in (schema.get("properties") or {}).items():
        rules += transition_rules(sub, (*path, key))
    return rules


def value_at(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj
