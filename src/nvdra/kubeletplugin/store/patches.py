"""Patches as the API server applies them: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
strategic merge patch (built-in kinds); every failure is the apiserver's status code and message."""

from __future__ import annotations

__all__ = ["apply_patch", "json_patch", "merge_patch", "strategic_merge_patch"]

import copy
import json
from typing import Any

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.objects import JsonObject


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KubeApiError(f'JSON pointer {path!r} must start with "/"', status=422)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str], op: str, path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)
    return node


def _index(node: list[Any], part: str, path: str, *, insert: bool) -> int:
    if insert and part == "-":
        return len(node)
    if not part.isdigit() or int(part) > len(node) - (0 if insert else 1):
        raise KubeApiError(f"array index out of bounds: {path}", status=422)
    return int(part)


def _get_at(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    node = _container(doc, parts, op, path)
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node[last]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node[int(last)]
    raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)


def _remove_at(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    node = _container(doc, parts, op, path)
    last = parts[-1] if parts else ""
    if isinstance(node, dict) and last in node:
        return node.pop(last)
    if isinstance(node, list):
        return node.pop(_index(node, last, path, insert=False))
    raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)


def _add_at(doc: Any, path: str, value: Any, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    node = _container(doc, parts, op, path)
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    elif isinstance(node, list):
        node.insert(_index(node, last, path, insert=True), copy.deepcopy(value))
    else:
        raise KubeApiError(f"{op} operation does not apply: doc is missing path: {path}", status=422)
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test); any failure is a 422.

    A failed ``test`` reads ``testing value <path> failed: test failed``, the apiserver's message.
    """
    if not isinstance(operations, list):
        raise KubeApiError("a JSON patch must be a list of operations", status=400)
    doc = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        if not isinstance(operation, dict) or not isinstance(operation.get("path"), str):
            raise KubeApiError(
                f"JSON patch operation {number}: an object with a path is required", status=422
            )
        doc = _apply_operation(doc, operation)
    return doc


def _apply_operation(doc: Any, operation: JsonObject) -> Any:
    op, path = operation.get("op"), operation["path"]
    if op in ("add", "replace", "test") and "value" not in operation:
        raise KubeApiError(f"{op} operation at {path}: missing value", status=422)
    if op == "add":
        return _add_at(doc, path, operation["value"], op)
    if op == "remove":
        _remove_at(doc, path, op)
        return doc
    if op == "replace":
        if _pointer(path):
            _remove_at(doc, path, op)
        return _add_at(doc, path, operation["value"], op)
    if op in ("move", "copy"):
        source = operation.get("from")
        if not isinstance(source, str):
            raise KubeApiError(f"{op} operation at {path}: missing from", status=422)
        value = _remove_at(doc, source, op) if op == "move" else copy.deepcopy(_get_at(doc, source, op))
        return _add_at(doc, path, value, op)
    if op == "test":
        try:
            found = _get_at(doc, path, op)
        except KubeApiError:
            found = _MISSING
        if found != operation["value"]:
            raise KubeApiError(f"testing value {path} failed: test failed", status=422)
        return doc
    raise KubeApiError(f"Unexpected kind: {op}", status=422)


_MISSING = object()

# Strategic merge patch: list fields merged by key (patchMergeKey) or as sets of primitives.
_SMP_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "resourceClaims": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "addresses": "type",
    "taints": "key",
}
_SMP_PRIMITIVE_SETS = frozenset({"finalizers"})


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch of a built-in kind's JSON (the apiserver's ``$patch`` directives included).

    Maps merge as in a merge patch; lists whose schema declares a merge key (``containers`` by name,
    ``conditions`` by type, …) merge element by element; ``finalizers`` merge as a set; other lists are
    replaced. Directives: ``$patch: replace|delete`` in a map or list element, ``$retainKeys``,
    ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>`` (accepted, order kept).
    """
    if not isinstance(patch, dict):
        if isinstance(patch, list) and isinstance(target, list):
            return _smp_list(target, patch, field)
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = set(map(json.dumps, value or []))
            out[name] = [v for v in out.get(name) or [] if json.dumps(v) not in drop]
            continue
        if value is None:
            out.pop(key, None)
            continue
        merged = strategic_merge_patch(out.get(key), value, key)
        if merged is None and isinstance(value, dict) and value.get("$patch") == "delete":
            out.pop(key, None)
        else:
            out[key] = merged
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _smp_list(target: list[Any], patch: list[Any], field: str) -> list[Any]:
    if field in _SMP_PRIMITIVE_SETS:
        seen = list(target)
        for item in patch:
            if item not in seen:
                seen.append(copy.deepcopy(item))
        return seen
    key = _SMP_MERGE_KEYS.get(field)
    if key is None or not all(isinstance(p, dict) for p in patch):
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        return copy.deepcopy(patch)
    if any(p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if "$patch" not in p]
    out = [copy.deepcopy(t) for t in target]
    for item in patch:
        position = next(
            (i for i, t in enumerate(out) if isinstance(t, dict) and t.get(key) == item.get(key)), None
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del out[position]
        elif position is None:
            out.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            out[position] = strategic_merge_patch(out[position], item, field)
    return out


def apply_patch(patch_type: str, current: JsonObject, patch: Any) -> JsonObject:
    if patch_type in ("merge", "strategic") and not isinstance(patch, dict):
        raise KubeApiError(f"a {patch_type} merge patch must be a JSON object", status=400)
    if patch_type == "merge":
        patched = merge_patch(current, patch)
    elif patch_type == "json":
        patched = json_patch(current, patch)
    elif patch_type == "strategic":
        patched = strategic_merge_patch(current, patch)
    else:
        raise KubeApiError(f"patch type {patch_type!r}: not merge, json or strategic", status=415)
    if not isinstance(patched, dict):
        raise KubeApiError("the patched object is not a JSON object", status=422)
    return patched
