"""Builders for ResourceSlices, classes and claims in the v1 shape (test data, not fixtures)."""

from __future__ import annotations

from typing import Any

from nvdra.alloc import Outcome

DRIVER = "dra.example.com"
NODE = "node-a"


def device(name: str, *, model: str = "a", numa: int = 0, mem: str = "40Gi", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "attributes": {"model": {"string": model}, "numa": {"int": numa}},
        "capacity": {"memory": {"value": mem}},
        **extra,
    }


def slice_(
    name: str,
    devices: list[dict[str, Any]],
    *,
    pool: str = NODE,
    generation: int = 1,
    count: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "driver": DRIVER,
        "pool": {"name": pool, "generation": generation, "resourceSliceCount": count},
        "devices": devices,
    }
    if not any(k in spec for k in ("allNodes", "nodeSelector", "perDeviceNodeSelection")):
        body["nodeName"] = NODE
    body.update(spec)
    if not devices:
        del body["devices"]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": body,
    }


def device_class(
    name: str = "example", *selectors: str, config: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    sels = selectors or (f"device.driver == '{DRIVER}'",)
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": e}} for e in sels]}
    if config:
        spec["config"] = config
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": spec,
    }


def exactly(name: str, count: int = 1, *selectors: str, cls: str = "example", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"deviceClassName": cls, "count": count, **extra}
    if selectors:
        body["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    return {"name": name, "exactly": body}


def claim(
    *requests: dict[str, Any],
    constraints: list[dict[str, Any]] | None = None,
    config: list[dict[str, Any]] | None = None,
    name: str = "c",
) -> dict[str, Any]:
    devices: dict[str, Any] = {"requests": list(requests)}
    if constraints:
        devices["constraints"] = constraints
    if config:
        devices["config"] = config
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"devices": devices},
    }


def allocation(outcome: Outcome, index: int = 0) -> dict[str, Any]:
    """The allocation of an outcome's claim ``index`` (the outcome must have succeeded)."""
    assert outcome.allocations is not None, outcome
    return outcome.allocations[index]


def picked(outcome: Any, index: int = 0) -> list[tuple[str, str]]:
    """(request, device) pairs of an outcome's claim ``index``."""
    assert outcome.ok, outcome
    return [(r["request"], r["device"]) for r in outcome.allocations[index]["devices"]["results"]]
