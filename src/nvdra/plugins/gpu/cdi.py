"""Per-claim CDI specs of the GPU driver: vendor ``k8s.gpu.nvidia.com``, class ``claim``.

One spec per claim, ``<cdi root>/k8s.gpu.nvidia.com-claim_<claimUID>.yaml``, holding the driver's
common edits once and one device per allocated device (``<claimUID>-<deviceName>``). Discovery of
the driver installation is cached (it is read on every prepare); MIG capability nodes are read per
prepare because MIG devices come and go.

Passthrough: a device whose edits an effect replaced with ``NVIDIA_VISIBLE_DEVICES=void`` edits (the
vfio-pci bind's: :data:`PASSTHROUGH_ENV`) is on vfio-pci, not on the NVIDIA driver. When every device of
the claim is such a device, the spec carries no driver edits at all — as upstream, the common edits are
replaced by ``NVIDIA_VISIBLE_DEVICES=void`` plus the IOMMU API device (``/dev/vfio/vfio`` or
``/dev/iommu``) once, and each device keeps only its vfio node. The driver's libraries, hooks and
``/dev/nvidiactl`` would be wrong there: no GPU of the claim is on ``nvidia``, and the hooks would run in
a VM launcher that has no use for them.
"""

from __future__ import annotations

__all__ = [
    "CDI_CLASS",
    "CDI_VENDOR",
    "IOMMU_API_DEVICES",
    "PASSTHROUGH_ENV",
    "GpuClaimSpecs",
    "is_passthrough",
]

from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from nvdra.cdi import (
    ContainerEdits,
    DeviceNode,
    DriverRoot,
    Spec,
    claim_device_id,
    claim_spec,
    claim_spec_name,
    common_edits,
    gpu_edits,
    mig_edits,
    on_memory_filesystem,
    remove_spec,
    remove_specs,
    remove_stale_temp_files,
    write_spec,
    write_specs,
)
from nvdra.core.errors import NvdraError
from nvdra.core.faults import reach
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.effects import Applied

CDI_VENDOR = "k8s.gpu.nvidia.com"
CDI_CLASS = "claim"
_PREFIX = f"{CDI_VENDOR}-{CDI_CLASS}_"

PASSTHROUGH_ENV = "NVIDIA_VISIBLE_DEVICES=void"
"""Upstream's env for a container that gets no GPU from the NVIDIA runtime (its devices are on vfio-pci)."""
IOMMU_API_DEVICES = frozenset({"/dev/vfio/vfio", "/dev/iommu"})
"""The IOMMU API devices a VM launcher may need once per container (``enableAPIDevice``)."""


def is_passthrough(edits: ContainerEdits | None) -> bool:
    """Whether a device's edits are a vfio-pci passthrough's (they carry :data:`PASSTHROUGH_ENV`)."""
    return edits is not None and PASSTHROUGH_ENV in edits.env


def _vm_spec_edits(
    device_edits: Sequence[tuple[str, ContainerEdits]], claim_edits: ContainerEdits
) -> tuple[list[tuple[str, ContainerEdits]], ContainerEdits]:
    """An all-passthrough claim: the env and API devices hoisted to the spec (once), vfio nodes per device."""
    api: dict[str, DeviceNode] = {}
    devices = []
    for name, edits in device_edits:
        for node in edits.device_nodes:
            if node.path in IOMMU_API_DEVICES:
                api.setdefault(node.path, node)
        own = tuple(n for n in edits.device_nodes if n.path not in IOMMU_API_DEVICES)
        devices.append((name, attrs.evolve(edits, env=(), device_nodes=own)))
    common = ContainerEdits(env=(PASSTHROUGH_ENV,), device_nodes=tuple(api.values()))
    return devices, common + claim_edits


class GpuClaimSpecs:
    """Writes and removes the GPU driver's claim specs (implements the driver's ``ClaimSpecs``)."""

    def __init__(
        self,
        *,
        cdi_root: Path,
        host_driver_root: Path,
        container_driver_root: Path,
        driver_version: str,
        hook_path: str = "/usr/bin/nvidia-cdi-hook",
    ) -> None:
        self.cdi_root = cdi_root
        self.hook_path = hook_path
        self.driver_root = DriverRoot(
            str(host_driver_root), str(container_driver_root), driver_version=driver_version
        )
        self._common: ContainerEdits | None = None
        cdi_root.mkdir(parents=True, exist_ok=True, mode=0o755)  # never world-writable, whatever the umask
        remove_stale_temp_files(cdi_root)
        # A spec write on tmpfs is CPU only: the driver then makes it itself (see ClaimSpecs.in_memory).
        self.in_memory = on_memory_filesystem(cdi_root)

    def common(self) -> ContainerEdits:
        """The spec-level edits (cached with the discovery)."""
        if self._common is None:
            self._common = common_edits(self.driver_root.installation(), hook_path=self.hook_path)
        return self._common

    def device_id(self, claim_uid: str, device_name: str) -> str:
        """``k8s.gpu.nvidia.com/claim=<claimUID>-<deviceName>``."""
        return claim_device_id(CDI_VENDOR, CDI_CLASS, claim_uid, device_name)

    def edits(self, device: AllocatableDevice) -> ContainerEdits:
        """The container edits of one allocated device."""
        driver = self.driver_root.installation()
        if device.members:  # an NVLink partition device: every member GPU's node
            edits = ContainerEdits()
            for gpu in device.members:
                edits = edits + gpu_edits(driver, gpu.minor)
            return edits
        if device.mig is None:
            return gpu_edits(driver, device.gpu.minor)
        caps = self.driver_root.mig_caps(device.gpu.minor, device.mig.gi_id, device.mig.ci_id)
        return mig_edits(driver, device.gpu.minor, caps)

    def write(
        self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied] = ()
    ) -> None:
        """Render and atomically write the claim's spec, with what applied effects contribute.

        An effect's per-device edits replace that device's default edits (e.g. a MIG device created at
        prepare); its claim edits are added to the spec-level edits (e.g. an MPS pipe mount).
        """
        write_spec(self.cdi_root, self._spec(claim_uid, devices, applied), self._name(claim_uid))
        reach("after-cdi-written")

    def write_many(
        self, claims: Mapping[str, Sequence[AllocatableDevice]]
    ) -> dict[str, BaseException | None]:
        """Write the specs of many claims without effects (claim UID → devices) as :meth:`write` would,
        made durable together (:func:`~nvdra.cdi.write_specs`: one sync for the batch, one directory
        fsync); each claim's failure, or None once its spec is durable."""
        out: dict[str, BaseException | None] = {}
        specs: dict[str, Spec] = {}
        names: dict[str, str] = {}
        for uid, devices in claims.items():
            try:
                names[uid] = self._name(uid)
                specs[names[uid]] = self._spec(uid, devices, ())
            except (NvdraError, OSError) as exc:
                out[uid] = exc
        written = write_specs(self.cdi_root, specs) if specs else {}
        for uid in claims:
            if uid not in out:
                out[uid] = written[names[uid]]
                if out[uid] is None:
                    reach("after-cdi-written")
        return out

    def remove_many(self, claim_uids: Sequence[str]) -> dict[str, BaseException | None]:
        """Remove many claims' specs durably, with one directory fsync after all of them; each claim's
        failure, or None (a missing spec is fine)."""
        out: dict[str, BaseException | None] = {}
        names: dict[str, str] = {}
        for uid in claim_uids:
            try:
                names[uid] = self._name(uid)
            except NvdraError as exc:
                out[uid] = exc
        removed = remove_specs(self.cdi_root, list(names.values()))
        for uid, name in names.items():
            outcome = removed[name]
            out[uid] = None if isinstance(outcome, bool) else outcome
            if outcome is True:
                reach("after-cdi-removed")
        return out

    @staticmethod
    def _name(claim_uid: str) -> str:
        return claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid)

    def _spec(self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied]) -> Spec:
        overrides: dict[str, ContainerEdits] = {}
        claim_edits = ContainerEdits()
        for a in applied:
            overrides.update(a.device_edits)
            claim_edits = claim_edits + a.claim_edits
        passthrough = {d.name for d in devices if is_passthrough(overrides.get(d.name))}
        if devices and len(passthrough) == len(devices):
            rendered, common = _vm_spec_edits([(d.name, overrides[d.name]) for d in devices], claim_edits)
        else:
            # A mixed claim (a container GPU beside a passed-through one) keeps the driver's common edits:
            # its GPU device needs them, and they do not touch the vfio device. Its vfio devices keep their
            # nodes but drop NVIDIA_VISIBLE_DEVICES=void, which the common edits already set once.
            rendered = [
                (
                    d.name,
                    attrs.evolve(overrides[d.name], env=_without_void(overrides[d.name].env))
                    if d.name in passthrough
                    else overrides[d.name]
                    if d.name in overrides
                    else self.edits(d),
                )
                for d in devices
            ]
            common = self.common() + claim_edits
        return claim_spec(CDI_VENDOR, CDI_CLASS, claim_uid, rendered, common)

    def remove(self, claim_uid: str) -> None:
        """Remove the claim's spec durably; a missing file is fine."""
        if remove_spec(self.cdi_root, claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid)):
            reach("after-cdi-removed")

    def exists(self, claim_uid: str) -> bool:
        """Whether the claim's spec is in the CDI root."""
        return self.path(claim_uid).is_file()

    def claim_uids(self) -> set[str]:
        """UIDs of the claims whose specs are in the CDI root."""
        return {
            p.name[len(_PREFIX) : -len(".yaml")]
            for p in self.cdi_root.glob(f"{_PREFIX}*.yaml")
            if p.is_file()
        }

    def path(self, claim_uid: str) -> Path:
        """Where the claim's spec lives."""
        return self.cdi_root / (claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid) + ".yaml")


def _without_void(env: Sequence[str]) -> tuple[str, ...]:
    return tuple(e for e in env if e != PASSTHROUGH_ENV)
