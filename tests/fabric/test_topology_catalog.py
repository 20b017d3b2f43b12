"""Topology figures, partition catalogs (FM's default tables, derived ones) and the published attributes."""

from __future__ import annotations

import itertools

import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.fabric import (
    BOARD_TABLES,
    LINK_RATES,
    PATH_LATENCY_MS,
    PartitionCatalog,
    PathClass,
    detect_board,
    nvswitch_functions,
)
from nvdra.plugins.gpu.driver import GpuDriver
from nvdra.plugins.gpu.fabric import fabric_attributes
from tests.fabric.conftest import hgx_a100_16, hgx_b200, nvl72, profile_inventory, profile_topology


@pytest.mark.parametrize(
    ("board", "expected"),
    [("dgx-a100", 600), ("dgx-h100", 900), ("hgx-h200", 900), ("gb200-nvl72-tray", 1800)],
)
def test_per_gpu_bandwidth_is_nvidias_figure(board: str, expected: int) -> None:
    """Per-GPU NVLink bandwidth is NVIDIA's quoted total: A100 600, H100/H200 900, GB200 1,800 GB/s."""
    topology = profile_topology(board)
    assert {g.bandwidth_gbps for g in topology.gpus} == {expected}
    assert topology.pair_bandwidth(0, len(topology.gpus) - 1) == expected


def test_b200_board_gives_1800_between_every_pair() -> None:
    """On a synthetic HGX B200 (2 switches x 9 links) every pair exchanges 1,800 GB/s."""
    topology = hgx_b200()
    assert {topology.pair_bandwidth(a, b) for a, b in itertools.combinations(topology.indices, 2)} == {1800}


def test_line_rates_are_the_per_link_figures_nvidia_smi_prints() -> None:
    """The per-direction line rates are 25, 26.562 and 53.125 GB/s for NVLink 3.0, 4.0 and 5.0."""
    assert [LINK_RATES[v].line_rate_mbps for v in (4, 6, 7)] == [25_000, 26_562, 53_125]


def test_bridge_pairs_have_nvlink_only_inside_the_pair() -> None:
    """On the PCIe bridge node, bridged pairs get 600 GB/s directly and other pairs fall back to PCIe."""
    topology = profile_topology("pcie-a100-nvlink")
    assert topology.pair_bandwidth(0, 1) == 600
    assert topology.pair_bandwidth(0, 2) == 0
    assert topology.path_class(0, 1) is PathClass.NVLINK_DIRECT
    assert topology.path_class(0, 2) is PathClass.PCIE_SYSTEM
    assert topology.latency_ms(0, 1) < topology.latency_ms(0, 2)


def test_latency_figures_rise_with_path_class() -> None:
    """The documented latency assumptions grow from same GPU to PCIe across sockets."""
    figures = [PATH_LATENCY_MS[c] for c in PathClass]
    assert figures == sorted(figures)
    assert profile_topology("dgx-h100").path_class(0, 7) is PathClass.NVSWITCH


def test_dgx_h100_catalog_is_fabric_managers_table() -> None:
    """dgx-h100 4- and 2-GPU partitions are FM's: modules 1-4, 5-8; (1,3) (2,4) (5,7) (6,8)."""
    catalog = PartitionCatalog.for_topology(profile_topology("dgx-h100"))
    assert catalog.source == "hgx-h100"
    assert {p.id: p.module_ids for p in catalog.of_size(4)} == {1: (1, 2, 3, 4), 2: (5, 6, 7, 8)}
    assert {p.id: p.module_ids for p in catalog.of_size(2)} == {3: (1, 3), 4: (2, 4), 5: (5, 7), 6: (6, 8)}
    assert [p.id for p in catalog.of_size(1)] == list(range(7, 15))
    assert {p.bandwidth_gbps for p in catalog.partitions if p.size > 1} == {900}


def test_b200_table_starts_at_one_and_pairs_adjacent_modules() -> None:
    """HGX B200 partitions start at id 1 (no id 0) and pair adjacent modules."""
    catalog = PartitionCatalog.for_topology(hgx_b200())
    assert catalog.get(0) is None
    assert catalog.get(1) is not None and catalog.get(1).size == 8  # type: ignore[union-attr]
    assert [p.module_ids for p in catalog.of_size(2)] == [(1, 2), (3, 4), (5, 6), (7, 8)]


def test_single_a100_baseboard_offers_only_partitions_whose_gpus_exist() -> None:
    """One A100 baseboard (modules 1-8) offers ids 1, 7, 8, 11-14 and 19-26; two baseboards offer all 35."""
    one = PartitionCatalog.for_topology(profile_topology("dgx-a100"))
    assert [p.id for p in one.partitions] == [1, 7, 8, 11, 12, 13, 14, *range(19, 27)]
    two = PartitionCatalog.for_topology(hgx_a100_16())
    assert len(two.partitions) == len(BOARD_TABLES["hgx-a100"].rows) == 35


def test_topologies_without_a_table_derive_partitions_from_nvlink() -> None:
    """Bridge pairs become 2-GPU partitions; a node without NVLink has only 1-GPU partitions."""
    bridged = PartitionCatalog.for_topology(profile_topology("pcie-a100-nvlink"))
    assert bridged.source == "derived"
    assert [p.gpus for p in bridged.of_size(2)] == [(0, 1), (2, 3)]
    assert PartitionCatalog.for_topology(profile_topology("pcie-l4")).sizes == (1,)
    domain = PartitionCatalog.for_topology(nvl72())
    assert detect_board(nvl72()) is None
    assert len(domain.of_size(8)) == 9 and len(domain.of_size(2)) == 36


def test_published_attributes_name_fm_partitions_and_bandwidth() -> None:
    """With the gate on, each dgx-h100 GPU carries gpuModuleID, partition1/2/4/8 and nvlinkBandwidth."""
    gates = parse_feature_gates("FabricTopologySupport=true")
    resources = GpuDriver.resources_for(profile_inventory("dgx-h100"), node_name="n1", gates=gates)
    devices = {d["name"]: d for s in resources.pools["n1"].slices for d in s.devices}
    attrs = {name: d["attributes"] for name, d in devices.items()}
    assert attrs["gpu-0"]["gpuModuleID"] == {"int": 1}
    assert [attrs[f"gpu-{i}"]["partition4"]["int"] for i in range(8)] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [attrs[f"gpu-{i}"]["partition2"]["int"] for i in range(8)] == [3, 4, 3, 4, 5, 6, 5, 6]
    assert {a["partition8"]["int"] for a in attrs.values()} == {0}
    assert {a["nvlinkBandwidth"]["int"] for a in attrs.values()} == {900}
    assert all(len(d["attributes"]) + len(d.get("capacity", {})) <= 32 for d in devices.values())


def test_gate_off_publishes_no_fabric_attributes() -> None:
    """With the gate off the devices carry no partition attributes."""
    resources = GpuDriver.resources_for(
        profile_inventory("dgx-h100"), node_name="n1", gates=parse_feature_gates("")
    )
    assert not any("partition4" in d["attributes"] for s in resources.pools["n1"].slices for d in s.devices)


def test_match_attribute_partition4_is_satisfiable_only_by_fm_groups() -> None:
    """Every 4-GPU set agreeing on partition4 (what matchAttribute demands) is modules 1-4 or 5-8."""
    attrs = fabric_attributes(profile_inventory("dgx-h100"))
    names = sorted(attrs)
    agreeing = [
        tuple(group)
        for group in itertools.combinations(names, 4)
        if len({attrs[n]["partition4"]["int"] for n in group}) == 1
    ]
    modules = sorted(tuple(attrs[n]["gpuModuleID"]["int"] for n in g) for g in agreeing)
    assert modules == [(1, 2, 3, 4), (5, 6, 7, 8)]


@pytest.mark.parametrize(
    ("board", "links", "switches", "table", "sizes"),
    [
        ("dgx-h100", 18, 4, "hgx-h100", {8: 1, 4: 2, 2: 4, 1: 8}),
        ("hgx-h200", 18, 4, "hgx-h100", {8: 1, 4: 2, 2: 4, 1: 8}),
        ("dgx-a100", 12, 6, "hgx-a100", {8: 1, 4: 2, 2: 4, 1: 8}),
        ("gb200-nvl72-tray", 18, 0, "derived", {4: 1, 2: 2, 1: 4}),
    ],
)
def test_profiles_carry_the_real_boards_facts(
    board: str, links: int, switches: int, table: str, sizes: dict[int, int]
) -> None:
    """Links per GPU, NVSwitch functions on the node, and the partition table of each simulated board
    (HGX H100/H200: 4 third-generation NVSwitches, 18 links; DGX A100: 6 switches, 12 links; a GB200
    tray: 18 links to switch trays that are no PCI function of the node)."""
    topology = profile_topology(board)
    assert {g.links for g in topology.gpus} == {links}
    assert len(nvswitch_functions(profile_inventory(board).gpus)) == switches
    catalog = PartitionCatalog.for_topology(topology)
    assert catalog.source == table
    assert {s: len(catalog.of_size(s)) for s in catalog.sizes} == sizes
