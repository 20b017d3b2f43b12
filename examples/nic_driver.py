"""A DRA driver for SR-IOV network cards in ~100 lines, on ``nvdra.kubeletplugin`` and ``nvdra.cdi``.

Each virtual function (VF) of the node's NICs is a device of ``nic.example.com``, with the attributes a
claim selects on (physical function, NUMA node, link speed). Preparing a claim writes one CDI spec that
moves the VF's host interface into the container as ``net1`` (CDI ``netDevices``); unpreparing removes
the spec. Run it: ``python examples/nic_driver.py`` (no cluster needed; see ``fake_cluster.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from fake_cluster import NODE, fake_cluster, unprepare_each, write_claim_devices

from nvdra.cdi import (
    ContainerEdits,
    NetDevice,
    claim_spec_name,
    remove_spec,
)
from nvdra.core.errors import NvdraError
from nvdra.kubeletplugin import ClaimRef, DriverResources, Pool, PrepareResult, Slice

DRIVER = "nic.example.com"
CDI_VENDOR, CDI_CLASS = "k8s.nic.example.com", "claim"


@attrs.frozen(kw_only=True)
class VirtualFunction:
    """One VF as the node sees it (a real driver would read /sys/class/net/<pf>/device/virtfn*)."""

    pf: str
    index: int
    numa_node: int
    speed_gbps: int

    @property
    def name(self) -> str:
        return f"{self.pf}-vf{self.index}"

    @property
    def interface(self) -> str:
        return f"{self.pf}v{self.index}"

    def device(self) -> dict[str, Any]:
        """The ResourceSlice device (v1 shape)."""
        return {
            "name": self.name,
            "attributes": {
                "pf": {"string": self.pf},
                "vf": {"int": self.index},
                "numaNode": {"int": self.numa_node},
                "linkSpeedGbps": {"int": self.speed_gbps},
            },
        }


def node_vfs() -> tuple[VirtualFunction, ...]:
    """Two 100 Gb/s NICs on two NUMA nodes, four VFs each."""
    return tuple(
        VirtualFunction(pf=f"enp{n + 1}s0f0", index=i, numa_node=n, speed_gbps=100)
        for n in range(2)
        for i in range(4)
    )


class NicDriver:
    """The driver: prepare = write a CDI spec per claim; unprepare = remove it."""

    def __init__(self, cdi_root: Path, node: str, vfs: Sequence[VirtualFunction]) -> None:
        self.cdi_root, self.node = cdi_root, node
        self.vfs = {vf.name: vf for vf in vfs}

    def resources(self) -> DriverResources:
        return DriverResources(
            pools={self.node: Pool(slices=(Slice(devices=tuple(vf.device() for vf in self.vfs.values())),))}
        )

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> Mapping[str, PrepareResult]:
        return {c["metadata"]["uid"]: self._prepare(c) for c in claims}

    def _prepare(self, claim: Mapping[str, Any]) -> PrepareResult:
        uid = claim["metadata"]["uid"]
        results = [r for r in claim["status"]["allocation"]["devices"]["results"] if r["driver"] == DRIVER]
        unknown = [r["device"] for r in results if r["device"] not in self.vfs]
        if unknown:
            return PrepareResult(error=f"claim {uid}: devices {unknown} are not on node {self.node}")
        edits = [
            (
                r["device"],
                ContainerEdits(
                    net_devices=(
                        NetDevice(host_interface_name=self.vfs[r["device"]].interface, name=f"net{i + 1}"),
                    )
                ),
            )
            for i, r in enumerate(results)
        ]
        try:
            devices = write_claim_devices(self.cdi_root, (CDI_VENDOR, CDI_CLASS), uid, results, edits)
        except NvdraError as exc:
            return PrepareResult(error=str(exc))
        return PrepareResult(devices=devices)

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        return unprepare_each(
            claims, lambda ref: remove_spec(self.cdi_root, claim_spec_name(CDI_VENDOR, CDI_CLASS, ref.uid))
        )

    def handle_error(self, error: BaseException, message: str) -> None:
        print(f"{DRIVER}: {message}: {error}", file=sys.stderr)


def main() -> int:
    """Publish the VFs, allocate a VF on NUMA node 1, prepare it, show the CDI spec, unprepare it."""
    vfs = node_vfs()
    with fake_cluster(lambda work: NicDriver(work / "cdi", NODE, vfs), DRIVER) as cluster:
        print(f"published: {[d['name'] for s in cluster.slices() for d in s['spec']['devices']]}")
        ref = cluster.claim("fast-net", "device.attributes['nic.example.com'].numaNode == 1")
        result = cluster.prepare(ref)
        print(f"prepared {[d.device_name for d in result.devices]} -> {result.devices[0].cdi_device_ids[0]}")
        spec = cluster.work / "cdi" / f"{claim_spec_name(CDI_VENDOR, CDI_CLASS, ref.uid)}.yaml"
        print(spec.read_text(), end="")
        print(f"unprepared: {cluster.unprepare(ref) or 'ok'}; spec left: {spec.exists()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
