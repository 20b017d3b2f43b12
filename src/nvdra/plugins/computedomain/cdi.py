"""Per-claim CDI specs of the ComputeDomain driver: vendor ``k8s.compute-domain.nvidia.com``, class ``claim``.

A channel claim's device carries its IMEX channel node(s); a daemon claim's device carries the daemon's
environment, the ``/imexd`` bind mount of its domain directory and, on a node in a clique, the
``fabric-imex-mgmt`` capability node together with the driver's common edits, as upstream hands every
daemon its management-mode base spec: the driver libraries, control nodes and utility binaries of the
host driver root (found by the same discovery as the GPU plugin's, :mod:`nvdra.cdi.driverroot`), so
``nvidia-imex`` and ``nvidia-imex-ctl`` appear at their paths relative to the root
(``/usr/bin/nvidia-imex``), with the ``nvidia-cdi-hook`` hooks that make the libraries loadable. A
clique node whose driver root lacks either IMEX binary fails the daemon claim with a line naming the root.
The channel major comes from ``/proc/devices`` (``nvidia-caps-imex-channels``), read once per spec; all
2048 channels of ``allocationMode: All`` share it.
"""

from __future__ import annotations

__all__ = ["CDI_VENDOR", "FABRIC_MGMT_CAP", "IMEX_BINARIES", "CdClaimSpecs"]

from collections.abc import Sequence
from pathlib import Path

import attrs

from nvdra.cdi import (
    BINARY_DIRS,
    DEFAULT_HOOK_PATH,
    CharDevice,
    ContainerEdits,
    DriverRoot,
    Mount,
    char_device_node,
    claim_device_id,
    claim_spec,
    claim_spec_name,
    common_edits,
    read_proc_devices,
    remove_spec,
    remove_stale_temp_files,
    write_spec,
)
from nvdra.core.errors import CdiError

CDI_VENDOR = "k8s.compute-domain.nvidia.com"
CDI_CLASS = "claim"
FABRIC_MGMT_CAP = "/proc/driver/nvidia/capabilities/fabric-imex-mgmt"
IMEX_BINARIES = ("nvidia-imex", "nvidia-imex-ctl")
_PREFIX = f"{CDI_VENDOR}-{CDI_CLASS}_"


class CdClaimSpecs:
    """Writes and removes the CD driver's claim specs."""

    def __init__(
        self, *, cdi_root: Path, driver_root: DriverRoot, proc_root: Path, hook_path: str = DEFAULT_HOOK_PATH
    ) -> None:
        self.cdi_root = cdi_root
        self.driver_root = driver_root
        self.proc_root = proc_root
        self.hook_path = hook_path
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
        """The daemon's env, ``/imexd`` mount and, in a clique, the IMEX management device and the driver.

        Raises:
            CdiError: in a clique, the driver root has no ``nvidia-imex`` or ``nvidia-imex-ctl``, or the
                capability or driver discovery failed.
        """
        mount = Mount(
            host_path=str(domain_dir), container_path="/imexd", options=("rw", "nosuid", "nodev", "bind")
        )
        own = ContainerEdits(env=tuple(env), mounts=(mount,))
        if not fabric_mgmt:
            return own
        driver = self.driver_root.installation()
        found = {Path(b.path).name for b in driver.binaries}
        missing = [name for name in IMEX_BINARIES if name not in found]
        if missing:
            raise CdiError(
                f"{' and '.join(missing)} not found in the driver root {self.driver_root.container_root} "
                f"(host {self.driver_root.host_root}; searched {', '.join(BINARY_DIRS)}): install the "
                "nvidia-imex package there, the ComputeDomain daemon runs the node's own IMEX"
            )
        nodes = (char_device_node(self.fabric_mgmt_node()),)
        return common_edits(driver, hook_path=self.hook_path) + own + ContainerEdits(device_nodes=nodes)

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
