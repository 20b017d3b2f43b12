"""The NVLink topology of one node: per-GPU links, rates, peers and switches; bandwidth and latency.

Built from the discovered inventory (:class:`nvdra.core.devices.Gpu` ``nvlinks`` and ``module_id``), so
every NVML backend (real or simulated) yields the same graph.

Figures and why:

- Bandwidth is in GB/s *as NVIDIA quotes it*: the total of both directions over all links, per GPU.
  NVIDIA's per-GPU figures (A100 600, H100/H200 900, B200/GB200 1,800) are links times a round per-link
  bidirectional figure — 50 GB/s for NVLink 2.x to 4.0, 100 GB/s for NVLink 5.0 — not the raw line rate
  ``nvidia-smi nvlink -s`` prints (25, 26.562, 53.125 GB/s per direction). :data:`LINK_RATES` holds both.
- The pairwise figure between two GPUs is what one can push to the other: over NVSwitches the links
  both GPUs have to the switches they share, over bridges the links that join them directly; at each
  end the slower link generation decides. No NVLink path gives 0 (the GPUs talk over PCIe).
- Latency: NVIDIA publishes no NVLink latency figure. Public ``p2pBandwidthLatencyTest`` runs put
  GPU-to-GPU writes in the low microseconds for both NVLink and PCIe, so ``maxLatency`` (milliseconds)
  can only be checked by *path class*. :data:`PATH_LATENCY_MS` holds the figures nvdra assumes:
  same GPU 0.0005 ms, NVLink direct 0.002 ms, via NVSwitch 0.0025 ms (one switch hop more), PCIe on
  one NUMA node 0.005 ms, PCIe across sockets 0.010 ms.

Invariants: GPUs are keyed by NVML index; a topology is immutable; ``pair_bandwidth`` is symmetric.
"""

from __future__ import annotations

__all__ = [
    "LINK_RATES",
    "PATH_LATENCY_MS",
    "GpuLinks",
    "LinkRate",
    "PathClass",
    "Topology",
    "nvswitch_functions",
]

import enum
from collections.abc import Iterable, Mapping

import attrs

from nvdra.core.devices import Gpu, Inventory


@attrs.frozen(kw_only=True)
class LinkRate:
    """One NVLink generation: raw line rate per direction, and NVIDIA's per-link bidirectional figure."""

    name: str
    line_rate_mbps: int  # per direction, MB/s (Fabric Manager's nvlinkLineRateMBps)
    bidirectional_gbps: int  # per link, both directions, GB/s as NVIDIA quotes it


LINK_RATES: Mapping[int, LinkRate] = {
    # keys: nvmlNvlinkVersion_t
    2: LinkRate(name="2.0", line_rate_mbps=25_000, bidirectional_gbps=50),
    3: LinkRate(name="2.2", line_rate_mbps=25_000, bidirectional_gbps=50),
    4: LinkRate(name="3.0", line_rate_mbps=25_000, bidirectional_gbps=50),
    5: LinkRate(name="3.1", line_rate_mbps=25_000, bidirectional_gbps=50),
    6: LinkRate(name="4.0", line_rate_mbps=26_562, bidirectional_gbps=50),
    7: LinkRate(name="5.0", line_rate_mbps=53_125, bidirectional_gbps=100),
}
"""NVLink generations nvdra knows the rates of; other versions count as no bandwidth (stated, not guessed)."""


class PathClass(enum.StrEnum):
    """How data travels between two GPUs, fastest first."""

    SAME_GPU = "same-gpu"
    NVLINK_DIRECT = "nvlink-direct"
    NVSWITCH = "nvswitch"
    PCIE_NUMA = "pcie-same-numa"
    PCIE_SYSTEM = "pcie-cross-socket"


PATH_LATENCY_MS: Mapping[PathClass, float] = {
    PathClass.SAME_GPU: 0.0005,
    PathClass.NVLINK_DIRECT: 0.002,
    PathClass.NVSWITCH: 0.0025,
    PathClass.PCIE_NUMA: 0.005,
    PathClass.PCIE_SYSTEM: 0.010,
}
"""Assumed one-way latency per path class, in milliseconds (see the module docstring for why)."""


@attrs.frozen(kw_only=True)
class GpuLinks:
    """One GPU's place in the fabric."""

    index: int
    name: str  # published device name, gpu-<minor>
    uuid: str
    pci_bus_id: str
    module_id: int
    numa_node: int | None
    architecture: str
    product_name: str
    links: int  # active NVLinks
    version: int  # nvmlNvlinkVersion_t of its links (0 = none)
    switch_links: Mapping[str, int] = attrs.field(factory=dict)  # switch bus id -> links to it
    peer_links: Mapping[str, int] = attrs.field(factory=dict)  # peer GPU bus id -> direct links

    @property
    def rate(self) -> LinkRate | None:
        """The link generation's rates, None when it has no links or an unknown generation."""
        return LINK_RATES.get(self.version) if self.links else None

    @property
    def bandwidth_gbps(self) -> int:
        """Total NVLink bandwidth of this GPU (all links, both directions), GB/s."""
        rate = self.rate
        return self.links * rate.bidirectional_gbps if rate else 0

    @property
    def switched(self) -> bool:
        """Whether the GPU reaches its peers through NVSwitches."""
        return bool(self.switch_links)


def _links_of(gpu: Gpu) -> GpuLinks:
    switches: dict[str, int] = {}
    peers: dict[str, int] = {}
    for link in gpu.nvlinks:
        table = switches if link.remote_type == "switch" else peers if link.remote_type == "gpu" else None
        if table is not None:
            table[link.remote_pci_bus_id] = table.get(link.remote_pci_bus_id, 0) + 1
    versions = {link.version for link in gpu.nvlinks}
    return GpuLinks(
        index=gpu.index,
        name=gpu.name,
        uuid=gpu.uuid,
        pci_bus_id=gpu.pci_bus_id,
        module_id=gpu.module_id,
        numa_node=gpu.numa_node,
        architecture=gpu.architecture,
        product_name=gpu.product_name,
        links=len(gpu.nvlinks),
        version=min(versions) if versions else 0,
        switch_links=switches,
        peer_links=peers,
    )


@attrs.frozen(kw_only=True)
class Topology:
    """The NVLink graph of one node's full GPUs (MIG-enabled GPUs have no NVLink P2P and are left out)."""

    gpus: tuple[GpuLinks, ...]
    _by_index: Mapping[int, GpuLinks] = attrs.field(init=False, repr=False, eq=False)
    _pair_cache: dict[tuple[int, int], int] = attrs.field(init=False, repr=False, eq=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_index", {g.index: g for g in self.gpus})

    @classmethod
    def from_inventory(cls, inventory: Inventory) -> Topology:
        """The topology of every full GPU of ``inventory``."""
        return cls.from_gpus(g for g in inventory.gpus if not g.mig_enabled)

    @classmethod
    def from_gpus(cls, gpus: Iterable[Gpu]) -> Topology:
        """The topology of these GPUs (any order; kept in index order)."""
        return cls(gpus=tuple(sorted((_links_of(g) for g in gpus), key=lambda g: g.index)))

    @property
    def indices(self) -> tuple[int, ...]:
        """Every GPU index, ascending."""
        return tuple(g.index for g in self.gpus)

    def gpu(self, index: int) -> GpuLinks:
        """The GPU with NVML index ``index``; KeyError if it is not part of the topology."""
        return self._by_index[index]

    def by_module(self) -> dict[int, GpuLinks]:
        """GPUs by baseboard module id (Fabric Manager physical id); PCIe GPUs (module 0) are left out."""
        return {g.module_id: g for g in self.gpus if g.module_id}

    def pair_bandwidth(self, a: int, b: int) -> int:
        """GB/s one GPU can exchange with the other over NVLink (both directions); 0 = PCIe only."""
        key = (a, b) if a <= b else (b, a)
        cached = self._pair_cache.get(key)
        if cached is not None:
            return cached
        ga, gb = self.gpu(a), self.gpu(b)
        value = 0
        if a != b and ga.rate is not None and gb.rate is not None:
            per_link = min(ga.rate.bidirectional_gbps, gb.rate.bidirectional_gbps)
            shared = set(ga.switch_links) & set(gb.switch_links)
            links = sum(min(ga.switch_links[s], gb.switch_links[s]) for s in shared)
            links += ga.peer_links.get(gb.pci_bus_id, 0)
            value = links * per_link
        elif a == b:
            value = ga.bandwidth_gbps
        self._pair_cache[key] = value
        return value

    def path_class(self, a: int, b: int) -> PathClass:
        """How GPU ``a`` reaches GPU ``b``."""
        if a == b:
            return PathClass.SAME_GPU
        ga, gb = self.gpu(a), self.gpu(b)
        if ga.peer_links.get(gb.pci_bus_id):
            return PathClass.NVLINK_DIRECT
        if self.pair_bandwidth(a, b):
            return PathClass.NVSWITCH
        if ga.numa_node is not None and ga.numa_node == gb.numa_node:
            return PathClass.PCIE_NUMA
        return PathClass.PCIE_SYSTEM

    def latency_ms(self, a: int, b: int) -> float:
        """The assumed latency between two GPUs, from their path class (see :data:`PATH_LATENCY_MS`)."""
        return PATH_LATENCY_MS[self.path_class(a, b)]

    def group_bandwidth(self, indices: Iterable[int]) -> int:
        """The slowest pairwise NVLink bandwidth inside a group (0 for fewer than two GPUs)."""
        members = sorted(set(indices))
        pairs = [self.pair_bandwidth(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
        return min(pairs) if pairs else 0

    def group_latency_ms(self, indices: Iterable[int]) -> float:
        """The slowest pairwise latency inside a group (same-GPU latency for a single GPU)."""
        members = sorted(set(indices))
        pairs = [self.latency_ms(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
        return max(pairs) if pairs else PATH_LATENCY_MS[PathClass.SAME_GPU]

    def nvlink_connected(self, a: int, b: int) -> bool:
        """Whether two distinct GPUs share an NVLink path."""
        return a != b and self.pair_bandwidth(a, b) > 0


_NO_PCI_FUNCTION = "0000:00:00.0"


def nvswitch_functions(gpus: Iterable[Gpu]) -> tuple[str, ...]:
    """PCI addresses (sysfs form) of the NVSwitches these GPUs' NVLinks reach, on this node, sorted.

    NVML names a link's far end by PCI address; switches in separate trays (GB200 NVL72) are no PCI
    function of the node and are reported zeroed, so they are left out.
    """
    found = {
        str(link.remote_pci_bus_id).lower()
        for gpu in gpus
        for link in gpu.nvlinks
        if link.remote_type == "switch" and str(link.remote_pci_bus_id).lower() != _NO_PCI_FUNCTION
    }
    return tuple(sorted(found))
