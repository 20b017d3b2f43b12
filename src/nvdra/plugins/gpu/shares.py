"""The consumable-shares device view (``ConsumableShares`` + ``--consumable-shares``).

Publishing: every GPU and MIG device is made shareable (:func:`nvdra.core.shares.apply_consumable_shares`).
Preparing: a claim whose allocation result carries a ``shareID`` may be prepared on a device that
other claims hold through shares of their own (:meth:`nvdra.plugins.gpu.driver.GpuDriver` checks
holders); a device held without a share stays exclusive.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from nvdra.core.config import ConfigGroup, SharingStrategy
from nvdra.core.effects import EffectRecord
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.shares import SharesOption, apply_consumable_shares, parse_consumable_shares
from nvdra.core.sharing.timeslicing import TimeSlice
from nvdra.kubeletplugin.types import DriverResources, Pool
from nvdra.plugins.gpu.devices import AllocatableDevice

__all__ = [
    "ConsumableSharesView",
    "keep_shared",
    "mps_share_refusal",
    "shares_option",
    "shares_views",
    "time_slice_conflict",
]


def shares_option(text: str, gates: FeatureGates) -> SharesOption:
    """``--consumable-shares`` checked against the gates (upstream's rules, and DynamicMIG for nvdra).

    Raises:
        ConfigError: a bad value, the ConsumableShares gate off, or DynamicMIG on.
    """
    option = parse_consumable_shares(text, gate_enabled=gates.enabled(Gate.CONSUMABLE_SHARES))
    if option.enabled and gates.enabled(Gate.DYNAMIC_MIG):
        raise ConfigError(
            "--consumable-shares",
            str(option),
            "'disabled' while DynamicMIG is on (nvdra would create a shared MIG device once per claim; "
            "use static MIG devices or turn DynamicMIG off)",
            reason="cannot be combined with DynamicMIG:",
        )
    return option


@attrs.frozen
class ConsumableSharesView:
    """Publishes GPUs and MIG devices with ``allowMultipleAllocations`` and capacity request policies."""

    option: SharesOption

    def allocatable(self) -> Mapping[str, AllocatableDevice]:
        """No extra devices: the shared devices are the inventory's own."""
        return {}

    def decorate(self, resources: DriverResources, held: Collection[str]) -> DriverResources:
        """Every slice's GPU and MIG devices made shareable."""
        pools = {
            name: Pool(
                slices=tuple(
                    attrs.evolve(s, devices=tuple(apply_consumable_shares(s.devices, self.option)))
                    for s in pool.slices
                ),
                generation=pool.generation,
            )
            for name, pool in resources.pools.items()
        }
        return DriverResources(pools=pools)

    def refuse(self, name: str, held: Collection[str]) -> str | None:
        """Never: whether a share may join its holders is the driver's check (it sees the shareIDs)."""
        return None


def mps_share_refusal(groups: Sequence[ConfigGroup], results: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a claim's MPS config cannot apply to its shared devices (upstream's rule), or None.

    One MPS control daemon per claim cannot serve a GPU other claims share; per-share MPS limits from
    the consumed capacity are not implemented yet.
    """
    shared = {str(r.get("device")) for r in results if r.get("shareID")}
    for group in groups:
        sharing = getattr(group.config, "sharing", None)
        if sharing is None or sharing.strategy is not SharingStrategy.MPS:
            continue
        hit = sorted(d.device for d in group.devices if d.device in shared)
        if hit:
            return (
                f"MPS sharing is not supported when consumable shares is enabled (shared devices: "
                f"{', '.join(hit)}); use TimeSlicing, or no sharing config, with --consumable-shares"
            )
    return None


def keep_shared(records: Sequence[EffectRecord], shared_gpus: Collection[str]) -> list[EffectRecord]:
    """The records to undo when a share is unprepared: time slices of GPUs that other claims still
    share are left as they are (the GPU is theirs too); everything else is undone."""
    out: list[EffectRecord] = []
    for record in records:
        if isinstance(record, TimeSlice) and shared_gpus:
            gpus = tuple(g for g in record.gpus if g not in shared_gpus)
            if gpus:
                out.append(attrs.evolve(record, gpus=gpus))
            continue
        out.append(record)
    return out


def time_slice_conflict(
    planned: Sequence[EffectRecord], holders: Mapping[str, Sequence[EffectRecord]]
) -> str | None:
    """Why a share's time slice disagrees with one a claim sharing the GPU applied, or None
    (a shared GPU has one time slice; upstream refuses conflicting configurations too)."""
    for record in planned:
        if not isinstance(record, TimeSlice):
            continue
        for holder, applied in holders.items():
            for other in applied:
                if isinstance(other, TimeSlice) and other.interval != record.interval:
                    common = sorted(set(other.gpus) & set(record.gpus))
                    if common:
                        return (
                            f"time slice {record.interval} on {', '.join(common)} conflicts with claim "
                            f"{holder} sharing it with time slice {other.interval}"
                        )
    return None


def shares_views(text: str, gates: FeatureGates) -> list[ConsumableSharesView]:
    """The view for ``--consumable-shares`` (none when disabled).

    Raises:
        ConfigError: as :func:`shares_option`.
    """
    option = shares_option(text, gates)
    return [ConsumableSharesView(option)] if option.enabled else []
