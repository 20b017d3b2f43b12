"""Extended resources backed by DRA (KEP-5004): the claim the scheduler makes for a pod's limits."""

from __future__ import annotations

from typing import Any

import pytest

from nvdra.alloc import Allocator, builtin_device_classes
from nvdra.alloc.extended import (
    EXTENDED_CLAIM_ANNOTATION,
    extended_resource_claim,
    extended_resource_classes,
)
from nvdra.alloc.model import AllocationInputError
from tests.alloc.helpers import DRIVER, NODE, device, device_class, slice_


def ctr(name: str, **limits: Any) -> dict[str, Any]:
    return {"name": name, "image": "x", "resources": {"limits": dict(limits)}}


def cls(name: str, resource: str | None = None, created: str = "") -> dict[str, Any]:
    out = device_class(name)
    if resource:
        out["spec"]["extendedResourceName"] = resource
    if created:
        out["metadata"]["creationTimestamp"] = created
    return out


def test_chart_class_serves_nvidia_com_gpu() -> None:
    """The chart's gpu.nvidia.com class serves nvidia.com/gpu; every class its implicit name."""
    served = extended_resource_classes(builtin_device_classes().values())
    assert served["nvidia.com/gpu"] == "gpu.nvidia.com"
    assert served["deviceclass.resource.kubernetes.io/mig.nvidia.com"] == "mig.nvidia.com"


def test_one_request_per_container_and_resource() -> None:
    """container-<i>-request-<j>: init containers first, resources by name within a container."""
    spec = {
        "initContainers": [ctr("init", **{"example.com/b": 1})],
        "containers": [
            ctr("a", **{"example.com/b": 2, "example.com/a": 1, "cpu": "1"}),
            ctr("plain", cpu="1"),
            ctr("c", **{"deviceclass.resource.kubernetes.io/other": 1}),
        ],
    }
    classes = [cls("first", "example.com/a"), cls("second", "example.com/b"), cls("other")]
    claim = extended_resource_claim(spec, classes, pod_name="p", namespace="ns")
    assert claim is not None
    assert claim["metadata"]["annotations"] == {EXTENDED_CLAIM_ANNOTATION: "true"}
    got = [
        (r["name"], r["exactly"]["deviceClassName"], r["exactly"]["count"])
        for r in claim["spec"]["devices"]["requests"]
    ]
    assert got == [
        ("container-0-request-0", "second", 1),
        ("container-1-request-0", "first", 1),
        ("container-1-request-1", "second", 2),
        ("container-3-request-0", "other", 1),
    ]


def test_newest_class_wins_a_shared_name() -> None:
    """Two classes naming one resource: the newer creationTimestamp serves it."""
    classes = [
        cls("old", "example.com/x", "2026-01-01T00:00:00Z"),
        cls("new", "example.com/x", "2026-06-01T00:00:00Z"),
    ]
    assert extended_resource_classes(classes)["example.com/x"] == "new"


def test_no_extended_resources_no_claim() -> None:
    assert (
        extended_resource_claim({"containers": [ctr("a", cpu="2")]}, [cls("c")], pod_name="p", namespace="n")
        is None
    )


def test_fractional_count_is_refused_with_the_field() -> None:
    with pytest.raises(AllocationInputError, match=r"spec.containers\[0\].resources.limits\[example.com/x\]"):
        extended_resource_claim(
            {"containers": [ctr("a", **{"example.com/x": "500m"})]},
            [cls("c", "example.com/x")],
            pod_name="p",
            namespace="n",
        )


def test_the_claim_allocates_like_any_other() -> None:
    """The made claim goes through the allocator: 2 + 1 devices for two containers."""
    classes = [cls("example", "example.com/dev")]
    spec = {"containers": [ctr("a", **{"example.com/dev": 2}), ctr("b", **{"example.com/dev": 1})]}
    claim = extended_resource_claim(spec, classes, pod_name="p", namespace="ns")
    assert claim is not None
    slices = [slice_("s", [device(f"d{i}") for i in range(4)])]
    outcome = Allocator(slices, classes, node_name=NODE).allocate([claim])
    assert outcome.allocations is not None
    results = outcome.allocations[0]["devices"]["results"]
    assert [(r["request"], r["device"], r["driver"]) for r in results] == [
        ("container-0-request-0", "d0", DRIVER),
        ("container-0-request-0", "d1", DRIVER),
        ("container-1-request-0", "d2", DRIVER),
    ]
