"""Label and field selectors, parsed and matched as the API server does (400 for a malformed one)."""

from __future__ import annotations

__all__ = ["FieldSelector", "LabelSelector", "match_fields", "match_labels"]

import re
from collections.abc import Mapping
from typing import Any

import attrs

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.objects import JsonObject, ResourceType

_SET_TERM = re.compile(r"^\s*(?P<key>[^\s!=,()]+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)\s*$")
_KEY = re.compile(r"^([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b`` → two terms)."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


@attrs.frozen
class LabelSelector:
    """A parsed label selector: (key, operator, values) requirements, all of which must hold."""

    requirements: tuple[tuple[str, str, frozenset[str]], ...]

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h``.

        Raises:
            KubeApiError: 400 naming the term that is not a selector.
        """
        out: list[tuple[str, str, frozenset[str]]] = []
        for term in _split_terms(text or ""):
            match = _SET_TERM.match(term)
            if match:
                values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
                key, op = match["key"], match["op"]
            elif "!=" in term:
                key, value = (p.strip() for p in term.split("!=", 1))
                op, values = "notin", frozenset({value})
            elif "=" in term:
                key, value = (p.strip() for p in term.replace("==", "=", 1).split("=", 1))
                op, values = "in", frozenset({value})
            elif term.startswith("!"):
                key, op, values = term[1:].strip(), "!", frozenset()
            else:
                key, op, values = term, "exists", frozenset()
            if not _KEY.match(key) or any(("=" in v or " " in v) for v in values):
                raise KubeApiError(
                    f"unable to parse requirement: invalid label selector term {term!r}", status=400
                )
            out.append((key, op, values))
        return cls(tuple(out))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement."""
        for key, op, values in self.requirements:
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
            if op == "exists" and key not in labels:
                return False
            if op == "!" and key in labels:
                return False
        return True


def match_labels(labels: Mapping[str, str], selector: str) -> bool:
    """Whether ``labels`` satisfy a label selector (``a=b,c!=d,e in (x,y),f notin (z),g,!h``)."""
    return LabelSelector.parse(selector).matches(labels)


# Field selectors each kind supports beyond metadata.name and metadata.namespace (apiserver's lists).
_FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    ("", "nodes"): frozenset({"spec.unschedulable"}),
    ("", "namespaces"): frozenset({"status.phase"}),
    ("resource.k8s.io", "resourceslices"): frozenset({"spec.driver", "spec.nodeName"}),
    ("resource.k8s.io", "resourceclaims"): frozenset(),
}


def match_fields(obj: JsonObject, selector: str, rt: ResourceType | None = None) -> bool:
    """Whether ``obj`` satisfies a field selector (``metadata.name``, ``metadata.namespace`` and, given
    ``rt``, the fields the apiserver supports for that kind).

    Raises:
        KubeApiError: another field (400, as the API server answers for a field it does not index).
    """
    kind = rt or ResourceType(group="", version="v1", plural="", kind="")
    return FieldSelector.parse(selector, kind).matches(obj)


_FIELD_PATHS = {
    field: tuple(field.split("."))
    for field in {"metadata.name", "metadata.namespace"}.union(*_FIELD_LABELS.values())
}


def _field_value(obj: JsonObject, path: tuple[str, ...]) -> str:
    node: Any = obj
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@attrs.frozen
class FieldSelector:
    """A parsed field selector: (field, equal?, value) requirements, all of which must hold."""

    requirements: tuple[tuple[str, bool, str], ...]

    @classmethod
    def parse(cls, text: str, rt: ResourceType) -> FieldSelector:
        """Parse ``metadata.name=a,spec.nodeName!=b`` for ``rt``.

        Raises:
            KubeApiError: 400 for a field the kind cannot be selected by, as the apiserver answers.
        """
        out: list[tuple[str, bool, str]] = []
        allowed = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get((rt.group, rt.plural), set())
        for term in _split_terms(text or ""):
            if "!=" in term:
                key, value = term.split("!=", 1)
                equal = False
            elif "=" in term:
                key, value = term.replace("==", "=", 1).split("=", 1)
                equal = True
            else:
                raise KubeApiError(f"invalid selector: {term!r}; can't understand {term!r}", status=400)
            key = key.strip()
            if key not in allowed:
                if rt.custom:
                    raise KubeApiError(
                        f'"{key}" is not a known field selector: only "metadata.name", "metadata.namespace"',
                        status=400,
                    )
                raise KubeApiError(f'field label not supported: "{key}"', status=400)
            out.append((key, equal, value.strip()))
        return cls(tuple(out))

    def matches(self, obj: JsonObject) -> bool:
        """Whether ``obj`` satisfies every requirement."""
        for key, equal, value in self.requirements:
            if (_field_value(obj, _FIELD_PATHS[key]) == value) != equal:
                return False
        return True
