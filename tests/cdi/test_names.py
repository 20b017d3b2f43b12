"""CDI names: the parser rules for vendor/class/device, qualified names, spec file names, path guards."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdra.cdi import (
    check_path_component,
    kind,
    parse_kind,
    parse_qualified_name,
    qualified_name,
    transient_spec_name,
    validate_class_name,
    validate_device_name,
    validate_vendor_name,
)
from nvdra.core.errors import CdiError

LETTERS = string.ascii_letters
ALNUM = LETTERS + string.digits
vendors = st.builds(
    lambda a, mid, z: a + mid + z,
    st.sampled_from(LETTERS),
    st.text(alphabet=ALNUM + "_-.", max_size=20),
    st.sampled_from(ALNUM),
)
classes = vendors
devices = st.one_of(
    st.sampled_from(ALNUM),
    st.builds(
        lambda a, mid, z: a + mid + z,
        st.sampled_from(ALNUM),
        st.text(alphabet=ALNUM + "_-.:", max_size=30),
        st.sampled_from(ALNUM),
    ),
)


@settings(max_examples=200)
@given(vendors, classes, devices)
def test_qualified_name_round_trips(vendor: str, cls: str, name: str) -> None:
    """Any valid vendor/class/name renders to a qualified name that parses back to the same parts."""
    assert parse_qualified_name(qualified_name(vendor, cls, name)) == (vendor, cls, name)


@settings(max_examples=200)
@given(st.text(max_size=12))
def test_device_name_validation_matches_the_parser_rule(name: str) -> None:
    """A device name is valid exactly when it matches the CDI parser's character rules (ASCII only)."""
    expected = (
        bool(name) and name[0] in ALNUM and name[-1] in ALNUM and all(c in ALNUM + "_-.:" for c in name[1:-1])
    )
    try:
        validate_device_name(name)
    except CdiError:
        assert not expected
    else:
        assert expected


@settings(max_examples=200)
@given(st.text(max_size=12))
def test_vendor_validation_matches_the_parser_rule(vendor: str) -> None:
    """A vendor is valid exactly when it starts with a letter, ends alphanumeric, inner [A-Za-z0-9_.-]."""
    expected = (
        bool(vendor)
        and vendor[0] in LETTERS
        and vendor[-1] in ALNUM
        and all(c in ALNUM + "_-." for c in vendor[1:-1])
    )
    try:
        validate_vendor_name(vendor)
    except CdiError:
        assert not expected
    else:
        assert expected


@pytest.mark.parametrize("bad", ["", "1vendor", "vendor-", "ven/dor", "vénd", "ven dor", "a:b"])
def test_bad_vendor_and_class_are_refused(bad: str) -> None:
    """Vendor and class names outside the parser rules raise CdiError."""
    with pytest.raises(CdiError):
        validate_vendor_name(bad)
    with pytest.raises(CdiError):
        validate_class_name(bad)


def test_upstream_names() -> None:
    """The upstream GPU driver's kind and device IDs are valid and render as expected."""
    assert kind("k8s.gpu.nvidia.com", "claim") == "k8s.gpu.nvidia.com/claim"
    assert qualified_name("nvidia.com", "gpu", "0") == "nvidia.com/gpu=0"
    assert parse_qualified_name("nvidia.com/gpu=MIG-0:1") == ("nvidia.com", "gpu", "MIG-0:1")
    assert parse_kind("k8s.compute-domain.nvidia.com/device") == ("k8s.compute-domain.nvidia.com", "device")


@pytest.mark.parametrize(
    "bad",
    ["", "/dev/nvidia0", "nvidia.com/gpu", "nvidia.com/gpu=", "=0", "nvidia.com=0", "/gpu=0", "a/b=c d"],
)
def test_unqualified_or_invalid_names_are_refused(bad: str) -> None:
    """Paths, missing parts and bad characters are not qualified device names."""
    with pytest.raises(CdiError):
        parse_qualified_name(bad)


def test_transient_spec_name_follows_cdi() -> None:
    """The transient spec name is <vendor>-<class>_<id> with '/' in the id replaced by '_'."""
    assert transient_spec_name("k8s.gpu.nvidia.com", "claim", "abc") == "k8s.gpu.nvidia.com-claim_abc"
    assert transient_spec_name("v.com", "c", "ns/name") == "v.com-c_ns_name"


@pytest.mark.parametrize("bad", ["..", "a/../b", "x\0y", "", "a" * 300])
def test_path_component_guard_refuses_escapes(bad: str) -> None:
    """Empty values, '/', '..', NUL and over-long names can never become a file name."""
    with pytest.raises(CdiError):
        check_path_component(bad, "claim UID")


def test_transient_spec_name_refuses_traversal_and_overlong_ids() -> None:
    """'..' or NUL in a transient id, or a name too long for a directory entry, is refused."""
    for bad in ("../../etc/passwd", "a\0b", "x" * 250):
        with pytest.raises(CdiError):
            transient_spec_name("k8s.gpu.nvidia.com", "claim", bad)
