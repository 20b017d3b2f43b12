"""The partition catalog: which GPU groups of a node form NVLink partitions, with ids and bandwidth.

Where partitions come from (in this order):

1. A Fabric Manager in a multitenancy mode (Shared NVSwitch, vGPU) answers
   ``fmGetSupportedFabricPartitions``: :meth:`PartitionCatalog.from_fabric_manager`.
2. Otherwise, on an HGX/DGX NVSwitch baseboard Fabric Manager knows, its *default table* for that board
   (the FM user guide's "GPU Partitions" tables, :data:`BOARD_TABLES`) gives the ids — the same ids
   FM would use in a multitenancy mode, so bare metal and Shared NVSwitch agree. A single-baseboard
   A100 only offers the partitions whose GPUs all exist.
3. Only topologies without such a table (NVLink bridge pairs, direct meshes, an NVL72 compute tray
   whose partitions the rack's NVLink management owns) derive partitions from the NVLink graph
   (:func:`derive_partitions`).

Invariants: GPUs are named by NVML index; partition ids are unique within a catalog; every partition's
GPUs exist on the node; a partition's ``bandwidth_gbps`` is per GPU, both directions, GB/s.
"""

from __future__ import annotations

__all__ = [
    "BOARD_TABLES",
    "BoardTable",
    "Partition",
    "PartitionCatalog",
    "cross_check",
    "derive_partitions",
    "detect_board",
]

from collections.abc import Iterable, Mapping, Sequence

import attrs

from nvdra.fabric.topology import Topology


@attrs.frozen(kw_only=True)
class BoardTable:
    """Fabric Manager's default partitions for one baseboard: (id, module ids, NVLinks per GPU)."""

    name: str
    rows: tuple[tuple[int, tuple[int, ...], int], ...]


def _r(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1))


def _board(
    name: str, first_id: int, modules: tuple[int, ...], *tiers: tuple[int, Sequence[tuple[int, ...]]]
) -> BoardTable:
    """A board's table as FM's guide lists it: ids count up from ``first_id`` through each tier's module
    groups (a tier: NVLinks per GPU, then groups, larger sizes first), then one single per module."""
    groups = [(links, group) for links, tier in tiers for group in tier] + [(0, (m,)) for m in modules]
    return BoardTable(
        name=name, rows=tuple((first_id + i, group, links) for i, (links, group) in enumerate(groups))
    )


_H100 = _board("hgx-h100", 0, _r(1, 8), (18, (_r(1, 8), _r(1, 4), _r(5, 8), (1, 3), (2, 4), (5, 7), (6, 8))))
_B200 = _board("hgx-b200", 1, _r(1, 8), (18, (_r(1, 8), _r(1, 4), _r(5, 8), (1, 2), (3, 4), (5, 6), (7, 8))))
_A100 = _board(
    "hgx-a100",
    0,
    _r(1, 16),
    (12, (_r(1, 16), _r(1, 8), _r(9, 16))),
    (12, (_r(1, 4) + _r(9, 12), _r(5, 8) + _r(13, 16), _r(1, 4) + _r(13, 16), _r(5, 8) + _r(9, 12))),
    (12, (_r(1, 4), _r(5, 8), _r(9, 12), _r(13, 16))),
    (12, tuple((2 * i + 1, 2 * i + 2) for i in range(8))),
)
_HGX2 = _board(
    "hgx-2",
    0,
    _r(1, 16),
    (6, (_r(1, 16), _r(1, 8), _r(9, 16))),
    (5, ((1, 4, 6, 7, 9, 12, 14, 15), (2, 3, 5, 8, 10, 11, 13, 16))),
    (5, ((1, 4, 6, 7), (2, 3, 5, 8), (9, 12, 14, 15), (10, 11, 13, 16))),
    (5, ((1, 4), (2, 3), (5, 8), (6, 7), (9, 12), (10, 11), (13, 16), (14, 15))),
)

BOARD_TABLES: Mapping[str, BoardTable] = {t.name: t for t in (_H100, _B200, _A100, _HGX2)}
"""Fabric Manager's default partition tables (FM user guide), by board name."""


@attrs.frozen(kw_only=True)
class Partition:
    """One partition: its id, its GPUs (NVML indices, ascending) and their module ids, and its bandwidth."""

    id: int
    gpus: tuple[int, ...]
    module_ids: tuple[int, ...]
    links_per_gpu: int
    bandwidth_gbps: int  # per GPU inside the partition, both directions
    source: str  # "fabric-manager" | board table name | "derived"

    @property
    def size(self) -> int:
        """Number of GPUs."""
        return len(self.gpus)

    @property
    def label(self) -> str:
        """``partition-<id>``, the spelling configs and logs use."""
        return f"partition-{self.id}"


def detect_board(topology: Topology) -> str | None:
    """The Fabric Manager board whose default table applies, or None (no NVSwitch baseboard FM knows).

    An NVSwitch baseboard is recognised by every GPU reaching NVSwitches and carrying a module id the
    table knows; the GPU generation picks the table. GB200/GB300 compute trays are left out: their
    partitions belong to the rack's NVLink management, not to libnvfm.
    """
    gpus = topology.gpus
    if not gpus or not all(g.switched and g.module_id for g in gpus):
        return None
    modules = {g.module_id for g in gpus}
    arch = {g.architecture for g in gpus}
    products = " ".join(g.product_name for g in gpus)
    if arch == {"Hopper"} and modules <= set(_r(1, 8)):
        return _H100.name
    if arch == {"Blackwell"} and "GB" not in products and modules <= set(_r(1, 8)):
        return _B200.name
    if arch == {"Ampere"} and modules <= set(_r(1, 16)):
        return _A100.name
    if arch == {"Volta"} and modules <= set(_r(1, 16)):
        return _HGX2.name
    return None


def _usable_links(topology: Topology, gpus: Sequence[int], listed: int) -> int:
    """NVLinks per GPU a partition really has: what FM (or its table) lists, capped by what NVML reports
    active on each member (a link that is down carries nothing, whatever the table says)."""
    if len(gpus) < 2:
        return listed
    return min([listed, *(topology.gpu(i).links for i in gpus)])


def cross_check(topology: Topology, listed: Iterable[tuple[int, Sequence[int], int, int]]) -> list[str]:
    """Where Fabric Manager's partition info and NVML disagree, one line each (empty: they agree).

    ``listed``: (partition id, physical ids, NVLinks available per GPU, NVLink line rate MB/s) as FM
    reports them. Checked: every module exists, FM lists no more links than NVML sees active, and the
    line rate is the one of the link generation NVML reports (:data:`~nvdra.fabric.topology.LINK_RATES`).
    """
    modules = topology.by_module()
    out = []
    for pid, mods, links, rate in listed:
        missing = [m for m in mods if m not in modules]
        if missing:
            out.append(f"partition {pid}: modules {missing} are not GPUs NVML reports")
            continue
        for m in mods:
            gpu = modules[m]
            if len(mods) > 1 and links > gpu.links:
                out.append(
                    f"partition {pid}: Fabric Manager lists {links} NVLinks for module {m} ({gpu.name}), "
                    f"NVML reports {gpu.links} active; bandwidth uses {gpu.links}"
                )
            expected = gpu.rate.line_rate_mbps if gpu.rate is not None else 0
            if rate and expected and rate != expected:
                out.append(
                    f"partition {pid}: Fabric Manager's line rate for module {m} is {rate} MB/s, "
                    f"NVML's NVLink version {gpu.version} runs at {expected} MB/s"
                )
    return out


def _per_link(topology: Topology, gpus: Iterable[int]) -> int:
    rates = [topology.gpu(i).rate for i in gpus]
    known = [r.bidirectional_gbps for r in rates if r is not None]
    return min(known) if known else 0


def _listed_partitions(
    topology: Topology, listed: Iterable[tuple[int, Sequence[int], int]], source: str
) -> tuple[Partition, ...]:
    """Partitions from (id, module ids, NVLinks per GPU) rows, a board table's or Fabric Manager's: a row
    naming no module or one this node lacks is left out; links are capped by what NVML sees active."""
    modules = topology.by_module()
    out = []
    for pid, mods, links in listed:
        if mods and all(m in modules for m in mods):
            gpus = tuple(sorted(modules[m].index for m in mods))
            usable = _usable_links(topology, gpus, links)
            out.append(
                Partition(
                    id=pid,
                    gpus=gpus,
                    module_ids=tuple(sorted(mods)),
                    links_per_gpu=usable,
                    bandwidth_gbps=usable * _per_link(topology, gpus) if len(gpus) > 1 else 0,
                    source=source,
                )
            )
    return tuple(out)


@attrs.frozen(kw_only=True)
class PartitionCatalog:
    """Every partition of a node, with lookups by id, by GPU set and by size."""

    partitions: tuple[Partition, ...]
    source: str
    _by_id: Mapping[int, Partition] = attrs.field(init=False, repr=False, eq=False)
    _by_gpus: Mapping[frozenset[int], Partition] = attrs.field(init=False, repr=False, eq=False)
    _enclosing: Mapping[int, tuple[Partition, ...]] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        by_id: dict[int, Partition] = {}
        by_gpus: dict[frozenset[int], Partition] = {}
        for p in self.partitions:
            if p.id in by_id:
                raise ValueError(f"duplicate partition id {p.id} in catalog {self.source}")
            by_id[p.id] = p
            by_gpus.setdefault(frozenset(p.gpus), p)  # the lowest id wins where FM lists a set twice
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_gpus", by_gpus)
        enclosing: dict[int, tuple[Partition, ...]] = {}
        for p in self.partitions:
            members = set(p.gpus)
            larger = [q for q in self.partitions if q.size > p.size and members <= set(q.gpus)]
            smallest = min((q.size for q in larger), default=0)
            enclosing[p.id] = tuple(q for q in larger if q.size == smallest)
        object.__setattr__(self, "_enclosing", enclosing)

    @classmethod
    def for_topology(cls, topology: Topology) -> PartitionCatalog:
        """The board's default table where Fabric Manager knows the board, else partitions from NVLink."""
        board = detect_board(topology)
        if board is None:
            return cls(partitions=derive_partitions(topology), source="derived")
        return cls.from_table(topology, BOARD_TABLES[board])

    @classmethod
    def from_table(cls, topology: Topology, table: BoardTable) -> PartitionCatalog:
        """The rows of ``table`` whose modules all exist on this node."""
        return cls(partitions=_listed_partitions(topology, table.rows, table.name), source=table.name)

    @classmethod
    def from_fabric_manager(
        cls, topology: Topology, listed: Iterable[tuple[int, Sequence[int], int]]
    ) -> PartitionCatalog:
        """Partitions as Fabric Manager lists them: (id, physical ids = module ids, NVLinks per GPU).

        Partitions naming a module this node does not have are left out (FM and NVML disagree only on a
        broken node; the partition cannot be verified, so it is not offered).
        """
        return cls(partitions=_listed_partitions(topology, listed, "fabric-manager"), source="fabric-manager")

    def get(self, partition_id: int) -> Partition | None:
        """The partition with this id, or None."""
        return self._by_id.get(partition_id)

    def enclosing(self, partition_id: int) -> tuple[Partition, ...]:
        """The smallest partitions strictly larger than ``partition_id`` that hold all its GPUs."""
        return self._enclosing.get(partition_id, ())

    def exact(self, gpus: Iterable[int]) -> Partition | None:
        """The partition made of exactly these GPUs (lowest id if several), or None."""
        return self._by_gpus.get(frozenset(gpus))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Partition sizes this node offers, ascending."""
        return tuple(sorted({p.size for p in self.partitions}))

    def of_size(self, size: int) -> tuple[Partition, ...]:
        """Partitions of ``size`` GPUs, by id."""
        return tuple(p for p in self.partitions if p.size == size)

    def containing(self, gpu: int, size: int) -> Partition | None:
        """The lowest-id partition of ``size`` GPUs holding GPU ``gpu``, or None."""
        return next((p for p in self.partitions if p.size == size and gpu in p.gpus), None)


def derive_partitions(topology: Topology) -> tuple[Partition, ...]:
    """Partitions of a topology without a Fabric Manager table, from its NVLink graph.

    Each connected NVLink component is taken in index order. Where every pair of its GPUs is linked
    (an NVSwitch domain, a full mesh) it is cut into blocks of 8 (then 4, then 2) consecutive GPUs, each
    block halved down to pairs, so that sizes nest like FM's tables; otherwise its directly linked pairs
    are taken greedily. Every GPU is also a 1-GPU partition. Ids follow FM's order: larger first, then
    by first GPU.
    """
    groups: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for g in topology.indices:
        if g in seen:
            continue
        component = _component(topology, g)
        seen.update(component)
        if len(component) < 2:
            continue
        complete = all(
            topology.nvlink_connected(a, b) for i, a in enumerate(component) for b in component[i + 1 :]
        )
        groups += _nested_blocks(component) if complete else _greedy_pairs(topology, component)
    groups += [(g,) for g in topology.indices]
    groups.sort(key=lambda grp: (-len(grp), grp))
    out = []
    for pid, grp in enumerate(groups):
        bandwidth = topology.group_bandwidth(grp)
        per_link = _per_link(topology, grp)
        out.append(
            Partition(
                id=pid,
                gpus=grp,
                module_ids=tuple(topology.gpu(i).module_id for i in grp),
                links_per_gpu=bandwidth // per_link if per_link and len(grp) > 1 else 0,
                bandwidth_gbps=bandwidth,
                source="derived",
            )
        )
    return tuple(out)


def _component(topology: Topology, start: int) -> tuple[int, ...]:
    found, frontier = {start}, [start]
    while frontier:
        a = frontier.pop()
        for b in topology.indices:
            if b not in found and topology.nvlink_connected(a, b):
                found.add(b)
                frontier.append(b)
    return tuple(sorted(found))


def _nested_blocks(members: tuple[int, ...]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    rest = list(members)
    for size in (8, 4, 2):
        while len(rest) >= size:
            block, rest = tuple(rest[:size]), rest[size:]
            out += _halves(block)
    return out


def _halves(block: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(block) < 2:
        return []
    half = len(block) // 2
    return [block, *_halves(block[:half]), *_halves(block[half:])]


def _greedy_pairs(topology: Topology, members: tuple[int, ...]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    used: set[int] = set()
    for a in members:
        if a in used:
            continue
        b = next((b for b in members if b > a and b not in used and topology.nvlink_connected(a, b)), None)
        if b is not None:
            used.update((a, b))
            out.append((a, b))
    return out
