"""What the test :class:`~nvdra.kubeletplugin.ApiServer` reads from a request: the object path it names,
the authorizer's attributes, a body decoded with the spans of its RawExtensions, the fields a
built-in kind's schema does not declare, and the view validating admission gets of a write."""

from __future__ import annotations

__all__ = [
    "OBJECT_PATH",
    "AdmissionRequest",
    "builtin_unknown_fields",
    "decode_with_spans",
    "request_attributes",
    "without_directives",
]

import functools
import importlib.util
import json
import json.decoder
import json.scanner
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs

from nvdra.kubeletplugin.objects import ResourceType
from nvdra.kubeletplugin.store.schema import unknown_fields
from nvdra.kubeletplugin.testing_rbac import Attributes
from nvdra.kubeletplugin.types import JsonObject

OBJECT_PATH = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<group>[^/]+)/(?P<gv>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"
)


@attrs.frozen(kw_only=True)
class AdmissionRequest:
    """A write as validating admission sees it (the ``request``, ``object`` and ``oldObject`` of a
    ValidatingAdmissionPolicy): CREATE has no ``old_object``, DELETE no ``object``, a PATCH is an UPDATE."""

    operation: str
    user: str
    groups: tuple[str, ...]
    extra: Mapping[str, list[str]]
    group: str
    version: str
    resource: str
    subresource: str
    kind: str
    namespace: str
    name: str
    object: JsonObject | None
    old_object: JsonObject | None
    dry_run: bool

    @property
    def qualified(self) -> str:
        """``<plural>.<group>`` (``<plural>`` for the core group)."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


def decode_with_spans(text: str) -> tuple[Any, dict[int, tuple[int, int]]]:
    """Decode JSON and remember where each object and array was in ``text`` (by ``id`` of the value).

    The apiserver keeps a RawExtension's bytes as the request carried them; this recovers them.
    """
    spans: dict[int, tuple[int, int]] = {}
    decoder = json.JSONDecoder()
    # The pure-Python scanner takes its parsers from the decoder: wrap them to note each span.
    base_object: Any = getattr(json.decoder, "JSONObject")  # noqa: B009 - untyped in typeshed
    base_array: Any = getattr(json.decoder, "JSONArray")  # noqa: B009

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        value, end = base_object(s_and_end, *args)
        spans[id(value)] = (s_and_end[1] - 1, end)
        return value, end

    def parse_array(s_and_end: tuple[str, int], scan_once: Any) -> tuple[Any, int]:
        value, end = base_array(s_and_end, scan_once)
        spans[id(value)] = (s_and_end[1] - 1, end)
        return value, end

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.parse_array = parse_array  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text), spans


def request_attributes(user: str, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The authorizer's view of a request: verb, group, resource, subresource, namespace, name."""
    match = OBJECT_PATH.match(path)
    if match is None or (match["cv"] is None and match["group"] is None):
        return Attributes(user=user, verb=method.lower() if method != "GET" else "get", path=path)
    name = unquote(match["name"] or "")
    watching = query.get("watch") in ("1", "true", "True")
    verbs = {
        "GET": "get" if name else ("watch" if watching else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }
    return Attributes(
        user=user,
        verb=verbs.get(method, method.lower()),
        api_group=match["group"] or "",
        resource=match["plural"],
        subresource=match["sub"] or "",
        namespace=unquote(match["ns"] or ""),
        name=name,
        path=path,
    )


@functools.lru_cache(maxsize=4)
def _builtin_definitions(version: tuple[int, int]) -> dict[str, Any] | None:
    """Kubernetes ``version``'s strict OpenAPI definitions, from ``kubernetes-validate`` (None: absent)."""
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent / "kubernetes-json-schema"
    available = sorted(
        (tuple(int(p) for p in d.name[1:].split("-")[0].split(".")[:2]), d)
        for d in root.glob("v*-local-strict")
        if (d / "_definitions.json").is_file()
    )
    chosen = [d for v, d in available if v <= version] or [d for _, d in available]
    if not chosen:
        return None
    loaded: dict[str, Any] = json.loads((chosen[-1] / "_definitions.json").read_text())
    return loaded.get("$defs") or loaded.get("definitions") or {}


def builtin_unknown_fields(
    rt: ResourceType, version: str, kind: str, obj: Any, release: tuple[int, int]
) -> list[str] | None:
    defs = _builtin_definitions(release)
    if defs is None:
        return None
    package = "core" if not rt.group else rt.group.split(".")[0]
    schema = defs.get(f"io.k8s.api.{package}.{version}.{kind}")
    if schema is None:
        return None
    return unknown_fields(schema, obj, defs=defs)


def without_directives(patch: Any) -> Any:
    """A merge patch as an object: ``null`` (delete) and ``$``-directives left out."""
    if isinstance(patch, dict):
        return {
            k: without_directives(v) for k, v in patch.items() if v is not None and not str(k).startswith("$")
        }
    if isinstance(patch, list):
        return [without_directives(v) for v in patch]
    return patch
