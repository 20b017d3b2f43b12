"""Topologies for the fabric tests: every built-in simulated profile, plus synthetic boards.

Synthetic boards are built from real :class:`nvdra.core.devices.Gpu` records wired to NVSwitches the way
the hardware reference describes them (HGX B200: 2 switches x 9 links; two-baseboard HGX A100:
16 GPUs on one switch fabric; a GB200 NVL72 domain: 72 GPUs x 18 links).
"""

from __future__ import annotations

from functools import cache

from nvdra.core.devices import Gpu, Inventory, NvLink
from nvdra.core.ids import GpuUuid, PciBusId
from nvdra.fabric import Topology
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile

SWITCH_PROFILES = ("dgx-h100", "hgx-h200", "dgx-a100")


@cache
def profile_inventory(name: str) -> Inventory:
    """The discovered inventory of a built-in simulated profile."""
    backend = SimulatedNvml(load_profile(name))
    backend.init()
    try:
        return discover_inventory(backend)
    finally:
        backend.shutdown()


def profile_topology(name: str) -> Topology:
    """The topology of a built-in simulated profile."""
    return Topology.from_inventory(profile_inventory(name))


def switched_gpus(
    count: int,
    *,
    architecture: str,
    product: str,
    version: int,
    switches: tuple[int, ...],
    modules: bool = True,
) -> tuple[Gpu, ...]:
    """``count`` GPUs, each with ``switches[k]`` links to switch k, module ids 1..count (when ``modules``)."""
    out = []
    for i in range(count):
        links: list[NvLink] = []
        for s, n in enumerate(switches):
            links += [
                NvLink(
                    link=len(links) + j,
                    version=version,
                    remote_type="switch",
                    remote_pci_bus_id=PciBusId(f"0000:{0xE0 + s:02x}:00.0"),
                )
                for j in range(n)
            ]
        out.append(
            Gpu(
                index=i,
                minor=i,
                uuid=GpuUuid(f"GPU-00000000-0000-0000-0000-{i:012x}"),
                product_name=product,
                brand="Nvidia",
                architecture=architecture,
                cuda_compute_capability=(9, 0),
                memory_bytes=None,
                pci_bus_id=PciBusId(f"{i // 200:04x}:{i % 200 + 1:02x}:00.0"),
                module_id=i + 1 if modules else 0,
                numa_node=i * 2 // count,
                nvlinks=tuple(links),
            )
        )
    return tuple(out)


def hgx_b200() -> Topology:
    """HGX B200: 8 GPUs, 2 NVSwitches, 9 NVLink 5.0 links to each."""
    return Topology.from_gpus(
        switched_gpus(8, architecture="Blackwell", product="NVIDIA B200", version=7, switches=(9, 9))
    )


def hgx_a100_16() -> Topology:
    """Two HGX A100 baseboards: 16 GPUs, 12 NVLink 3.0 links each through the switch fabric."""
    return Topology.from_gpus(
        switched_gpus(
            16, architecture="Ampere", product="NVIDIA A100-SXM4-80GB", version=4, switches=(2,) * 6
        )
    )


def nvl72() -> Topology:
    """A GB200 NVL72 NVLink domain seen as one graph: 72 GPUs, 18 NVLink 5.0 links to the switch trays."""
    return Topology.from_gpus(
        switched_gpus(
            72, architecture="Blackwell", product="NVIDIA GB200", version=7, switches=(2,) * 9, modules=False
        )
    )


BOARDS = {
    "dgx-h100": lambda: profile_topology("dgx-h100"),
    "hgx-h200": lambda: profile_topology("hgx-h200"),
    "dgx-a100": lambda: profile_topology("dgx-a100"),
    "pcie-a100-nvlink": lambda: profile_topology("pcie-a100-nvlink"),
    "gb200-nvl72-tray": lambda: profile_topology("gb200-nvl72-tray"),
    "hgx-b200": hgx_b200,
    "hgx-a100-16": hgx_a100_16,
}
"""Every board of up to 16 GPUs the planner properties run on."""
