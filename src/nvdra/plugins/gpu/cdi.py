"""Per-claim CDI specs of the GPU driver: vendor ``k8s.gpu.nvidia.com``, class ``claim``.

One spec per claim, ``<cdi root>/k8s.gpu.nvidia.com-claim_<claimUID>.yaml``, holding the driver's
common edits once and one device per allocated device (``<claimUID>-<deviceName>``). Discovery of
the driver installation is cached (it is read on every prepare); MIG capability nodes are read per
prepare because MIG devices come and go.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nvdra.cdi import (
    ContainerEdits,
    DriverRoot,
    claim_device_id,
    claim_spec,
    claim_spec_name,
    common_edits,
    gpu_edits,
    mig_edits,
    remove_spec,
    remove_stale_temp_files,
    write_spec,
)
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.effects import Applied

__all__ = ["CDI_CLASS", "CDI_VENDOR", "GpuClaimSpecs"]

CDI_VENDOR = "k8s.gpu.nvidia.com"
CDI_CLASS = "claim"
_PREFIX = f"{CDI_VENDOR}-{CDI_CLASS}_"


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
        cdi_root.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(cdi_root)

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
        overrides: dict[str, ContainerEdits] = {}
        common = self.common()
        for a in applied:
            overrides.update(a.device_edits)
            common = common + a.claim_edits
        spec = claim_spec(
            CDI_VENDOR,
            CDI_CLASS,
            claim_uid,
            [(d.name, overrides[d.name] if d.name in overrides else self.edits(d)) for d in devices],
            common,
        )
        write_spec(self.cdi_root, spec, claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid))

    def remove(self, claim_uid: str) -> None:
        """Remove the claim's spec durably; a missing file is fine."""
        remove_spec(self.cdi_root, claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid))

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
