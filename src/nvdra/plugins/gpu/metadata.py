"""KEP-5304 device metadata (gate ``DeviceMetadata``, needs ``PassthroughSupport``).

Per request of a prepared claim (protocols §9 item 10): a JSON file under the plugin directory
describing the request's devices (driver, pool, device, attributes — for a VFIO device its PCI address,
which is what KubeVirt needs), and a CDI spec ``k8s.gpu.nvidia.com-metadata_<claimUID>_<request>``
whose one device ``<claimUID>-<request>`` bind-mounts that file read-only at
``/var/run/kubernetes.io/dra-device-attributes/<claim name>/<request>/metadata.json``. The CDI id is
appended to the first device of each request. Both files are written as a ``device-metadata`` effect
(logged before it is applied, undone on unprepare and rollback), so they never outlive the claim.
"""

from __future__ import annotations

__all__ = [
    "CONTAINER_DIR",
    "METADATA_KIND",
    "DeviceMetadata",
    "MetadataDevice",
    "MetadataExecutor",
    "MetadataPlanner",
    "metadata_cdi_id",
    "with_metadata_ids",
]

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from nvdra.cdi import (
    ContainerEdits,
    Mount,
    claim_spec,
    claim_spec_name,
    qualified_name,
    remove_spec,
    write_spec,
)
from nvdra.cdi.writer import atomic_write, remove_durably
from nvdra.core.checkpoint import DeviceRecord
from nvdra.core.config import GpuConfig, VfioDeviceConfig, VirtualizationModel
from nvdra.core.effects import EffectRecord, effect_field
from nvdra.core.errors import CdiError
from nvdra.fabric.topology import nvswitch_functions
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.gpu.effects import Applied, ClaimContext, Effects, expect

METADATA_KIND = "device-metadata"
CONTAINER_DIR = "/var/run/kubernetes.io/dra-device-attributes"
API_VERSION = "metadata.resource.k8s.io/v1alpha1"
_VENDOR = "k8s.gpu.nvidia.com"
_CLASS = "metadata"


def _attributes_from_json(obj: Any) -> dict[str, str | int]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected an object of attributes, got {obj!r}")
    bad = {k: v for k, v in obj.items() if isinstance(v, bool) or not isinstance(v, str | int)}
    if bad:
        raise ValueError(f"attribute values must be strings or integers, got {bad!r}")
    return {str(k): v for k, v in obj.items()}


@attrs.frozen(kw_only=True)
class MetadataDevice:
    """One device of a request, as the metadata file describes it."""

    driver: str
    pool: str
    device: str
    attributes: Mapping[str, str | int] = effect_field(
        decode=_attributes_from_json, encode=dict, factory=dict
    )


@attrs.frozen(kw_only=True)
class DeviceMetadata(EffectRecord):
    """Write the metadata file (and its CDI spec) of one request of a claim."""

    KIND: ClassVar[str] = METADATA_KIND
    claim: ClaimRef
    request: str
    devices: tuple[MetadataDevice, ...]


def metadata_cdi_id(claim_uid: str, request: str) -> str:
    """``k8s.gpu.nvidia.com/metadata=<claimUID>-<request>``."""
    return qualified_name(_VENDOR, _CLASS, f"{claim_uid}-{request}")


def with_metadata_ids(devices: Sequence[DeviceRecord], claim_uid: str) -> tuple[DeviceRecord, ...]:
    """The devices with the metadata CDI id appended to the first device of each request."""
    seen: set[str] = set()
    out = []
    for device in devices:
        d = device
        request = d.requests[0] if d.requests else ""
        if request and request not in seen:
            seen.add(request)
            d = DeviceRecord(
                requests=d.requests,
                pool_name=d.pool_name,
                device_name=d.device_name,
                cdi_device_ids=(*d.cdi_device_ids, metadata_cdi_id(claim_uid, request)),
                share_id=d.share_id,
                admin_access=d.admin_access,
            )
        out.append(d)
    return tuple(out)


class MetadataPlanner:
    """One ``device-metadata`` record per request of the claim (pure)."""

    def __init__(self, driver_name: str = "gpu.nvidia.com") -> None:
        self.driver_name = driver_name

    def plan(self, ctx: ClaimContext) -> Sequence[DeviceMetadata]:
        """Records carrying everything the metadata file will say."""
        by_request: dict[str, list[MetadataDevice]] = {}
        passthrough = _full_passthrough_devices(ctx)
        for device, result in zip(ctx.devices, ctx.results, strict=True):
            request = str(result.get("request", "")).split("/", 1)[0]
            attributes: dict[str, str | int] = {
                "type": device.type,
                "uuid": device.uuid,
                "productName": device.gpu.product_name,
                "resource.kubernetes.io/pciBusID": (
                    device.vfio.address if device.vfio is not None else device.gpu.pci_bus_id
                ),
            }
            if device.vfio is not None and device.vfio.function.iommu_group is not None:
                attributes["iommuGroup"] = device.vfio.function.iommu_group
            if device.name in passthrough:  # FullPassthrough hands the guest the NVSwitches too
                attributes["nvswitchPciBusIDs"] = ",".join(nvswitch_functions(device.gpus))
            by_request.setdefault(request, []).append(
                MetadataDevice(
                    driver=self.driver_name,
                    pool=str(result.get("pool", "")),
                    device=device.name,
                    attributes=attributes,
                )
            )
        return [
            DeviceMetadata(claim=ctx.ref, request=request, devices=tuple(devices))
            for request, devices in by_request.items()
        ]


def _full_passthrough_devices(ctx: ClaimContext) -> set[str]:
    """Devices of config groups whose fabricTopologyConfig is FullPassthrough (their NVSwitches go along)."""
    out: set[str] = set()
    for group in ctx.groups:
        config = group.config
        fabric = (
            config.effective_fabric_topology if isinstance(config, GpuConfig | VfioDeviceConfig) else None
        )
        if (
            fabric is not None
            and fabric.active
            and fabric.effective_model is VirtualizationModel.FULL_PASSTHROUGH
        ):
            out.update(d.name for d in ctx.group_devices(group))
    return out


class MetadataExecutor:
    """Writes and removes the metadata file and its CDI spec."""

    records: tuple[type[EffectRecord], ...] = (DeviceMetadata,)

    def __init__(self, *, plugin_dir: Path, cdi_root: Path) -> None:
        self.plugin_dir = plugin_dir
        self.cdi_root = cdi_root

    def path(self, record: DeviceMetadata) -> Path:
        """Where the record's metadata file lives on the host."""
        return self.plugin_dir / "metadata" / record.claim.uid / record.request / "metadata.json"

    def _spec_name(self, record: DeviceMetadata) -> str:
        return claim_spec_name(_VENDOR, _CLASS, f"{record.claim.uid}_{record.request}")

    def apply(self, record: EffectRecord) -> Applied:
        """Write the file, then the spec that mounts it (a spec never points at a missing file)."""
        meta = expect(record, DeviceMetadata)
        claim, request = meta.claim, meta.request
        body = Effects.to_json(meta)
        doc = {
            "apiVersion": API_VERSION,
            "kind": "DeviceMetadata",
            "claim": body["claim"],
            "request": request,
            "devices": body["devices"],
        }
        path = self.path(meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(doc, indent=2, sort_keys=True).encode(), mode=0o644, error_cls=CdiError)
        mount = Mount(
            host_path=str(path),
            container_path=f"{CONTAINER_DIR}/{claim.name}/{request}/metadata.json",
            options=("ro", "nosuid", "nodev", "bind"),
        )
        spec = claim_spec(
            _VENDOR, _CLASS, claim.uid, [(request, ContainerEdits(mounts=(mount,)))], ContainerEdits()
        )
        write_spec(self.cdi_root, spec, self._spec_name(meta))
        return Applied()

    def undo(self, record: EffectRecord) -> None:
        """Remove the spec, then the file and its empty directories (missing ones are fine)."""
        meta = expect(record, DeviceMetadata)
        remove_spec(self.cdi_root, self._spec_name(meta))
        path = self.path(meta)
        remove_durably(path, error_cls=CdiError)
        for d in (path.parent, path.parent.parent):
            try:
                d.rmdir()
            except OSError:
                break  # not empty (another request) or already gone
