"""A DRA driver for FPGA cards with an opaque config, on ``nvdra.kubeletplugin`` and ``nvdra.cdi``.

Each card is a device of ``fpga.example.com``. A claim says which bitstream to load through an opaque
config (``{"apiVersion": "fpga.example.com/v1", "kind": "FpgaConfig", "bitstream": "<name>"}``), as
GpuConfig does for GPUs. Prepare validates the config first and touches nothing when it is wrong (the
claim gets one precise line), then "programs" the card — a state file written atomically stands in for
the hardware — and writes the claim's CDI spec (the card's device node plus the bitstream in the
environment). Unprepare removes both. Run it: ``python examples/fpga_driver.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fake_cluster import NODE, fake_cluster, unprepare_each, write_claim_devices

from nvdra.cdi import (
    ContainerEdits,
    DeviceNode,
    atomic_write,
    claim_spec_name,
    read_spec,
    remove_durably,
    remove_spec,
)
from nvdra.core.errors import NvdraError
from nvdra.kubeletplugin import ClaimRef, DriverResources, Pool, PrepareResult, Slice

DRIVER = "fpga.example.com"
CDI_VENDOR, CDI_CLASS = "k8s.fpga.example.com", "claim"
BITSTREAMS = ("aes-gcm", "h264-encode", "regex-scan")
CONFIG_KEYS = {"apiVersion", "kind", "bitstream"}


def decode_config(parameters: Mapping[str, Any]) -> str:
    """The bitstream a claim's opaque config asks for.

    Raises:
        ValueError: one line naming the field, the value and what is allowed.
    """
    unknown = sorted(set(parameters) - CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"parameters.{unknown[0]}: unknown field (allowed: {', '.join(sorted(CONFIG_KEYS))})"
        )
    if (parameters.get("apiVersion"), parameters.get("kind")) != (f"{DRIVER}/v1", "FpgaConfig"):
        raise ValueError(f"parameters: expected apiVersion {DRIVER}/v1 and kind FpgaConfig")
    bitstream = parameters.get("bitstream")
    if bitstream not in BITSTREAMS:
        raise ValueError(
            f"parameters.bitstream: {json.dumps(bitstream)} is not one of {', '.join(BITSTREAMS)}"
        )
    return str(bitstream)


class FpgaDriver:
    """Cards ``fpga-0..N-1`` at ``/dev/fpga<N>``; their programmed state lives in ``state_dir``."""

    def __init__(self, cdi_root: Path, state_dir: Path, node: str, cards: int) -> None:
        self.cdi_root, self.state_dir, self.node = cdi_root, state_dir, node
        self.cards = tuple(f"fpga-{i}" for i in range(cards))
        state_dir.mkdir(parents=True, exist_ok=True)

    def resources(self) -> DriverResources:
        devices = tuple(
            {"name": name, "attributes": {"family": {"string": "agilex7"}, "index": {"int": i}}}
            for i, name in enumerate(self.cards)
        )
        return DriverResources(pools={self.node: Pool(slices=(Slice(devices=devices),))})

    def programmed(self, card: str) -> str | None:
        """The bitstream loaded on ``card``, or None."""
        path = self.state_dir / f"{card}.json"
        return str(json.loads(path.read_text())["bitstream"]) if path.exists() else None

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> Mapping[str, PrepareResult]:
        return {c["metadata"]["uid"]: self._prepare(c) for c in claims}

    def _prepare(self, claim: Mapping[str, Any]) -> PrepareResult:
        uid = claim["metadata"]["uid"]
        devices = claim["status"]["allocation"]["devices"]
        results = [r for r in devices["results"] if r["driver"] == DRIVER]
        configs = [
            c["opaque"]["parameters"] for c in devices.get("config", []) if c["opaque"]["driver"] == DRIVER
        ]
        try:  # everything that can be wrong with the claim is checked before anything is changed
            bitstream = decode_config(configs[-1]) if configs else BITSTREAMS[0]
            if any(r["device"] not in self.cards for r in results):
                raise ValueError(f"allocation names a card that is not on node {self.node}")
        except ValueError as exc:
            return PrepareResult(error=f"claim {uid}: {exc}")
        try:
            for r in results:
                atomic_write(
                    self.state_dir / f"{r['device']}.json", json.dumps({"bitstream": bitstream}).encode()
                )
            edits = [
                (
                    r["device"],
                    ContainerEdits(
                        device_nodes=(DeviceNode(path=f"/dev/fpga{self.cards.index(r['device'])}"),),
                        env=(f"FPGA_BITSTREAM={bitstream}",),
                    ),
                )
                for r in results
            ]
            devices = write_claim_devices(self.cdi_root, (CDI_VENDOR, CDI_CLASS), uid, results, edits)
        except NvdraError as exc:
            self._reset(r["device"] for r in results)
            return PrepareResult(error=f"claim {uid}: {exc}")
        return PrepareResult(devices=devices)

    def _reset(self, cards: Any) -> None:
        for card in cards:
            remove_durably(self.state_dir / f"{card}.json")

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        return unprepare_each(claims, self._unprepare)

    def _unprepare(self, ref: ClaimRef) -> None:
        spec_name = claim_spec_name(CDI_VENDOR, CDI_CLASS, ref.uid)
        spec = self.cdi_root / f"{spec_name}.yaml"
        if spec.exists():
            self._reset(d["name"].removeprefix(f"{ref.uid}-") for d in _spec_devices(spec))
        remove_spec(self.cdi_root, spec_name)

    def handle_error(self, error: BaseException, message: str) -> None:
        print(f"{DRIVER}: {message}: {error}", file=sys.stderr)


def _spec_devices(path: Path) -> list[dict[str, Any]]:
    return [d.to_dict() for d in read_spec(path).devices]


def main() -> int:
    """Program a card through a claim's config; show that a wrong config fails only its claim."""
    with fake_cluster(
        lambda work: FpgaDriver(work / "cdi", work / "state", NODE, cards=2), DRIVER
    ) as cluster:
        driver = cluster.driver
        good = {"apiVersion": f"{DRIVER}/v1", "kind": "FpgaConfig", "bitstream": "h264-encode"}
        ref = cluster.claim("encoder", "device.attributes['fpga.example.com'].index == 1", good)
        result = cluster.prepare(ref)
        card = result.devices[0].device_name
        print(f"prepared {card}: programmed with {driver.programmed(card)}")
        bad = {**good, "bitstream": "h265-encode"}
        wrong = cluster.claim("typo", "device.attributes['fpga.example.com'].index == 0", bad)
        print(f"refused: {cluster.prepare(wrong).error}")
        print(f"fpga-0 left untouched: {driver.programmed('fpga-0') is None}")
        print(f"unprepared: {cluster.unprepare(ref) or 'ok'}; {card} programmed: {driver.programmed(card)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
