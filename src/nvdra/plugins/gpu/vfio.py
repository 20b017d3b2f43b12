"""VFIO passthrough for the GPU driver (gate ``PassthroughSupport``): devices, planner, executor.

- :class:`PassthroughView` publishes ``gpu-vfio-<i>`` devices beside the GPUs and withdraws the other
  view of a board while one view is prepared (upstream §5.4: "siblings hidden, slice republished");
- :class:`VfioPlanner` turns the claim's ``VfioDeviceConfig`` groups into ``vfio-pci`` effect records;
  :func:`vfio_bind_records` is the same for any GPUs (the fabric FullPassthrough/SharedNVSwitch paths
  call it to send a partition's GPUs to vfio-pci);
- :class:`VfioExecutor` applies a record: refuses a GPU with SR-IOV VFs, accepts it only from
  ``nvidia`` (or already on vfio-pci), disables persistence mode when ``nvidia-persistenced`` runs,
  waits (bounded) until no process holds ``/dev/nvidia<minor>``, binds to vfio-pci, and returns the
  CDI edits: ``NVIDIA_VISIBLE_DEVICES=void`` plus ``/dev/vfio/<group>`` (legacy) or
  ``/dev/vfio/devices/vfioN`` (IOMMUFD), and optionally the API device (``/dev/iommu`` or
  ``/dev/vfio/vfio``). Undo binds back to ``nvidia`` and re-enables persistence; it is idempotent.
"""

from __future__ import annotations

__all__ = [
    "BOARD_ATTRIBUTES",
    "VFIO_KIND",
    "PassthroughView",
    "VfioBind",
    "VfioExecutor",
    "VfioPlanner",
    "ensure_vfio_ready",
    "nvswitch_bind_records",
    "passthrough_effects",
    "passthrough_host",
    "passthrough_views",
    "vfio_bind_records",
]

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from nvdra.cdi import ContainerEdits, DeviceNode
from nvdra.core.config.vfio import IommuBackendPolicy, IommuConfig, VfioDeviceConfig
from nvdra.core.devices import Gpu, Inventory
from nvdra.core.effects import EffectRecord, effect_field
from nvdra.core.errors import ClaimError, HostError
from nvdra.core.faults import reach
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.ids import GpuUuid, PciBusId
from nvdra.core.passthrough import (
    NVIDIA_DRIVER,
    VFIO_DRIVER,
    VfioDevice,
    enumerate_vfio_devices,
    hidden_siblings,
    render_vfio_device,
)
from nvdra.fabric.attributes import is_board_attribute
from nvdra.kubeletplugin.types import DriverResources, Pool, Slice
from nvdra.plugins.gpu.cdi import PASSTHROUGH_ENV
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.effects import Applied, ClaimContext, EffectExecutor, EffectPlanner, expect
from nvdra.plugins.gpu.metadata import MetadataExecutor, MetadataPlanner
from nvdra.plugins.gpu.vfio_host import PassthroughHost, SimulatedSysfs, SysfsHost, make_simulated_sysfs

log = logging.getLogger(__name__)

VFIO_KIND = "vfio-pci"


@attrs.frozen(kw_only=True)
class VfioBind(EffectRecord):
    """Bind the function at ``address`` to vfio-pci: a GPU of ``device``, or one of its NVSwitches."""

    KIND: ClassVar[str] = VFIO_KIND
    device: str  # the claim's device (for an NVSwitch: the device it travels with)
    address: str
    minor: int | None = None  # /dev/nvidia<minor>, waited on until free; None for an NVSwitch
    nvswitch: bool = effect_field(omit_default=True, default=False)
    backend_policy: IommuBackendPolicy = IommuBackendPolicy.LEGACY_ONLY
    api_device: bool = False


def ensure_vfio_ready(host: PassthroughHost) -> None:
    """Upstream's start check: IOMMU groups must exist; load ``vfio_pci`` (fatal if that fails)."""
    if not host.iommu_enabled():
        raise HostError("PassthroughSupport needs an IOMMU, but /sys/kernel/iommu_groups is empty")
    host.load_module("vfio_pci")


class PassthroughView:
    """The VFIO devices of a node and the sibling rule, as a device view of the GPU driver."""

    def __init__(self, host: PassthroughHost, inventory: Inventory) -> None:
        self.host = host
        self._gpus: dict[str, Gpu] = {str(g.pci_bus_id): g for g in inventory.gpus}
        functions = host.pci_functions()
        self.devices = enumerate_vfio_devices(
            functions,
            {a: g.name for a, g in self._gpus.items()},
            {a for a, g in self._gpus.items() if g.mig_enabled},
        )
        self.iommufd = host.iommufd_available()

    def _gpu(self, device: VfioDevice) -> Gpu:
        gpu = self._gpus.get(device.address)
        if gpu is not None:
            return gpu
        # Bound away from nvidia at start: NVML does not see it; describe it from sysfs.
        return Gpu(
            index=-1,
            minor=-1,
            uuid=GpuUuid(device.uuid),
            product_name=device.function.product_name,
            brand="",
            architecture="",
            cuda_compute_capability=(0, 0),
            memory_bytes=None,
            pci_bus_id=PciBusId(device.address),
            numa_node=device.function.numa_node,
        )

    def _with_names(self, device: VfioDevice) -> VfioDevice:
        gpu = self._gpus.get(device.address)
        if gpu is None or device.function.product_name:
            return device
        return attrs.evolve(device, function=attrs.evolve(device.function, product_name=gpu.product_name))

    def allocatable(self) -> dict[str, AllocatableDevice]:
        """``gpu-vfio-<i>`` → its AllocatableDevice (type ``vfio``)."""
        return {
            d.name: AllocatableDevice(name=d.name, type="vfio", gpu=self._gpu(d), vfio=self._with_names(d))
            for d in self.devices
        }

    def hidden(self, held: Collection[str]) -> frozenset[str]:
        """Views withdrawn because their sibling is held."""
        return hidden_siblings(held, self.devices)

    def refuse(self, name: str, held: Collection[str]) -> str | None:
        """Why ``name`` cannot be prepared now (its sibling view is prepared), or None."""
        if name in self.hidden(held):
            sibling = next(
                (
                    d.name if d.sibling == name else d.sibling
                    for d in self.devices
                    if name in (d.name, d.sibling)
                ),
                "?",
            )
            return f"device {name!r} is unavailable while {sibling!r}, the other view of its GPU, is prepared"
        return None

    def decorate(self, resources: DriverResources, held: Collection[str]) -> DriverResources:
        """Add the VFIO devices to each pool's first device slice; drop the hidden views.

        A VFIO device carries its GPU view's board attributes (``gpuModuleID``, ``partition<N>``,
        ``nvlinkBandwidth``, published with FabricTopologySupport), as upstream does, so that
        ``matchAttribute: gpu.nvidia.com/partition4`` selects a partition of VFIO devices too.
        """
        hidden = self.hidden(held)
        published = {d.get("name"): d for p in resources.pools.values() for s in p.slices for d in s.devices}
        extra = tuple(
            _with_board_attributes(
                render_vfio_device(self._with_names(d), iommufd=self.iommufd), published.get(d.sibling)
            )
            for d in self.devices
        )
        pools = {}
        for name, pool in resources.pools.items():
            slices = list(pool.slices)
            first = next((i for i, s in enumerate(slices) if s.devices), None)
            if first is None:
                slices.append(Slice(devices=extra))
            else:
                slices[first] = attrs.evolve(slices[first], devices=slices[first].devices + extra)
            slices = [
                attrs.evolve(s, devices=tuple(d for d in s.devices if d.get("name") not in hidden))
                for s in slices
            ]
            pools[name] = Pool(slices=tuple(slices), generation=pool.generation)
            extra = ()  # one node pool in practice; never publish a device twice
        return DriverResources(pools=pools)


BOARD_ATTRIBUTES = ("gpuModuleID", "nvlinkBandwidth", "partition1", "partition2", "partition4", "partition8")
"""GPU-view attributes that describe the board, not the driver bound to it: a VFIO view shares them."""


def _with_board_attributes(device: dict[str, Any], sibling: Mapping[str, Any] | None) -> dict[str, Any]:
    if sibling is None:
        return device
    board = {
        k: v
        for k, v in (sibling.get("attributes") or {}).items()
        if k in BOARD_ATTRIBUTES or is_board_attribute(k)
    }
    if not board:
        return device
    return {**device, "attributes": dict(sorted({**device["attributes"], **board}.items()))}


def vfio_bind_records(
    devices: Sequence[AllocatableDevice], config: VfioDeviceConfig | None = None
) -> tuple[VfioBind, ...]:
    """``vfio-pci`` records binding these devices' GPUs (VFIO or full-GPU devices) to vfio-pci.

    Raises:
        ClaimError: a MIG device (a MIG slice cannot be passed through), or a GPU with SR-IOV VFs.
    """
    iommu = (config.iommu if config is not None else None) or IommuConfig()
    policy = iommu.backend_policy or IommuBackendPolicy.LEGACY_ONLY
    records = []
    for d in devices:
        if d.type == "mig":
            raise ClaimError(f"device {d.name!r} is a MIG device; only whole GPUs can be passed through")
        if d.vfio is not None and d.vfio.function.sriov_vfs:
            raise ClaimError(
                f"device {d.name!r} has {d.vfio.function.sriov_vfs} SR-IOV virtual functions; "
                "remove them before passing the GPU through"
            )
        records.append(
            VfioBind(
                device=d.name,
                address=d.vfio.address if d.vfio is not None else d.gpu.pci_bus_id,
                minor=d.gpu.minor if d.gpu.minor >= 0 else None,
                backend_policy=policy,
                api_device=bool(iommu.enable_api_device),
            )
        )
    return tuple(records)


def nvswitch_bind_records(
    addresses: Sequence[str], owner: str, config: VfioDeviceConfig | None = None
) -> tuple[VfioBind, ...]:
    """``vfio-pci`` records binding a partition's NVSwitch functions (FullPassthrough: a guest that runs
    its own Fabric Manager needs them). ``owner``: the claim's device they travel with (for logs); their
    VFIO nodes go into the claim's common CDI edits."""
    iommu = (config.iommu if config is not None else None) or IommuConfig()
    policy = iommu.backend_policy or IommuBackendPolicy.LEGACY_ONLY
    return tuple(
        VfioBind(device=owner, address=address, nvswitch=True, backend_policy=policy) for address in addresses
    )


class VfioPlanner:
    """Plans a bind for every device of a ``VfioDeviceConfig`` group (pure).

    A group whose ``fabricTopologyConfig`` is active is left to the fabric planner, which binds its
    devices itself, ordered before the partition's activation (see ``plugins.gpu.fabric.planner``).
    """

    def plan(self, ctx: ClaimContext) -> Sequence[VfioBind]:
        """``vfio-pci`` records for the claim's VFIO devices."""
        records: list[VfioBind] = []
        for group in ctx.groups:
            if isinstance(group.config, VfioDeviceConfig):
                fabric = group.config.fabric_topology_config
                if fabric is not None and fabric.active:
                    continue
                records.extend(vfio_bind_records(ctx.group_devices(group), group.config))
        return records


@attrs.frozen(kw_only=True)
class _Wait:
    timeout: float = 60.0
    poll: float = 1.0


class VfioExecutor:
    """Binds GPUs to vfio-pci and back through a :class:`PassthroughHost`."""

    records: tuple[type[EffectRecord], ...] = (VfioBind,)

    def __init__(
        self,
        host: PassthroughHost,
        *,
        wait_timeout: float = 60.0,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.wait = _Wait(timeout=wait_timeout, poll=poll_interval)
        self._sleep = sleep
        self._clock = clock

    def apply(self, record: EffectRecord) -> Applied:
        """Bind the record's GPU to vfio-pci (see the module docstring) and return its CDI edits."""
        bind = expect(record, VfioBind)
        address, name, switch = bind.address, bind.device, bind.nvswitch
        what = f"NVSwitch {address} (with {name})" if switch else f"{name} ({address})"
        current = self.host.driver_of(address)
        if current != VFIO_DRIVER:
            if current != NVIDIA_DRIVER:
                raise HostError(f"{what} is bound to {current!r}; only a function on nvidia can be bound")
            vfs = self.host.sriov_vfs(address)
            if vfs:
                raise HostError(f"{what} has {vfs} SR-IOV virtual functions; refusing to bind")
            if not switch and self.host.persistenced_running():
                self.host.set_persistence(address, False)
            if bind.minor is not None:
                self._wait_until_free(f"/dev/nvidia{bind.minor}", name)
            log.info("binding %s to vfio-pci", what)
            self.host.bind(address, VFIO_DRIVER)
            reach("after-vfio-bound")
        if switch:  # no device of the claim: its VFIO node joins the claim's common edits
            return Applied(claim_edits=attrs.evolve(self._edits(bind), env=()))
        return Applied(device_edits={name: self._edits(bind)})

    def _wait_until_free(self, path: str, name: str) -> None:
        deadline = self._clock() + self.wait.timeout
        while True:
            users = self.host.users_of(path)
            if not users:
                return
            if self._clock() >= deadline:
                raise HostError(
                    f"{name}: {path} is still in use by PIDs {list(users)} after {self.wait.timeout:g} s"
                )
            self._sleep(self.wait.poll)

    def _edits(self, record: VfioBind) -> ContainerEdits:
        address = record.address
        dev = self.host.dev_root
        cdev = self.host.vfio_cdev(address)
        use_fd = (
            record.backend_policy is IommuBackendPolicy.PREFER_IOMMUFD
            and self.host.iommufd_available()
            and cdev is not None
        )
        if use_fd:
            nodes = [f"/dev/vfio/devices/{cdev}"]
        else:
            group = self.host.iommu_group(address)
            if group is None:
                raise HostError(f"{address} has no IOMMU group")
            nodes = [f"/dev/vfio/{group}"]
        if record.api_device:
            nodes.append("/dev/iommu" if use_fd else "/dev/vfio/vfio")
        return ContainerEdits(
            env=(PASSTHROUGH_ENV,),  # marks the device as passthrough for the claim's spec (see cdi.py)
            device_nodes=tuple(
                DeviceNode(path=n, host_path="" if str(dev) == "/dev" else str(dev) + n[len("/dev") :])
                for n in nodes
            ),
        )

    def undo(self, record: EffectRecord) -> None:
        """Bind back to nvidia and re-enable persistence mode.

        Nothing to do when the GPU is on nvidia (or another driver nvdra never moved it from); an
        unbound GPU (a bind that died between unbind and probe) is bound back too.
        """
        bind = expect(record, VfioBind)
        address = bind.address
        if self.host.driver_of(address) not in (VFIO_DRIVER, None):
            return
        log.info("binding %s (%s) back to nvidia", bind.device, address)
        self.host.bind(address, NVIDIA_DRIVER)
        if not bind.nvswitch and self.host.persistenced_running():
            self.host.set_persistence(address, True)


def passthrough_host(config: PluginConfig, inventory: Inventory | None = None) -> PassthroughHost:
    """The host of this plugin: the real sysfs, or with ``--simulate`` the simulated profile's own tree
    (``config.simulated_tree("sysfs")``; laid out from ``inventory`` when given, else opened as it is)."""
    if config.simulate:
        root = config.simulated_tree("sysfs", create=True)
        return make_simulated_sysfs(root, inventory) if inventory is not None else SimulatedSysfs(root)
    return SysfsHost(driver_root=config.container_driver_root)


def passthrough_views(
    config: PluginConfig, gates: FeatureGates, inventory: Inventory
) -> list[PassthroughView]:
    """``[PassthroughView]`` when PassthroughSupport is on (after upstream's start check), else ``[]``."""
    if not gates.enabled(Gate.PASSTHROUGH_SUPPORT):
        return []
    host = passthrough_host(config, inventory)
    ensure_vfio_ready(host)
    return [PassthroughView(host, inventory)]


def passthrough_effects(
    config: PluginConfig, gates: FeatureGates
) -> tuple[list[EffectPlanner], list[EffectExecutor]]:
    """Planners and executors of passthrough (vfio-pci binds) and device metadata, per the gates."""
    planners: list[EffectPlanner] = []
    executors: list[EffectExecutor] = []
    if gates.enabled(Gate.PASSTHROUGH_SUPPORT):
        planners.append(VfioPlanner())
        executors.append(VfioExecutor(passthrough_host(config)))
    if gates.enabled(Gate.DEVICE_METADATA):
        planners.append(MetadataPlanner(config.driver_name))
        executors.append(MetadataExecutor(plugin_dir=config.plugin_dir, cdi_root=config.cdi_root))
    return planners, executors
