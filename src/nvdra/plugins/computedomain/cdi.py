"""Per-claim CDI specs of the ComputeDomain driver: vendor ``k8s.compute-domain.nvidia.com``, class ``claim``.

A channel claim's device carries its IMEX channel node(s); a daemon claim's device carries the daemon's
environment, the ``/imexd`` bind mount of its domain directory and, on a node in a clique, the
``fabric-imex-mgmt`` capability node. The channel major comes from ``/proc/devices``
(``nvidia-caps-imex-channels``), read once per spec; all 2048 channels of ``allocationMode: All`` share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from nvdra.cdi import (
    CharDevice,
    ContainerEdits,
    DriverRoot,
    Mount,
    char_device_node,
    claim_device_id,
    claim_spec,
    claim_spec_name,
    read_proc_devices,
    remove_spec,
    remove_stale_temp_files,
    write_spec,
)
from nvdra.core.errors import CdiError

__all__ = ["CDI_VENDOR", "FABRIC_MGMT_CAP", "CdClaimSpecs"]

CDI_VENDOR = "k8s.compute-domain.nvidia.com"
CDI_CLASS = "claim"
FABRIC_MGMT_CAP = "/proc/driver/nvidia/capabilities/fabric-imex-mgmt"
_PREFIX = f"{CDI_VENDOR}-{CDI_CLASS}_"


class CdClaimSpecs:
    """Writes and removes the CD driver's claim specs."""

    def __init__(self, *, cdi_root: Path, driver_root: DriverRoot, proc_root: Path) -> None:
        self.cdi_root = cdi_root
        self.driver_root = driver_root
        self.proc_root = proc_root
        cdi_root.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(cdi_root)

    def device_id(self, claim_uid: str, device_name: str) -> str:
        """``k8s.compute-domain.nvidia.com/claim=<claimUID>-<deviceName>``."""
        return claim_device_id(CDI_VENDOR, CDI_CLASS, claim_uid, device_name)

    def channel_edits(self, channels: Sequence[int]) -> ContainerEdits:
        """The channel device nodes (type ``c``, mode 0666, minor = channel id)."""
        first = self.driver_root.imex_channel(channels[0])
        nodes = []
        for ch in channels:
            dev = attrs.evolve(
                first,
                path=f"/dev/nvidia-caps-imex-channels/channel{ch}",
                host_path=first.host_path.rsplit("/", 1)[0] + f"/channel{ch}",
                minor=ch,
            )
            nodes.append(char_device_node(dev))
        return ContainerEdits(device_nodes=tuple(nodes))

    def fabric_mgmt_node(self) -> CharDevice:
        """The ``fabric-imex-mgmt`` capability node (minor from its capability file, major ``nvidia-caps``).

        Raises:
            CdiError: the capability file or the ``nvidia-caps`` major is missing.
        """
        path = self.proc_root / FABRIC_MGMT_CAP.lstrip("/")
        try:
            fields = dict(line.partition(":")[::2] for line in path.read_text().splitlines())
            minor = int(fields["DeviceFileMinor"].strip())
            mode = int(fields.get("DeviceFileMode", "256").strip())
        except (OSError, KeyError, ValueError) as exc:
            raise CdiError(f"cannot read the IMEX management capability {path}: {exc}") from exc
        majors = read_proc_devices(str(self.proc_root / "proc/devices"))
        if "nvidia-caps" not in majors:
            raise CdiError(f"{self.proc_root / 'proc/devices'} has no nvidia-caps entry")
        node = f"/dev/nvidia-caps/nvidia-cap{minor}"
        host = str(Path(self.driver_root.host_root) / node.lstrip("/"))
        return CharDevice(path=node, host_path=host, major=majors["nvidia-caps"], minor=minor, file_mode=mode)

    def daemon_edits(self, *, env: Sequence[str], domain_dir: Path, fabric_mgmt: bool) -> ContainerEdits:
        """The daemon's env, ``/imexd`` mount and (in a clique) the IMEX management device."""
        nodes = (char_device_node(self.fabric_mgmt_node()),) if fabric_mgmt else ()
        mount = Mount(
            host_path=str(domain_dir), container_path="/imexd", options=("rw", "nosuid", "nodev", "bind")
        )
        return ContainerEdits(env=tuple(env), mounts=(mount,), device_nodes=nodes)

    def write(self, claim_uid: str, devices: Sequence[tuple[str, ContainerEdits]]) -> None:
        """Render and atomically write the claim's spec."""
        spec = claim_spec(CDI_VENDOR, CDI_CLASS, claim_uid, devices, ContainerEdits())
        write_spec(self.cdi_root, spec, claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid))

    def remove(self, claim_uid: str) -> None:
        """Remove the claim's spec durably; a missing file is fine."""
        remove_spec(self.cdi_root, claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid))

    def claim_uids(self) -> set[str]:
        """UIDs of the claims whose specs are in the CDI root."""
        return {p.name[len(_PREFIX) : -len(".yaml")] for p in self.cdi_root.glob(f"{_PREFIX}*.yaml")}

    def path(self, claim_uid: str) -> Path:
        """Where the claim's spec lives."""
        return self.cdi_root / (claim_spec_name(CDI_VENDOR, CDI_CLASS, claim_uid) + ".yaml")
