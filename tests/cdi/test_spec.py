"""The CDI spec model: exact JSON shape, Go-style omitempty, strict decoding, merging."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdra.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Spec,
)
from nvdra.cdi._fields import JsonRecord
from nvdra.core.errors import CdiError

words = st.text(alphabet="abcdefghij/._-=", min_size=1, max_size=8)
positive = st.integers(min_value=1, max_value=2**31)
nodes = st.builds(
    DeviceNode,
    path=words,
    host_path=st.just("") | words,
    type=st.sampled_from(["", "c", "b"]),
    major=st.just(0) | positive,
    minor=st.just(0) | positive,
    file_mode=st.none() | st.integers(0, 0o7777),
    permissions=st.sampled_from(["", "rwm", "r"]),
    uid=st.none() | st.integers(0, 2**32 - 1),
    gid=st.none() | st.integers(0, 2**32 - 1),
)
mounts = st.builds(
    Mount, host_path=words, container_path=words, options=st.tuples(words), type=st.just("") | words
)
hooks = st.builds(
    Hook,
    hook_name=st.sampled_from(["createContainer", "poststop"]),
    path=words,
    args=st.lists(words, max_size=3).map(tuple),
    env=st.lists(words, max_size=2).map(tuple),
    timeout=st.none() | positive,
)
edits = st.builds(
    ContainerEdits,
    env=st.lists(words, max_size=3).map(tuple),
    device_nodes=st.lists(nodes, max_size=3).map(tuple),
    mounts=st.lists(mounts, max_size=2).map(tuple),
    hooks=st.lists(hooks, max_size=2).map(tuple),
    additional_gids=st.lists(st.integers(1, 2**32 - 1), max_size=2).map(tuple),
    intel_rdt=st.none()
    | st.builds(
        IntelRdt,
        clos_id=words,
        schemata=st.lists(words, max_size=2).map(tuple),
        enable_monitoring=st.booleans(),
    ),
    net_devices=st.lists(st.builds(NetDevice, host_interface_name=words, name=words), max_size=2).map(tuple),
)
annotation_maps = st.dictionaries(words, words, max_size=2)
specs = st.builds(
    Spec,
    cdi_version=st.sampled_from(["0.5.0", "1.1.0"]),
    kind=words,
    devices=st.lists(
        st.builds(Device, name=words, container_edits=edits, annotations=annotation_maps), max_size=3
    ).map(tuple),
    container_edits=edits,
    annotations=annotation_maps,
)


@settings(max_examples=75)
@given(specs)
def test_to_dict_from_dict_round_trips(spec: Spec) -> None:
    """Decoding what to_dict produced gives back the same spec."""
    assert Spec.from_dict(spec.to_dict()) == spec


@settings(max_examples=75)
@given(edits, edits, edits)
def test_merge_is_associative_and_has_an_identity(
    a: ContainerEdits, b: ContainerEdits, c: ContainerEdits
) -> None:
    """(a + b) + c == a + (b + c) and the empty edits change nothing."""
    assert (a + b) + c == a + (b + c)
    assert a + ContainerEdits() == a == ContainerEdits() + a


def test_merge_appends_in_order_and_later_intel_rdt_wins() -> None:
    """Lists concatenate left then right; a set intelRdt on the right replaces the left one."""
    left = ContainerEdits(env=("A=1",), intel_rdt=IntelRdt(clos_id="x"))
    right = ContainerEdits(
        env=("B=2",), device_nodes=(DeviceNode(path="/dev/x"),), intel_rdt=IntelRdt(clos_id="y")
    )
    merged = left + right
    assert merged.env == ("A=1", "B=2")
    assert merged.device_nodes == (DeviceNode(path="/dev/x"),)
    assert merged.intel_rdt == IntelRdt(clos_id="y")
    assert (left + ContainerEdits()).intel_rdt == IntelRdt(clos_id="x")


def test_to_dict_uses_cdi_field_names_and_order() -> None:
    """Field names are the CDI camelCase ones, in Go struct order, with empty fields omitted."""
    spec = Spec(
        cdi_version="0.7.0",
        kind="v.com/c",
        annotations={"a": "b"},
        devices=(
            Device(
                name="d",
                container_edits=ContainerEdits(
                    device_nodes=(DeviceNode(path="/dev/x", host_path="/h/dev/x", major=195, file_mode=438),),
                ),
            ),
        ),
        container_edits=ContainerEdits(
            env=("A=1",),
            hooks=(Hook(hook_name="createContainer", path="/bin/h", args=("h",), timeout=5),),
            mounts=(Mount(host_path="/a", container_path="/b", options=("ro",), type="bind"),),
            additional_gids=(44,),
        ),
    )
    doc = spec.to_dict()
    assert list(doc) == ["cdiVersion", "kind", "annotations", "devices", "containerEdits"]
    assert doc["devices"] == [
        {
            "name": "d",
            "containerEdits": {
                "deviceNodes": [{"path": "/dev/x", "hostPath": "/h/dev/x", "major": 195, "fileMode": 438}]
            },
        }
    ]
    assert list(doc["containerEdits"]) == ["env", "hooks", "mounts", "additionalGids"]
    assert doc["containerEdits"]["hooks"] == [
        {"hookName": "createContainer", "path": "/bin/h", "args": ["h"], "timeout": 5}
    ]
    assert doc["containerEdits"]["mounts"] == [
        {"hostPath": "/a", "containerPath": "/b", "options": ["ro"], "type": "bind"}
    ]


def test_zero_major_minor_are_omitted_like_go() -> None:
    """major/minor 0 are left out (Go omitempty), an explicit fileMode 0 and uid 0 are kept."""
    node = DeviceNode(path="/dev/nvidia-uvm", major=510, minor=0, file_mode=0, uid=0)
    assert node.to_dict() == {"path": "/dev/nvidia-uvm", "major": 510, "fileMode": 0, "uid": 0}


def test_a_required_field_after_an_omissible_one_keeps_its_go_position() -> None:
    """Go writes fields in struct order: a device's required containerEdits follows its annotations."""
    assert list(Device(name="d", annotations={"a": "b"}).to_dict()) == [
        "name",
        "annotations",
        "containerEdits",
    ]


def test_device_edits_are_always_emitted_and_spec_edits_only_when_set() -> None:
    """A device's containerEdits is required by the schema; an empty spec-level one is omitted."""
    doc = Spec(cdi_version="0.3.0", kind="v.com/c", devices=(Device(name="d"),)).to_dict()
    assert doc == {"cdiVersion": "0.3.0", "kind": "v.com/c", "devices": [{"name": "d", "containerEdits": {}}]}


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"cdiVersion": "0.3.0", "kind": "v/c", "devices": [], "extra": 1}, "extra"),
        ({"cdiVersion": "0.3.0", "kind": "v/c"}, "spec.devices"),
        ({"kind": "v/c", "devices": []}, "spec.cdiVersion"),
        (
            {"cdiVersion": "0.3.0", "kind": "v/c", "devices": [{"name": "d"}]},
            "spec.devices[0].containerEdits",
        ),
        (
            {
                "cdiVersion": "0.3.0",
                "kind": "v/c",
                "devices": [{"name": "d", "containerEdits": {"deviceNodes": [{"major": 1}]}}],
            },
            "spec.devices[0].containerEdits.deviceNodes[0].path",
        ),
        (
            {
                "cdiVersion": "0.3.0",
                "kind": "v/c",
                "devices": [],
                "containerEdits": {"mounts": [{"hostPath": "/a", "containerPath": "/b", "options": [1]}]},
            },
            "spec.containerEdits.mounts[0].options[0]",
        ),
        (
            {
                "cdiVersion": "0.3.0",
                "kind": "v/c",
                "devices": [],
                "containerEdits": {"additionalGids": [True]},
            },
            "additionalGids[0]",
        ),
        (
            {
                "cdiVersion": "0.3.0",
                "kind": "v/c",
                "devices": [],
                "containerEdits": {"intelRdt": {"enableCMT": True}},
            },
            "enableCMT",
        ),
        ({"cdiVersion": "0.3.0", "kind": "v/c", "devices": [], "annotations": {"a": 1}}, "spec.annotations"),
        ("not a mapping", "spec"),
    ],
)
def test_from_dict_is_strict(doc: Any, where: str) -> None:
    """Unknown fields, missing required fields and wrong types are refused with their JSON path."""
    with pytest.raises(CdiError, match=where.replace("[", r"\[").replace("]", r"\]")):
        Spec.from_dict(doc)


@pytest.mark.parametrize(
    ("record", "doc", "message"),
    [
        (DeviceNode, {"type": "c"}, "deviceNode.path: missing required field; allowed: a string"),
        (
            DeviceNode,
            {"path": "/dev/x", "uid": "0"},
            "deviceNode.uid: expected an integer, got '0'; allowed: an integer",
        ),
        (Mount, {"hostPath": "/a"}, "mount.containerPath: missing required field; allowed: a string"),
        (
            Hook,
            {"hookName": "poststop", "path": "/h", "args": [1]},
            "hook.args[0]: expected a string, got 1; allowed: a string",
        ),
        (
            IntelRdt,
            {"enableMonitoring": 1},
            "intelRdt.enableMonitoring: expected a boolean, got 1; allowed: true or false",
        ),
        (
            NetDevice,
            {"name": "eth0"},
            "netDevice.hostInterfaceName: missing required field; allowed: a string",
        ),
        (
            ContainerEdits,
            {"additionalGids": ["5"]},
            "containerEdits.additionalGids[0]: expected an integer, got '5'; allowed: an integer",
        ),
        (
            ContainerEdits,
            {"env": "A=1"},
            "containerEdits.env: expected a list, got 'A=1'; allowed: a list, each a string",
        ),
        (
            ContainerEdits,
            {"mounts": {}},
            "containerEdits.mounts: expected a list, got {}; allowed: a list, each an object (Mount)",
        ),
        (
            Device,
            {"name": "d"},
            "device.containerEdits: missing required field; allowed: an object (ContainerEdits)",
        ),
        (
            Device,
            {"name": "d", "containerEdits": None},
            "device.containerEdits: expected an object, got None; allowed: a JSON object (ContainerEdits)",
        ),
        (
            Spec,
            {"cdiVersion": "0.3.0", "kind": "v/c"},
            "spec.devices: missing required field; allowed: a list, each an object (Device)",
        ),
    ],
)
def test_each_record_decodes_on_its_own_under_its_json_name(
    record: type[JsonRecord], doc: dict[str, Any], message: str
) -> None:
    """A record decoded on its own names the bad value's path from the record's camelCase name."""
    with pytest.raises(CdiError) as caught:
        record.from_dict(doc)
    assert str(caught.value) == message


def test_a_nested_record_is_named_by_the_path_it_was_found_at() -> None:
    """The caller's path prefixes the field's, as the spec's own decoding passes it down."""
    with pytest.raises(
        CdiError, match=r"^x\.devices\[3\]\.name: expected a string, got 7; allowed: a string$"
    ):
        Device.from_dict({"name": 7, "containerEdits": {}}, "x.devices[3]")


def test_the_codec_refuses_a_field_type_it_cannot_write() -> None:
    """A record field of a type the codec has no rule for fails loudly both ways, naming the type."""

    @attrs.frozen(kw_only=True)
    class Odd(JsonRecord):
        ratio: complex = 0j

    with pytest.raises(TypeError, match="no JSON codec for a field of type <class 'complex'>"):
        Odd().to_dict()
    with pytest.raises(TypeError, match="no JSON codec for a field of type <class 'complex'>"):
        Odd.from_dict({"ratio": 1})


def test_null_optional_fields_decode_to_their_defaults_like_go() -> None:
    """``null`` (an empty YAML key) leaves an optional field at its zero value, as Go's decoder does."""
    doc = {
        "cdiVersion": "0.3.0",
        "kind": "v/c",
        "annotations": None,
        "devices": [{"name": "d", "containerEdits": {"env": None, "intelRdt": None, "deviceNodes": None}}],
        "containerEdits": None,
    }
    assert Spec.from_dict(doc) == Spec(cdi_version="0.3.0", kind="v/c", devices=(Device(name="d"),))


def test_every_problem_of_a_document_is_reported_at_once() -> None:
    """Several bad values are named together, each with its path, so one round fixes them all."""
    doc = {"cdiVersion": 3, "kind": "v/c", "devices": [{"name": "d", "containerEdits": {"env": [1]}}], "x": 1}
    with pytest.raises(CdiError) as caught:
        Spec.from_dict(doc)
    assert str(caught.value) == (
        "3 problems: (1) spec.cdiVersion: expected a string, got 3; allowed: a string; "
        "(2) spec.devices[0].containerEdits.env[0]: expected a string, got 1; allowed: a string; "
        "(3) spec.x: unknown field 'x'; allowed: known fields: cdiVersion, kind, annotations, devices, "
        "containerEdits"
    )
