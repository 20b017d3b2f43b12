"""CDI versions and loader validation: minimum-required-version rules and what a runtime refuses."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdra.cdi import (
    KNOWN_VERSIONS,
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Spec,
    minimum_version,
    parse_version,
    validate_spec,
)
from nvdra.core.errors import CdiError

EMPTY = ContainerEdits()


def spec_with(
    edits: ContainerEdits = EMPTY,
    *,
    device_edits: ContainerEdits = EMPTY,
    name: str = "gpu0",
    kind: str = "vendor.com/gpu",
    annotations: dict[str, str] | None = None,
    device_annotations: dict[str, str] | None = None,
) -> Spec:
    """A one-device spec carrying the given features, at the version they need."""
    spec = Spec(
        cdi_version="1.1.0",
        kind=kind,
        devices=(Device(name=name, container_edits=device_edits, annotations=device_annotations or {}),),
        container_edits=edits,
        annotations=annotations or {},
    )
    return attrs.evolve(spec, cdi_version=minimum_version(spec))


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        (spec_with(), "0.3.0"),
        (spec_with(ContainerEdits(env=("A=1",), device_nodes=(DeviceNode(path="/dev/x"),))), "0.3.0"),
        (
            spec_with(ContainerEdits(mounts=(Mount(host_path="/a", container_path="/b", type="bind"),))),
            "0.4.0",
        ),
        (
            spec_with(device_edits=ContainerEdits(device_nodes=(DeviceNode(path="/d", host_path="/h/d"),))),
            "0.5.0",
        ),
        (spec_with(name="0"), "0.5.0"),
        (spec_with(name="e06d22d3-gpu-0"), "0.3.0"),
        (spec_with(annotations={"a": "b"}), "0.6.0"),
        (spec_with(device_annotations={"a": "b"}), "0.6.0"),
        (spec_with(kind="k8s.gpu.nvidia.com/claim.x"), "0.6.0"),
        (spec_with(kind="k8s.gpu.nvidia.com/claim"), "0.3.0"),
        (spec_with(ContainerEdits(additional_gids=(44,))), "0.7.0"),
        (spec_with(device_edits=ContainerEdits(intel_rdt=IntelRdt(clos_id="c"))), "0.7.0"),
        (spec_with(ContainerEdits(intel_rdt=IntelRdt(schemata=("L3:0=f",)))), "1.1.0"),
        (spec_with(device_edits=ContainerEdits(intel_rdt=IntelRdt(enable_monitoring=True))), "1.1.0"),
        (
            spec_with(ContainerEdits(net_devices=(NetDevice(host_interface_name="eth1", name="net0"),))),
            "1.1.0",
        ),
        (
            spec_with(
                ContainerEdits(
                    additional_gids=(1,), mounts=(Mount(host_path="/a", container_path="/b", type="x"),)
                ),
                name="1",
            ),
            "0.7.0",
        ),
    ],
)
def test_minimum_version_rules(spec: Spec, version: str) -> None:
    """Each CDI feature raises the minimum cdiVersion to the release that introduced it; never below 0.3.0."""
    assert spec.cdi_version == version
    validate_spec(spec)


@settings(max_examples=50)
@given(st.sampled_from(KNOWN_VERSIONS), st.booleans(), st.booleans(), st.booleans())
def test_a_spec_validates_exactly_from_its_minimum_version(
    declared: str, host_path: bool, gids: bool, netdev: bool
) -> None:
    """A spec loads at any known version at or above its minimum, and is refused below it."""
    edits = ContainerEdits(
        device_nodes=(DeviceNode(path="/dev/x", host_path="/h" if host_path else ""),),
        additional_gids=(5,) if gids else (),
        net_devices=(NetDevice(host_interface_name="eth0", name="n0"),) if netdev else (),
    )
    spec = attrs.evolve(spec_with(edits), cdi_version=declared)
    if parse_version(declared) >= parse_version(minimum_version(spec)):
        validate_spec(spec)
    else:
        with pytest.raises(CdiError, match="too low"):
            validate_spec(spec)


def test_version_parsing_tolerates_a_leading_v_and_refuses_unknown() -> None:
    """'v0.5.0' is 0.5.0; versions CDI does not know are refused."""
    assert parse_version("v0.5.0") == (0, 5, 0)
    for bad in ("0.9.0", "1.2.0", "1.0", "latest"):
        with pytest.raises(CdiError, match="not a known CDI version"):
            parse_version(bad)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Spec(cdi_version="0.3.0", kind="vendor.com/gpu", devices=()), "no devices"),
        (spec_with(kind="vendor.com"), "<vendor>/<class>"),
        (spec_with(kind="1vendor/gpu"), "vendor"),
        (spec_with(name="gpu/0"), "device name"),
        (
            attrs.evolve(spec_with(), devices=(Device(name="a"), Device(name="a"))),
            "more than once",
        ),
        (spec_with(ContainerEdits(env=("NOEQUALS",))), "environment"),
        (spec_with(ContainerEdits(env=("=x",))), "environment"),
        (spec_with(ContainerEdits(device_nodes=(DeviceNode(path=""),))), "empty path"),
        (spec_with(ContainerEdits(device_nodes=(DeviceNode(path="/d", type="x"),))), "type"),
        (spec_with(ContainerEdits(device_nodes=(DeviceNode(path="/d", permissions="rwx"),))), "permissions"),
        (spec_with(ContainerEdits(device_nodes=(DeviceNode(path="/d", uid=-1),))), "uid"),
        (spec_with(ContainerEdits(device_nodes=(DeviceNode(path="/d", major=2**63),))), "int64"),
        (spec_with(ContainerEdits(hooks=(Hook(hook_name="preStart", path="/h"),))), "hook name"),
        (spec_with(ContainerEdits(hooks=(Hook(hook_name="poststop", path="h"),))), "absolute"),
        (spec_with(ContainerEdits(hooks=(Hook(hook_name="poststop", path="/h", timeout=0),))), "timeout"),
        (
            spec_with(ContainerEdits(hooks=(Hook(hook_name="poststop", path="/h", env=("X",)),))),
            "environment",
        ),
        (spec_with(ContainerEdits(mounts=(Mount(host_path="", container_path="/b"),))), "hostPath"),
        (spec_with(ContainerEdits(additional_gids=(2**32,))), "uint32"),
        (spec_with(ContainerEdits(intel_rdt=IntelRdt(clos_id="../x"))), "closID"),
        (
            spec_with(ContainerEdits(net_devices=(NetDevice(host_interface_name="eth0", name="a/b"),))),
            "interface",
        ),
        (spec_with(annotations={"bad key!": "v"}), "qualified name"),
        (spec_with(annotations={"a": "x" * (256 * 1024)}), "at most"),
    ],
)
def test_validate_refuses_what_a_cdi_loader_refuses(spec: Spec, message: str) -> None:
    """Malformed specs raise CdiError naming the problem."""
    with pytest.raises(CdiError, match=message):
        validate_spec(spec)


def test_valid_annotation_keys_and_hook_names_pass() -> None:
    """Prefixed annotation keys and every OCI hook name CDI knows are accepted."""
    hooks = tuple(
        Hook(hook_name=n, path="/h")
        for n in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
    )
    validate_spec(spec_with(ContainerEdits(hooks=hooks), annotations={"cdi.k8s.io/x_y": "v", "plain": ""}))
