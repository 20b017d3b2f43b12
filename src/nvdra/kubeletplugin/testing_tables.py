"""Server-side printing for the in-process API server: ``meta.k8s.io`` ``Table`` answers.

``kubectl get`` asks for a Table (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io, …``) and
prints the columns the server chose; without one it can print only NAME and AGE. This module holds the
column sets the real apiserver's printers use for the kinds the test server and the playground hold:

- ResourceSlice: Name, Node, Driver, Pool, Age; ResourceClaim: Name, State (``pending``,
  ``allocated``, ``allocated,reserved``, with ``deleted`` first once deletion started), Age;
  DeviceClass and ResourceClaimTemplate: Name, Age;
- Pod: Name, Ready, Status, Restarts, Age; wide (priority 1): IP, Node, Nominated Node, Readiness Gates;
- Node: Name, Status, Roles, Age, Version; wide: Internal-IP, External-IP, OS-Image, Kernel-Version,
  Container-Runtime; Namespace: Name, Status, Age; Deployment: Name, Ready, Up-to-date, Available, Age;
  wide: Containers, Images, Selector;
- a custom resource: Name and its CRD's ``additionalPrinterColumns`` (``jsonPath`` as dotted fields with
  ``[i]`` or ``[*]``, several values joined by commas; ``date`` cells as ages), or Name and Age
  when it has none; every other kind: Name and Age.

Ages are written as the apiserver writes them (``45s``, ``3m10s``, ``5h``, ``12d``). Each row carries the
object as ``includeObject`` asks: ``Metadata`` (the default: a ``PartialObjectMetadata``), ``Object``
(the whole object) or ``None``.
"""

from __future__ import annotations

__all__ = ["TABLE_VERSIONS", "human_age", "table_version", "to_table"]

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.types import JsonObject

Column = tuple[str, str, int]  # (name, type, priority)
Printer = Callable[[JsonObject, datetime], list[Any]]

TABLE_VERSIONS = ("v1", "v1beta1")
"""The ``meta.k8s.io`` versions a Table is answered in."""
_INCLUDE_OBJECT = ("None", "Metadata", "Object")
_DESCRIPTIONS = {
    "Name": "Name must be unique within a namespace.",
    "Age": "CreationTimestamp is a timestamp representing the server time when this object was created.",
}
_NONE = "<none>"


def table_version(accept: str | None) -> str | None:
    """The ``meta.k8s.io`` version of the Table the ``Accept`` header asks for first, or None when a
    plain JSON answer comes first (or no Table is asked for)."""
    for media_range in (accept or "").split(","):
        media_type, *raw = (part.strip() for part in media_range.split(";"))
        params = dict(p.partition("=")[::2] for p in raw if "=" in p)
        if media_type not in ("application/json", "application/*", "*/*"):
            continue
        if params.get("as") is None:
            return None
        if params["as"] == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in TABLE_VERSIONS:
            return params["v"]
    return None


def human_age(seconds: float) -> str:
    """A duration as the apiserver's printers write ages: ``59s``, ``3m10s``, ``5h``, ``12d``, ``2y3d``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    s = max(s, 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def _since(timestamp: Any, now: datetime) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    return human_age((now - then).total_seconds())


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _meta(obj: JsonObject) -> JsonObject:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _age(obj: JsonObject, now: datetime) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


def _name_age(obj: JsonObject, now: datetime) -> list[Any]:
    return [_meta(obj).get("name", ""), _age(obj, now)]


def _claim_state(claim: JsonObject) -> str:
    deleting = bool(_meta(claim).get("deletionTimestamp"))
    states = ["deleted"] if deleting else []
    if _get(claim, "status", "allocation") is None:
        states += [] if deleting else ["pending"]
    else:
        states.append("allocated")
        if _get(claim, "status", "reservedFor"):
            states.append("reserved")
    return ",".join(states)


def _claim(obj: JsonObject, now: datetime) -> list[Any]:
    return [_meta(obj).get("name", ""), _claim_state(obj), _age(obj, now)]


def _slice(obj: JsonObject, now: datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    pool = _get(spec, "pool", "name") or ""
    return [
        _meta(obj).get("name", ""),
        spec.get("nodeName") or "",
        spec.get("driver", ""),
        pool,
        _age(obj, now),
    ]


def _pod_status(pod: JsonObject) -> tuple[str, int, int]:
    """(STATUS, ready containers, restarts) as the pod printer sums them up."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    restarts = ready = 0
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, c in enumerate(init_statuses):
        restarts += int(c.get("restartCount") or 0)
        terminated = _get(c, "state", "terminated")
        waiting_reason = _get(c, "state", "waiting", "reason")
        if terminated and int(terminated.get("exitCode") or 0) == 0:
            continue
        initializing = True
        if terminated:
            signal = terminated.get("signal")
            reason = "Init:" + (
                terminated.get("reason")
                or (f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode')}")
            )
        elif waiting_reason and waiting_reason != "PodInitializing":
            reason = f"Init:{waiting_reason}"
        else:
            reason = f"Init:{i}/{len(_get(pod, 'spec', 'initContainers') or [])}"
        break
    if not initializing:
        running = False
        for c in reversed(status.get("containerStatuses") or []):
            restarts += int(c.get("restartCount") or 0)
            state = c.get("state") or {}
            terminated = state.get("terminated")
            if _get(state, "waiting", "reason"):
                reason = state["waiting"]["reason"]
            elif terminated:
                signal = terminated.get("signal")
                reason = terminated.get("reason") or (
                    f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode')}"
                )
            elif c.get("ready") and "running" in state:
                running = True
                ready += 1
        if reason == "Completed" and running:
            conditions = status.get("conditions") or []
            ok = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            reason = "Running" if ok else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason, ready, restarts


def _restarts(pod: JsonObject, restarts: int, now: datetime) -> str:
    """``2``, or ``2 (5m ago)`` when a container's last termination is known."""
    statuses = [
        *(_get(pod, "status", "initContainerStatuses") or []),
        *(_get(pod, "status", "containerStatuses") or []),
    ]
    ends = [_get(c, "lastState", "terminated", "finishedAt") for c in statuses]
    last = max((e for e in ends if isinstance(e, str) and e), default="")
    return f"{restarts} ({_since(last, now)} ago)" if restarts and last else str(restarts)


def _pod(obj: JsonObject, now: datetime) -> list[Any]:
    reason, ready, restarts = _pod_status(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    gates = spec.get("readinessGates") or []
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    passed = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
    return [
        _meta(obj).get("name", ""),
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        _restarts(obj, restarts, now),
        _age(obj, now),
        status.get("podIP") or _NONE,
        spec.get("nodeName") or _NONE,
        status.get("nominatedNodeName") or _NONE,
        f"{passed}/{len(gates)}" if gates else _NONE,
    ]


def _node(obj: JsonObject, now: datetime) -> list[Any]:
    labels = _meta(obj).get("labels") or {}
    roles = sorted(
        {
            k.removeprefix("node-role.kubernetes.io/")
            for k in labels
            if k.startswith("node-role.kubernetes.io/")
        }
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    ready = next((c for c in _get(obj, "status", "conditions") or [] if c.get("type") == "Ready"), None)
    state = "Unknown" if ready is None else {"True": "Ready"}.get(ready.get("status"), "NotReady")
    if _get(obj, "spec", "unschedulable"):
        state += ",SchedulingDisabled"
    info = _get(obj, "status", "nodeInfo") or {}
    addresses = _get(obj, "status", "addresses") or []

    def address(kind: str) -> str:
        return next((a.get("address") for a in addresses if a.get("type") == kind), None) or _NONE

    return [
        _meta(obj).get("name", ""),
        state,
        ",".join(r for r in roles if r) or _NONE,
        _age(obj, now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _namespace(obj: JsonObject, now: datetime) -> list[Any]:
    return [_meta(obj).get("name", ""), _get(obj, "status", "phase") or "", _age(obj, now)]


def _selector(selector: Any) -> str:
    if not isinstance(selector, dict):
        return _NONE
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        values = ",".join(sorted(e.get("values") or []))
        op = e.get("operator", "")
        key = e.get("key", "")
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, f"{key} {op}"))  # fmt: skip
    return ",".join(parts) or _NONE


def _deployment(obj: JsonObject, now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = _get(spec, "template", "spec", "containers") or []
    wanted = spec.get("replicas", 1)
    return [
        _meta(obj).get("name", ""),
        f"{status.get('readyReplicas', 0)}/{wanted}",
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        _age(obj, now),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _selector(spec.get("selector")),
    ]


_NAME_AGE: tuple[Column, ...] = (("Name", "string", 0), ("Age", "string", 0))
_PRINTERS: dict[str, tuple[tuple[Column, ...], Printer]] = {
    "ResourceSlice": (
        (("Name", "string", 0), ("Node", "string", 0), ("Driver", "string", 0), ("Pool", "string", 0),
         ("Age", "string", 0)),
        _slice,
    ),
    "ResourceClaim": ((("Name", "string", 0), ("State", "string", 0), ("Age", "string", 0)), _claim),
    "Pod": (
        (("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0),
         ("Age", "string", 0), ("IP", "string", 1), ("Node", "string", 1), ("Nominated Node", "string", 1),
         ("Readiness Gates", "string", 1)),
        _pod,
    ),
    "Node": (
        (("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0), ("Age", "string", 0),
         ("Version", "string", 0), ("Internal-IP", "string", 1), ("External-IP", "string", 1),
         ("OS-Image", "string", 1), ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)),
        _node,
    ),
    "Namespace": ((("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)), _namespace),
    "Deployment": (
        (("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0),
         ("Available", "integer", 0), ("Age", "string", 0), ("Containers", "string", 1),
         ("Images", "string", 1), ("Selector", "string", 1)),
        _deployment,
    ),
}  # fmt: skip
"""Column sets and cell functions of the kinds with their own printer; every other kind: Name, Age."""


def _json_path(obj: Any, path: str) -> list[Any]:
    """The values a CRD column's ``jsonPath`` (``.spec.a``, ``.status.list[0].x``, ``.items[*].name``)
    selects in ``obj``."""
    values = [obj]
    for part in path.strip().lstrip(".").split("."):
        name, _, index = part.partition("[")
        if name:
            values = [v[name] for v in values if isinstance(v, dict) and name in v]
        index = index.rstrip("]")
        if index == "*":
            values = [x for v in values if isinstance(v, list) for x in v]
        elif index:
            try:
                i = int(index)
            except ValueError:
                return []
            values = [v[i] for v in values if isinstance(v, list) and -len(v) <= i < len(v)]
    return values


def _custom(columns: Sequence[Mapping[str, Any]]) -> tuple[tuple[Column, ...], Printer]:
    """The column set a CRD's ``additionalPrinterColumns`` name (after Name), and its cell function."""
    defs = (
        ("Name", "string", 0),
        *((c["name"], c.get("type", "string"), int(c.get("priority", 0))) for c in columns),
    )

    def cells(obj: JsonObject, now: datetime) -> list[Any]:
        row: list[Any] = [_meta(obj).get("name", "")]
        for column in columns:
            values = _json_path(obj, column.get("jsonPath", ""))
            value = values[0] if len(values) == 1 else ",".join(map(str, values)) if values else None
            if value is None:
                row.append(None)
            elif column.get("type") == "date":
                row.append(_since(value, now))
            elif isinstance(value, (dict, list)):
                row.append(str(value))
            else:
                row.append(value)
        return row

    return defs, cells


def to_table(
    body: JsonObject,
    *,
    version: str = "v1",
    include_object: str = "",
    custom_columns: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    headers: bool = True,
    now: datetime | None = None,
) -> JsonObject:
    """The ``meta.k8s.io/<version>`` Table of one object or a list (``kind: <Kind>List``, ``items``).

    Args:
        body: the object or list the plain JSON answer would have carried.
        version: ``v1`` or ``v1beta1`` (see :func:`table_version`).
        include_object: the request's ``includeObject``: ``Metadata`` (default), ``Object`` or ``None``.
        custom_columns: ``additionalPrinterColumns`` of installed CRDs, by ``<apiVersion>/<Kind>``.
        headers: False leaves ``columnDefinitions`` empty (watch events after the first).
        now: the time ages are counted to (now by default).

    Raises:
        KubeApiError: 400 for an ``includeObject`` other than None, Metadata or Object.
    """
    mode = include_object or "Metadata"
    if mode not in _INCLUDE_OBJECT:
        raise KubeApiError(
            f'includeObject: Unsupported value: "{mode}": supported values: "None", "Metadata", "Object"',
            status=400,
        )
    is_list = isinstance(body.get("items"), list)
    items: list[JsonObject] = body["items"] if is_list else [body]
    kind = body.get("kind", "")
    kind = kind.removesuffix("List") if is_list else kind
    api_version = body.get("apiVersion", "")
    columns_of_crd = (custom_columns or {}).get(f"{api_version}/{kind}")
    if columns_of_crd is not None:
        defs, cells = _custom(columns_of_crd)
    else:
        defs, cells = _PRINTERS.get(kind, (_NAME_AGE, _name_age))
    when = now or datetime.now(UTC)
    rows = []
    for item in items:
        row: JsonObject = {"cells": cells(item, when)}
        if mode == "Object":
            row["object"] = {"apiVersion": api_version, "kind": kind, **item}
        elif mode == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{version}",
                "metadata": _meta(item),
            }
        rows.append(row)
    column_definitions = [
        {
            "name": name,
            "type": type_,
            "format": "name" if name == "Name" and i == 0 else "",
            "description": _DESCRIPTIONS.get(name, name),
            "priority": priority,
        }
        for i, (name, type_, priority) in enumerate(defs)
    ]
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k in ("resourceVersion", "continue")}
    if not is_list:
        metadata = {"resourceVersion": _meta(body).get("resourceVersion", "")}
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": metadata,
        "columnDefinitions": column_definitions if headers else [],
        "rows": rows,
    }
