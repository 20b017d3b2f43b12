"""kubectl's output conventions for every listing command of ``nvdra``.

``-o table`` (the default) and ``-o wide`` print aligned columns (``wide`` adds columns), ``--no-headers``
drops the header line; ``-o yaml`` and ``-o json`` print a ``kind: List`` of the objects, as ``kubectl
get`` does (``kubectl apply -f`` accepts it); ``-o name`` prints ``resource.group/name`` per object.
"""

from __future__ import annotations

__all__ = ["OUTPUTS", "as_list", "format_table", "object_name", "output_options", "print_objects"]

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click
import yaml

OUTPUTS = ("table", "wide", "yaml", "json", "name")
F = TypeVar("F", bound=Callable[..., Any])
Echo = Callable[[str], None]

# kind → the resource name kubectl prints for ``-o name``
_RESOURCES = {
    "ResourceSlice": "resourceslice.resource.k8s.io",
    "ResourceClaim": "resourceclaim.resource.k8s.io",
    "ResourceClaimTemplate": "resourceclaimtemplate.resource.k8s.io",
    "DeviceClass": "deviceclass.resource.k8s.io",
    "ComputeDomain": "computedomain.resource.nvidia.com",
    "Pod": "pod",
    "Node": "node",
}


def output_options(choices: Sequence[str] = OUTPUTS, default: str = "table") -> Callable[[F], F]:
    """``-o/--output`` (one of ``choices``) and ``--no-headers`` on a click command."""

    def apply(func: F) -> F:
        func = click.option(
            "--no-headers",
            is_flag=True,
            default=False,
            help="With -o table or wide: print no header line.",
        )(func)
        return click.option(
            "-o",
            "--output",
            type=click.Choice(list(choices)),
            default=default,
            show_default=True,
            help="Output format: table, wide (more columns), yaml or json (a kind: List), name.",
        )(func)

    return apply


def as_list(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A ``v1`` ``List`` holding ``objects``, as ``kubectl get -o yaml|json`` prints several objects."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(objects)}


def object_name(obj: Mapping[str, Any]) -> str:
    """``resource.group/name`` as ``kubectl get -o name`` prints it."""
    kind = str(obj.get("kind", ""))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    resource = _RESOURCES.get(kind) or (f"{kind.lower()}.{group}" if group else kind.lower())
    return f"{resource}/{(obj.get('metadata') or {}).get('name', '')}"


def format_table(rows: Sequence[Mapping[str, str]], *, no_headers: bool = False) -> list[str]:
    """Left-aligned columns three spaces apart, kubectl style; columns empty in every row are dropped."""
    if not rows:
        return []
    cols = [c for c in rows[0] if any(r.get(c) for r in rows)]
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    header = [] if no_headers else [dict(zip(cols, cols, strict=True))]
    return ["   ".join(line.get(c, "").ljust(widths[c]) for c in cols).rstrip() for line in [*header, *rows]]


def print_objects(
    objects: Sequence[Mapping[str, Any]],
    *,
    output: str,
    echo: Echo,
    rows: Callable[[bool], list[dict[str, str]]],
    no_headers: bool = False,
    empty: str = "No resources found.",
    name: Callable[[Mapping[str, Any]], str] = object_name,
) -> None:
    """Print ``objects`` in ``output``; ``rows(wide)`` gives the table rows for table/wide, ``name`` an
    object's ``-o name`` line."""
    if output == "json":
        echo(json.dumps(as_list(objects), indent=2))
    elif output == "yaml":
        echo(yaml.safe_dump(as_list(objects), sort_keys=False).rstrip())
    elif output == "name":
        for obj in objects:
            echo(name(obj))
    else:
        lines = format_table(rows(output == "wide"), no_headers=no_headers)
        for line in lines or [empty]:
            echo(line)
