"""List-valued attributes (DRAListTypeAttributes, KEP-6072): what the GPU plugin publishes, and the
allocator's set semantics for constraints and ``includes()`` in selectors."""

from __future__ import annotations

from typing import Any

import pytest

from nvdra.alloc import Allocator
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import parse_feature_gates
from nvdra.plugins.gpu.listattrs import NUMA_NODE, check_list_attributes
from nvdra.tool.devices import node_publication
from tests.alloc.helpers import NODE, claim, device, device_class, exactly, picked, slice_

CLASSES = [device_class()]


def numa(name: str, *nodes: int) -> dict[str, Any]:
    d = device(name)
    d["attributes"][NUMA_NODE] = {"ints": list(nodes)} if len(nodes) != 1 else {"int": nodes[0]}
    return d


def test_gpus_publish_their_numa_node_as_a_list() -> None:
    """With the gate, every dgx-h100 GPU has resource.kubernetes.io/numaNode: {ints: [n]}; without, none."""
    pub = node_publication("dgx-h100", node_name="n1", feature_gates="DRAListTypeAttributes=true", env={})
    devices = [d for p in pub.resources.pools.values() for s in p.slices for d in s.devices]
    nodes = {g.name: g.numa_node for g in pub.inventory.gpus}
    assert devices and all(d["attributes"][NUMA_NODE] == {"ints": [nodes[d["name"]]]} for d in devices)
    plain = node_publication("dgx-h100", node_name="n1", env={})
    assert not any(
        NUMA_NODE in d["attributes"]
        for p in plain.resources.pools.values()
        for s in p.slices
        for d in s.devices
    )


def test_the_gate_is_refused_below_kubernetes_1_36() -> None:
    gates = parse_feature_gates("DRAListTypeAttributes=true")
    with pytest.raises(ConfigError, match=r"Kubernetes 1\.35"):
        check_list_attributes(gates, (1, 35))
    check_list_attributes(gates, (1, 36))


def test_match_attribute_needs_a_common_element() -> None:
    """[0,1] and [1,2] share 1 and match; a third device [2] leaves the intersection empty."""
    slices = [slice_("s", [numa("a", 0, 1), numa("b", 1, 2), numa("c", 2)])]
    match = [{"matchAttribute": NUMA_NODE}]
    assert picked(
        Allocator(slices, CLASSES, node_name=NODE).allocate([claim(exactly("r", 2), constraints=match)])
    ) == [
        ("r", "a"),
        ("r", "b"),
    ]
    assert (
        not Allocator(slices, CLASSES, node_name=NODE)
        .allocate([claim(exactly("r", 3), constraints=match)])
        .ok
    )


def test_a_scalar_is_a_one_element_set() -> None:
    """int 1 matches ints [1, 2]; distinctAttribute refuses them together, takes 1 and [0, 2]."""
    slices = [slice_("s", [numa("a", 1), numa("b", 1, 2), numa("c", 0, 3)])]
    same = [{"matchAttribute": NUMA_NODE}]
    assert picked(
        Allocator(slices, CLASSES, node_name=NODE).allocate([claim(exactly("r", 2), constraints=same)])
    ) == [
        ("r", "a"),
        ("r", "b"),
    ]
    apart = [{"distinctAttribute": NUMA_NODE}]
    assert picked(
        Allocator(slices, CLASSES, node_name=NODE).allocate([claim(exactly("r", 2), constraints=apart)])
    ) == [
        ("r", "a"),
        ("r", "c"),
    ]


def test_includes_selects_on_lists_and_scalars() -> None:
    slices = [slice_("s", [numa("a", 0), numa("b", 1, 2), numa("c", 3)])]
    sel = "device.attributes['resource.kubernetes.io'].numaNode.includes(2)"
    assert picked(Allocator(slices, CLASSES, node_name=NODE).allocate([claim(exactly("r", 1, sel))])) == [
        ("r", "b")
    ]
    sel0 = "device.attributes['resource.kubernetes.io'].numaNode.includes(0)"
    assert picked(Allocator(slices, CLASSES, node_name=NODE).allocate([claim(exactly("r", 1, sel0))])) == [
        ("r", "a")
    ]
