"""This node's fabric: topology, partitions, Fabric Manager client; published attributes; the node label.

- :class:`NodeFabric` holds what the planner needs; :func:`connect_fabric_manager` finds the FM client
  (simulated on a simulated node, libnvfm otherwise).
- :func:`with_fabric_attributes`: every full GPU carries ``gpuModuleID``, ``partition1``/``2``/``4``/``8``
  (upstream's names) and ``nvlinkBandwidth`` (GB/s), within the 32 attributes + capacities per device.
- :func:`fabric_gate_for_node`: the label ``resource.nvidia.com/fabric-topology-support`` on this Node
  overrides the gate for the node (gradual rollout); the log says which source decided.
- :func:`partition_rows`: what ``nvdra partitions`` prints.
"""

from __future__ import annotations

__all__ = [
    "FABRIC_LABEL",
    "FabricManagerWatch",
    "NodeFabric",
    "connect_fabric_manager",
    "fabric_attributes",
    "fabric_gate_for_node",
    "fabric_manager_watch",
    "partition_rows",
    "simulated_node_fabric",
    "watch_fabric_manager",
    "with_fabric_attributes",
]

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from nvdra.core.config import VirtualizationModel
from nvdra.core.devices import Inventory
from nvdra.fabric import (
    FabricManager,
    FabricManagerError,
    FabricMode,
    LibnvfmFabricManager,
    PartitionCatalog,
    SimulatedFabricManager,
    Topology,
    describe_mode,
    detect_board,
    simulated_fabric_mode,
)
from nvdra.fabric.attributes import (
    MODE_ATTRIBUTE,
    SOURCE_ATTRIBUTE,
    bandwidth_attribute,
    latency_attribute,
    latency_ns,
    mode_value,
    partition_attribute,
    passthrough_bandwidth_attribute,
)
from nvdra.fabric.catalog import Partition, cross_check
from nvdra.fabric.libnvfm import read_fabric_mode
from nvdra.fabric.models import POLICIES
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile
from nvdra.plugins.gpu.nodewatch import FABRIC_LABEL, fabric_gate_for_node  # the label, without fabric

log = logging.getLogger(__name__)

MAX_ATTRIBUTES = 32  # attributes + capacities per device (resource.k8s.io v1)


# -- the node ----------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NodeFabric:
    """What the planner knows of this node: its topology, partitions, Fabric Manager mode and client."""

    topology: Topology
    catalog: PartitionCatalog
    mode: FabricMode | None
    fm: FabricManager | None = None
    fm_problem: str = ""  # why no client, when the mode needs one

    @classmethod
    def build(
        cls,
        inventory: Inventory,
        fm: FabricManager | None,
        *,
        fm_problem: str = "",
        configured_mode: FabricMode | None = None,
    ) -> NodeFabric:
        """Read Fabric Manager's mode and (in a multitenancy mode) its live partition listing.

        The listing is the one table: prepare activates from it and the published attributes name it.
        FM's per-GPU link counts and line rates are cross-checked against NVML (disagreements logged;
        bandwidth uses the links NVML sees active). Without a client, ``configured_mode`` (FABRIC_MODE
        from fabricmanager.cfg) is the node's mode and the board table stands in, which the
        ``fabricPartitionSource`` attribute and a log line say.
        """
        topology = Topology.from_inventory(inventory)
        mode = fm.mode() if fm is not None else configured_mode
        catalog = PartitionCatalog.for_topology(topology)
        if fm is not None and mode is not FabricMode.BARE_METAL:
            listed = fm.partitions()
            for line in cross_check(
                topology,
                (
                    (
                        p.partition_id,
                        p.physical_ids,
                        p.nvlinks_per_gpu,
                        min((g.nvlink_line_rate_mbps for g in p.gpus), default=0),
                    )
                    for p in listed
                ),
            ):
                log.warning("Fabric Manager and NVML disagree: %s", line)
            catalog = PartitionCatalog.from_fabric_manager(
                topology, ((p.partition_id, p.physical_ids, p.nvlinks_per_gpu) for p in listed)
            )
        elif fm is None and mode in (FabricMode.SHARED_NVSWITCH, FabricMode.VGPU):
            log.warning(
                "%s is configured but cannot be reached (%s); publishing the board's %s partition table "
                "(fabricPartitionSource=%s); retrying Fabric Manager every 30 s",
                describe_mode(mode),
                fm_problem or "no client",
                catalog.source,
                catalog.source,
            )
        return cls(topology=topology, catalog=catalog, mode=mode, fm=fm, fm_problem=fm_problem)

    @classmethod
    def offline(cls, inventory: Inventory) -> NodeFabric:
        """The fabric as far as NVML alone tells: the board's default table, no Fabric Manager."""
        topology = Topology.from_inventory(inventory)
        return cls(topology=topology, catalog=PartitionCatalog.for_topology(topology), mode=None)

    def index_of(self, device_name: str) -> int | None:
        """The NVML index of a published full GPU."""
        return next((g.index for g in self.topology.gpus if g.name == device_name), None)

    def index_at(self, pci_bus_id: str) -> int | None:
        """The NVML index of the GPU at a PCI address (how a ``gpu-vfio-<i>`` device finds its GPU)."""
        wanted = pci_bus_id.lower()
        return next((g.index for g in self.topology.gpus if g.pci_bus_id.lower() == wanted), None)


def connect_fabric_manager(
    inventory: Inventory, *, simulate: str, driver_root: Path, env: Mapping[str, str]
) -> tuple[FabricManager | None, str]:
    """The node's Fabric Manager client (simulated for a simulated node), or None and why not."""
    topology = Topology.from_inventory(inventory)
    if detect_board(topology) is None:
        return None, "this node has no NVSwitch baseboard that Fabric Manager manages"
    if simulate:
        # The profile declares its Fabric Manager (fabric_manager.mode); the env variable overrides it.
        mode = simulated_fabric_mode(load_profile(simulate).fabric_manager_mode, env)
        if mode is None:
            return None, f"the simulated node {simulate!r} runs no Fabric Manager"
        return SimulatedFabricManager.for_topology(topology, mode=mode), ""
    try:
        return LibnvfmFabricManager.connect(driver_root=driver_root, env=env), ""
    except FabricManagerError as exc:
        configured = read_fabric_mode(driver_root)
        log.warning(
            "Fabric Manager SDK unavailable (%s); configured mode: %s", exc, describe_mode(configured)
        )
        return None, str(exc)


class FabricManagerWatch:
    """While the plugin publishes the board's table because Fabric Manager could not be reached, try FM
    every ``interval`` seconds; once it answers with its partition listing, call ``on_answer`` once
    (``serve`` then serves again, building the node's fabric from FM's live listing)."""

    def __init__(
        self, connect: Callable[[], FabricManager], on_answer: Callable[[], None], *, interval: float = 30.0
    ) -> None:
        self._connect = connect
        self._on_answer = on_answer
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvdra-fm-watch", daemon=True)

    def start(self) -> FabricManagerWatch:
        """Start trying in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop trying (waits for an attempt in progress)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                fm = self._connect()
                try:
                    listed = fm.partitions()
                finally:
                    fm.close()
            except FabricManagerError as exc:
                log.debug("Fabric Manager still unreachable: %s", exc)
                continue
            log.warning(
                "Fabric Manager answers now (%d partitions); serving again to publish its live table",
                len(listed),
            )
            self._on_answer()
            return


def fabric_manager_watch(
    node: NodeFabric | None,
    *,
    simulate: str,
    driver_root: Path,
    env: Mapping[str, str],
    on_answer: Callable[[], None],
    interval: float = 30.0,
) -> FabricManagerWatch | None:
    """A :class:`FabricManagerWatch` when this node publishes the board table only because its Fabric
    Manager (configured in a multitenancy mode) could not be reached; None otherwise."""
    if node is None or simulate or node.fm is not None:
        return None
    if node.mode not in (FabricMode.SHARED_NVSWITCH, FabricMode.VGPU):
        return None
    return FabricManagerWatch(
        lambda: LibnvfmFabricManager.connect(driver_root=driver_root, env=env), on_answer, interval=interval
    )


def watch_fabric_manager(
    node: NodeFabric | None, config: Any, env: Mapping[str, str], on_answer: Callable[[], None] | None
) -> Callable[[], None]:
    """Start :func:`fabric_manager_watch` for the plugin's node fabric (its fabric planner's,
    :func:`~nvdra.plugins.gpu.fabric.planned_node_fabric`) when it applies and ``on_answer`` is given;
    returns what stops it (a no-op otherwise)."""
    watch = fabric_manager_watch(
        node,
        simulate=config.simulate,
        driver_root=Path(config.container_driver_root),
        env=env,
        on_answer=on_answer or (lambda: None),
    )
    if watch is None or on_answer is None:
        return lambda: None
    return watch.start().stop


# -- publishing --------------------------------------------------------------------------------------


def fabric_attributes(
    inventory: Inventory, node: NodeFabric | None = None
) -> dict[str, dict[str, dict[str, int | str]]]:
    """Per published GPU name: the attributes of :mod:`nvdra.fabric.attributes` and ``gpuModuleID``,
    ``nvlinkBandwidth``, from ``node``'s partition table and mode (default: :meth:`NodeFabric.offline`)."""
    node = node or NodeFabric.offline(inventory)
    topology, catalog = node.topology, node.catalog
    passthrough = POLICIES[VirtualizationModel.FULL_PASSTHROUGH]
    serves_passthrough = passthrough.allows(node.mode)
    # Per partition once (not per member): its latency and passthrough bandwidth; per GPU and size, the
    # first partition in catalog order holding it (what PartitionCatalog.containing answers).
    holding: dict[tuple[int, int], Partition] = {}
    for partition in catalog.partitions:
        for index in partition.gpus:
            holding.setdefault((index, partition.size), partition)
    figures: dict[int, dict[str, dict[str, int | str]]] = {}
    for partition in {p.id: p for p in holding.values()}.values():
        size = partition.size
        extra: dict[str, dict[str, int | str]] = {partition_attribute(size): {"int": partition.id}}
        if size >= 2:
            extra[bandwidth_attribute(size)] = {"int": partition.bandwidth_gbps}
            extra[latency_attribute(size)] = {"int": latency_ns(topology.group_latency_ms(partition.gpus))}
            if serves_passthrough:
                extra[passthrough_bandwidth_attribute(size)] = {
                    "int": passthrough.bandwidth_gbps(partition, topology)
                }
        figures[partition.id] = extra
    out: dict[str, dict[str, dict[str, int | str]]] = {}
    for gpu in topology.gpus:
        attributes: dict[str, dict[str, int | str]] = {
            "gpuModuleID": {"int": gpu.module_id},
            "nvlinkBandwidth": {"int": gpu.bandwidth_gbps},
            MODE_ATTRIBUTE: {"string": mode_value(node.mode)},
            SOURCE_ATTRIBUTE: {"string": catalog.source},
        }
        for size in (1, 2, 4, 8):
            found = holding.get((gpu.index, size))
            if found is not None:  # fresh value dicts per device: nothing is shared between devices
                attributes.update({name: dict(value) for name, value in figures[found.id].items()})
        out[gpu.name] = attributes
    return out


def with_fabric_attributes(
    devices: Iterable[dict[str, Any]], inventory: Inventory, node: NodeFabric | None = None
) -> tuple[dict[str, Any], ...]:
    """Copies of the rendered devices with the fabric attributes added to each full GPU.

    ``node``: the running plugin's fabric (FM's live table and mode); without it, NVML's view alone.
    An attribute that would push a device over the 32 attributes + capacities limit is left out (logged).
    """
    extra = fabric_attributes(inventory, node)
    out = []
    for device in devices:
        added = extra.get(device["name"])
        if added is None:
            out.append(device)
            continue
        attributes = dict(device.get("attributes", {}))
        room = MAX_ATTRIBUTES - len(attributes) - len(device.get("capacity", {}))
        for name, value in added.items():
            if name in attributes:
                continue
            if room <= 0:
                log.warning(
                    "device %s: no room for attribute %s (limit %d)", device["name"], name, MAX_ATTRIBUTES
                )
                continue
            attributes[name] = value
            room -= 1
        out.append({**device, "attributes": dict(sorted(attributes.items()))})
    return tuple(out)


# -- the gate, per node ------------------------------------------------------------------------------


# -- `nvdra partitions` ------------------------------------------------------------------------------


def partition_rows(node: NodeFabric) -> list[dict[str, str]]:
    """One row per partition: id, size, GPUs (module ids), bandwidth, and free/active state."""
    active: set[int] = set()
    if node.fm is not None and node.mode is not FabricMode.BARE_METAL:
        active = {p.partition_id for p in node.fm.partitions() if p.is_active}
    rows = []
    for p in node.catalog.partitions:
        rows.append(
            {
                "ID": str(p.id),
                "SIZE": str(p.size),
                "GPUS": ",".join(node.topology.gpu(i).name for i in p.gpus),
                "MODULES": ",".join(map(str, p.module_ids)),
                "BANDWIDTH": f"{p.bandwidth_gbps} GB/s",
                "STATE": "active" if p.id in active else "free",
            }
        )
    return rows


def simulated_node_fabric(profile: str, env: Mapping[str, str]) -> NodeFabric:
    """The fabric of a simulated node profile, with its simulated Fabric Manager (fresh: nothing active)."""
    backend = SimulatedNvml(load_profile(profile))
    backend.init()
    try:
        inventory = discover_inventory(backend)
    finally:
        backend.shutdown()
    fm, problem = connect_fabric_manager(inventory, simulate=profile, driver_root=Path("/"), env=env)
    return NodeFabric.build(inventory, fm, fm_problem=problem)
