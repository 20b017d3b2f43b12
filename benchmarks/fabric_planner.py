"""Partition planner and slice rendering: time per decision (8, 16, 72 GPUs), fragmentation against
naive first-fit, and the fabric slice render for a GB200 NVL72 rack.

Boards: the simulated dgx-h100 (8 GPUs, Fabric Manager's table), two HGX A100 baseboards (16 GPUs, FM's
35-partition table) and a GB200 NVL72 NVLink domain seen as one graph (72 GPUs, derived partitions).

1. Time per decision: ``plan_partition`` on random free sets and random requests (count, bounds), the
   catalog built once per board; median and p99 over many calls. Beside it, the floor: one pass over
   the catalog testing each partition's GPUs against the free set (what any planner must at least do).
2. Fragmentation: a random arrival/departure stream of whole-partition tenants (sizes 1, 2, 4, 8 with
   weights 4:3:2:1, exponential holding times), replayed identically against the planner and a naive
   first-fit (the lowest-id free partition of the requested size). Reported: tenants refused, and of
   those the ones refused although enough GPUs were free (refusals caused by fragmentation).
3. Slice render for an NVL72 rack: (a) the rack as 18 compute-tray nodes (4 GPUs each, the simulated
   gb200-nvl72-tray profile): one node's ResourceSlice content with every fabric attribute
   (``GpuDriver.resources_for`` with the plugin's node fabric), times 18; (b) the rack's 72 GPUs as one
   NVLink domain: the fabric attributes of all 72 (``fabric_attributes``). Beside each, the floor: building
   the same number of attribute dicts with no computation (what any renderer must at least do).

Usage: python benchmarks/fabric_planner.py [--decisions 3000] [--arrivals 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from collections.abc import Callable

from nvdra.core.config.fabric import VirtualizationModel
from nvdra.core.devices import Gpu, Inventory, NvLink
from nvdra.core.featuregates import parse_feature_gates
from nvdra.core.ids import GpuUuid, PciBusId
from nvdra.fabric import Partition, PartitionCatalog, PartitionRequest, Topology, plan_partition
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile


def _switched(count: int, arch: str, product: str, version: int, switches: int, links: int) -> Topology:
    return Topology.from_gpus(_switched_gpus(count, arch, product, version, switches, links))


def _switched_gpus(count: int, arch: str, product: str, version: int, switches: int, links: int) -> list[Gpu]:
    gpus = []
    for i in range(count):
        nvlinks = tuple(
            NvLink(
                link=s * links + j,
                version=version,
                remote_type="switch",
                remote_pci_bus_id=PciBusId(f"0000:{0xE0 + s:02x}:00.0"),
            )
            for s in range(switches)
            for j in range(links)
        )
        gpus.append(
            Gpu(
                index=i,
                minor=i,
                uuid=GpuUuid(f"GPU-00000000-0000-0000-0000-{i:012x}"),
                product_name=product,
                brand="Nvidia",
                architecture=arch,
                cuda_compute_capability=(8, 0),
                memory_bytes=None,
                pci_bus_id=PciBusId(f"{i // 200:04x}:{i % 200 + 1:02x}:00.0"),
                module_id=i + 1 if count <= 16 else 0,
                numa_node=i * 2 // count,
                nvlinks=nvlinks,
            )
        )
    return gpus


def boards() -> dict[str, Topology]:
    """The three boards, by GPU count."""
    backend = SimulatedNvml(load_profile("dgx-h100"))
    backend.init()
    try:
        h100 = Topology.from_inventory(discover_inventory(backend))
    finally:
        backend.shutdown()
    return {
        "8 (dgx-h100)": h100,
        "16 (2x HGX A100)": _switched(16, "Ampere", "NVIDIA A100-SXM4-80GB", 4, 6, 2),
        "72 (NVL72 domain)": _switched(72, "Blackwell", "NVIDIA GB200", 7, 9, 2),
    }


def time_decisions(topology: Topology, catalog: PartitionCatalog, n: int, rng: random.Random) -> None:
    """Print median/p99 time per plan_partition call beside the catalog-scan floor."""
    cases = []
    for _ in range(n):
        free = frozenset(g for g in topology.indices if rng.random() < 0.6)
        request = PartitionRequest(
            count=rng.choice([1, 2, 3, 4, 8]),
            min_bandwidth=rng.choice([None, 600.0, 900.0]),
            max_latency=rng.choice([None, 0.1]),
            model=rng.choice([VirtualizationModel.BARE_METAL, VirtualizationModel.SHARED_NVSWITCH]),
        )
        cases.append((free, request))
    planner, floor = [], []
    for free, request in cases:
        t0 = time.perf_counter()
        plan_partition(topology, free, request, catalog=catalog)
        t1 = time.perf_counter()
        sum(all(g in free for g in p.gpus) for p in catalog.partitions)
        t2 = time.perf_counter()
        planner.append((t1 - t0) * 1e6)
        floor.append((t2 - t1) * 1e6)
    p99 = statistics.quantiles(planner, n=100)[98]
    print(
        f"  per decision: median {statistics.median(planner):7.1f} us, p99 {p99:7.1f} us "
        f"| floor (one catalog scan) median {statistics.median(floor):6.1f} us "
        f"| {len(catalog.partitions)} partitions"
    )


Chooser = Callable[[frozenset[int], int], Partition | None]


def replay(topology: Topology, choose: Chooser, arrivals: int, seed: int) -> tuple[int, int]:
    """Run the arrival/departure stream; return (refused, refused although enough GPUs were free)."""
    rng = random.Random(seed)
    free = set(topology.indices)
    leaving: list[tuple[float, int, tuple[int, ...]]] = []
    now, refused, fragmented = 0.0, 0, 0
    for k in range(arrivals):
        now += rng.expovariate(len(topology.indices) / 6.0)
        while leaving and leaving[0][0] <= now:
            free.update(heapq.heappop(leaving)[2])
        size = rng.choices([1, 2, 4, 8], weights=[4, 3, 2, 1])[0]
        hold = rng.expovariate(1.0)
        partition = choose(frozenset(free), size)
        if partition is None:
            refused += 1
            fragmented += len(free) >= size
            continue
        free.difference_update(partition.gpus)
        heapq.heappush(leaving, (now + hold, k, partition.gpus))
    return refused, fragmented


def fragmentation(topology: Topology, catalog: PartitionCatalog, arrivals: int, seed: int) -> None:
    """Print refusals of the planner and of first-fit over the same stream."""

    def planner(free: frozenset[int], size: int) -> Partition | None:
        request = PartitionRequest(count=size, size=size, model=VirtualizationModel.SHARED_NVSWITCH)
        choice = plan_partition(topology, free, request, catalog=catalog)
        return choice.partition if choice else None

    def first_fit(free: frozenset[int], size: int) -> Partition | None:
        return next((p for p in catalog.of_size(size) if all(g in free for g in p.gpus)), None)

    for name, choose in (("planner", planner), ("first-fit", first_fit)):
        refused, fragmented = replay(topology, choose, arrivals, seed)
        print(
            f"  {name:9s}: refused {refused:6d} of {arrivals} ({100 * refused / arrivals:5.2f}%), "
            f"of which with enough free GPUs (fragmentation) {fragmented:6d}"
        )


def _median_us(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def _floor(devices: int, attributes: int) -> Callable[[], object]:
    """Build ``devices`` dicts of ``attributes`` typed values each: the least a renderer does."""
    return lambda: [{f"a{i}": {"int": i} for i in range(attributes)} for _ in range(devices)]


def slice_render(runs: int) -> None:
    """Print the NVL72 rack's fabric slice render times beside their floors (see the module docstring)."""
    from nvdra.kubeletplugin.types import DriverResources
    from nvdra.plugins.gpu.driver import GpuDriver
    from nvdra.plugins.gpu.fabric import NodeFabric, fabric_attributes

    gates = parse_feature_gates("FabricTopologySupport=true")
    backend = SimulatedNvml(load_profile("gb200-nvl72-tray"))
    backend.init()
    try:
        tray = discover_inventory(backend)
    finally:
        backend.shutdown()
    node = NodeFabric.build(tray, None)

    def one_tray() -> DriverResources:
        return GpuDriver.resources_for(tray, node_name="tray", gates=gates, fabric=node)

    rendered = one_tray()
    devices = [d for pool in rendered.pools.values() for s in pool.slices for d in s.devices]
    per_device = max(len(d["attributes"]) for d in devices)
    tray_us = _median_us(one_tray, runs)
    floor_us = _median_us(_floor(len(devices), per_device), runs)
    print(
        f"  18 tray nodes x {len(devices)} GPUs ({per_device} attributes each): "
        f"{18 * tray_us / 1000:6.2f} ms for the rack ({tray_us:6.1f} us a node) "
        f"| floor {18 * floor_us / 1000:6.2f} ms"
    )
    domain = Inventory(
        driver_version="580.105.08",
        cuda_driver_version=13000,
        gpus=tuple(_switched_gpus(72, "Blackwell", "NVIDIA GB200", 7, 9, 2)),
    )
    domain_node = NodeFabric.build(domain, None)
    attributes = fabric_attributes(domain, domain_node)
    width = max(len(a) for a in attributes.values())
    domain_us = _median_us(lambda: fabric_attributes(domain, domain_node), runs)
    floor_us = _median_us(_floor(72, width), runs)
    print(
        f"  one 72-GPU NVLink domain ({len(domain_node.catalog.partitions)} partitions, {width} fabric "
        f"attributes a GPU): {domain_us / 1000:6.2f} ms | floor {floor_us / 1000:6.2f} ms"
    )


def main() -> None:
    """Run both measurements on every board."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--arrivals", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for name, topology in boards().items():
        catalog = PartitionCatalog.for_topology(topology)
        print(f"{name} GPUs, catalog {catalog.source}")
        time_decisions(topology, catalog, args.decisions, rng)
        fragmentation(topology, catalog, args.arrivals, args.seed)
    print("NVL72 rack, fabric slice render")
    slice_render(args.renders)


if __name__ == "__main__":
    main()
