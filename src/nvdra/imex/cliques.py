"""NVLink cliques: the clique id of a node, clique object names, and central index assignment (pure).

A clique is the set of nodes whose GPUs report one fabric ``(clusterUUID, cliqueId)``: one IMEX domain.
The id string is ``<cluster UUID>.<clique id decimal>``; ``""`` means the node has no multi-node NVLink
(an all-zero cluster UUID, fabric not supported): such a node may join a ComputeDomain, its daemon idles
and no channel device is injected (upstream-driver §6.4).

Index assignment is done by one writer (the controller) over a whole clique at once, so it cannot
collide: existing members keep their index; newcomers get the smallest free indices in node-name order;
a clique never holds more than ``max_nodes`` members (one IMEX domain's limit, 18 on an NVL72 rack), and
members beyond it wait, reported, until a slot frees. A ComputeDomain larger than one clique is simply
several cliques — each its own IMEX domain with its own indices — so domains of any size work.
"""

from __future__ import annotations

__all__ = [
    "FABRIC_COMPLETED",
    "FABRIC_NOT_SUPPORTED",
    "IndexAssignment",
    "assign_indices",
    "clique_id_of",
    "clique_object_name",
    "group_by_clique",
    "parse_clique_id",
]

from collections.abc import Iterable, Mapping, Sequence

import attrs

from nvdra.core.devices import FabricInfo
from nvdra.core.errors import ConfigError, HostError

FABRIC_NOT_SUPPORTED = 0
FABRIC_COMPLETED = 3
_ZERO_UUID = "00000000-0000-0000-0000-000000000000"
_NVML_SUCCESS = 0


def _one(fabric: FabricInfo | None, gpu: str, *, strict: bool) -> str:
    if fabric is None or fabric.state == FABRIC_NOT_SUPPORTED:
        return ""
    if not strict:
        # Legacy mode: only "is the GPU attached to a fabric" counts (upstream's IsFabricAttached).
        attached = fabric.state == FABRIC_COMPLETED and fabric.status == _NVML_SUCCESS
        if not attached or fabric.cluster_uuid == _ZERO_UUID:
            return ""
        return f"{fabric.cluster_uuid}.{fabric.clique_id}"
    if fabric.state != FABRIC_COMPLETED:
        raise HostError(f"GPU {gpu}: NVLink fabric registration not completed (state {fabric.state})")
    if fabric.status != _NVML_SUCCESS:
        raise HostError(f"GPU {gpu}: NVLink fabric registration failed (NVML status {fabric.status})")
    if fabric.cluster_uuid == _ZERO_UUID:
        return ""
    return f"{fabric.cluster_uuid}.{fabric.clique_id}"


def clique_id_of(gpus: Iterable[tuple[str, FabricInfo | None]], *, strict: bool = True) -> str:
    """The node's clique id from its GPUs' fabric info (``(gpu uuid, fabric)`` pairs); "" for none.

    Args:
        gpus: every GPU of the node with its fabric info (None: the call is not supported).
        strict: upstream's ``CrashOnNVLinkFabricErrors`` mode — an incomplete or failed registration is
            an error; otherwise (legacy) a GPU that is not attached simply has no clique.

    Raises:
        HostError: strict and a registration is incomplete or failed, or GPUs disagree on the clique.
    """
    ids = {gpu: _one(fabric, gpu, strict=strict) for gpu, fabric in gpus}
    distinct = set(ids.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{g}={c or 'none'}" for g, c in sorted(ids.items()))
        raise HostError(f"GPUs of this node disagree on the NVLink clique: {detail}")
    return distinct.pop() if distinct else ""


def parse_clique_id(clique_id: str) -> tuple[str, int]:
    """``(cluster UUID, clique id)`` of a clique id string.

    Raises:
        ConfigError: not ``<uuid>.<decimal>``.
    """
    uuid, sep, number = clique_id.rpartition(".")
    if not sep or len(uuid) != 36 or not number.isdigit():
        raise ConfigError("cliqueID", clique_id, "<cluster UUID>.<clique id>")
    return uuid, int(number)


def clique_object_name(domain_uid: str, clique_id: str) -> str:
    """The ComputeDomainClique name ``<computeDomainUID>.<cliqueID>``."""
    return f"{domain_uid}.{clique_id}"


def group_by_clique(nodes: Mapping[str, str]) -> dict[str, list[str]]:
    """Node names grouped by clique id (sorted names; cliques in id order; "" = nodes without a clique)."""
    out: dict[str, list[str]] = {}
    for node, clique in sorted(nodes.items(), key=lambda kv: (kv[1], kv[0])):
        out.setdefault(clique, []).append(node)
    return out


@attrs.frozen(kw_only=True)
class IndexAssignment:
    """Indices of a clique's members, and the nodes that did not fit under ``max_nodes``."""

    indices: Mapping[str, int]
    waiting: tuple[str, ...] = ()


def assign_indices(current: Mapping[str, int], members: Sequence[str], max_nodes: int) -> IndexAssignment:
    """Stable, collision-free indices for ``members`` of one clique.

    Args:
        current: node → index as assigned before (nodes no longer members are dropped).
        members: the clique's members now.
        max_nodes: the IMEX domain size limit (indices are ``0 … max_nodes-1``).

    Raises:
        ConfigError: ``max_nodes`` < 1.
    """
    if max_nodes < 1:
        raise ConfigError("maxNodesPerIMEXDomain", max_nodes, "an integer >= 1")
    wanted = set(members)
    kept: dict[str, int] = {}
    used: set[int] = set()
    # An index held by two nodes (a hand-edited object) stays with the first by name; the other is reassigned.
    for node in sorted(current):
        index = current[node]
        if node in wanted and 0 <= index < max_nodes and index not in used:
            kept[node] = index
            used.add(index)
    free = (i for i in range(max_nodes) if i not in used)
    waiting: list[str] = []
    for node in sorted(wanted - set(kept)):
        slot = next(free, None)
        if slot is None:
            waiting.append(node)
        else:
            kept[node] = slot
    return IndexAssignment(indices=kept, waiting=tuple(waiting))
