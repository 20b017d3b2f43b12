"""Shape conversions at the API boundary: v1 ⇄ v1beta1 for ResourceSlices and ResourceClaims."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nvdra.core import errors
from nvdra.kubeletplugin._kube import (
    claim_from_version,
    claim_to_version,
    error_for_status,
    slice_from_version,
    slice_to_version,
)

SAMPLES = Path(__file__).parents[1] / "data" / "samples"


def upstream_slice() -> dict[str, Any]:
    doc = yaml.safe_load((SAMPLES / "upstream-resourceslice-gb200.yaml").read_text())
    item: dict[str, Any] = doc["items"][0]
    return item


def allocated_claim() -> dict[str, Any]:
    claim: dict[str, Any] = yaml.safe_load((SAMPLES / "resourceclaim-allocated.yaml").read_text())
    return claim


@pytest.mark.parametrize("version", ["v1", "v1beta2", "v1beta1"])
def test_upstream_slice_round_trips_through_every_version(version: str) -> None:
    """The real GB200 slice converts to each version and back unchanged."""
    original = upstream_slice()
    assert slice_from_version(slice_to_version(original, version)) == original


def test_v1beta1_slice_nests_device_fields_under_basic() -> None:
    """In v1beta1 everything but the device name sits under `basic`; nodeName stays a plain string."""
    wire = slice_to_version(upstream_slice(), "v1beta1")
    device = wire["spec"]["devices"][0]
    assert set(device) == {"name", "basic"} and "attributes" in device["basic"]
    assert wire["spec"]["nodeName"] == "realnode" and wire["apiVersion"] == "resource.k8s.io/v1beta1"


def test_v1beta1_zero_values_become_unset_in_v1() -> None:
    """An empty nodeName or false allNodes of v1beta1 are dropped in v1 (pointer fields there)."""
    body = {
        "apiVersion": "resource.k8s.io/v1beta1",
        "spec": {"nodeName": "", "allNodes": False, "nodeSelector": {"nodeSelectorTerms": []}},
    }
    assert slice_from_version(body)["spec"] == {"nodeSelector": {"nodeSelectorTerms": []}}


def test_field_v1beta1_cannot_carry_is_a_config_error() -> None:
    """A device field with no v1beta1 home is refused, naming the device."""
    body = upstream_slice()
    body["spec"]["devices"][0]["nodeAllocatableResourceMappings"] = {}
    with pytest.raises(errors.ConfigError, match=r"devices\[0\]"):
        slice_to_version(body, "v1beta1")


def test_allocated_claim_round_trips_and_flattens_in_v1beta1() -> None:
    """The real allocated claim converts to v1beta1 (flat requests) and back, status untouched."""
    claim = allocated_claim()
    wire = claim_to_version(claim, "v1beta1")
    request = wire["spec"]["devices"]["requests"][0]
    assert "exactly" not in request and request["count"] == 4
    assert wire["status"] == claim["status"]
    assert claim_from_version(wire) == claim


def test_first_available_request_keeps_its_subrequests() -> None:
    """A firstAvailable request has no `exactly` in either version."""
    v1 = {
        "apiVersion": "resource.k8s.io/v1",
        "spec": {
            "devices": {
                "requests": [{"name": "r", "firstAvailable": [{"name": "a", "deviceClassName": "c"}]}]
            }
        },
    }
    assert claim_from_version(claim_to_version(v1, "v1beta1")) == v1


@given(
    st.lists(
        st.fixed_dictionaries(
            {"name": st.from_regex(r"^[a-z][a-z0-9-]{0,10}$", fullmatch=True)},
            optional={
                "attributes": st.dictionaries(
                    st.from_regex(r"^[a-z]{1,8}$", fullmatch=True),
                    st.builds(lambda s: {"string": s}, st.text()),
                ),
                "capacity": st.dictionaries(
                    st.from_regex(r"^[a-z]{1,8}$", fullmatch=True), st.just({"value": "1Gi"})
                ),
                "taints": st.just([{"key": "k", "effect": "NoSchedule"}]),
            },
        ),
        max_size=5,
    )
)
def test_any_device_list_round_trips_through_v1beta1(devices: list[dict[str, Any]]) -> None:
    """v1 → v1beta1 → v1 is the identity for devices built from the fields both versions carry."""
    body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "spec": {"devices": devices}}
    assert slice_from_version(slice_to_version(body, "v1beta1")) == body


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (0, errors.KubeUnavailable),
        (400, errors.KubeApiError),
        (404, errors.KubeNotFound),
        (409, errors.KubeConflict),
        (422, errors.KubeApiError),
        (429, errors.KubeUnavailable),
        (500, errors.KubeUnavailable),
        (503, errors.KubeUnavailable),
    ],
)
def test_error_for_status(status: int, cls: type[Exception]) -> None:
    """Each HTTP status maps to the most specific error class, status kept."""
    exc = error_for_status(status, "m")
    assert type(exc) is cls and exc.status == status
