"""The consumable-shares device view (``ConsumableShares`` + ``--consumable-shares``).

Publishing: every GPU and MIG device is made shareable (:func:`nvdra.core.shares.apply_consumable_shares`).
Preparing: a claim whose allocation result carries a ``shareID`` may be prepared on a device that
other claims hold through shares of their own (:meth:`nvdra.plugins.gpu.driver.GpuDriver` checks
holders); a device held without a share stays exclusive.
"""

from __future__ import annotations

__all__ = [
    "ConsumableSharesView",
    "keep_shared",
    "shares_option",
    "shares_views",
    "time_slice_conflict",
]

from collections.abc import Collection, Mapping, Sequence

import attrs

from nvdra.core.effects import EffectRecord
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.shares import SharesOption, apply_consumable_shares, parse_consumable_shares
from nvdra.core.sharing import MpsPlan
from nvdra.core.sharing.timeslicing import TimeSlice
from nvdra.kubeletplugin.types import DriverResources
from nvdra.plugins.gpu.devices import AllocatableDevice


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
        return resources.with_devices(lambda devices: apply_consumable_shares(devices, self.option))

    def refuse(self, name: str, held: Collection[str]) -> str | None:
        """Never: whether a share may join its holders is the driver's check (it sees the shareIDs)."""
        return None


def keep_shared(records: Sequence[EffectRecord], shared_gpus: Collection[str]) -> list[EffectRecord]:
    """The records to undo when a share is unprepared: time slices of GPUs that other claims still
    share are left as they are (the GPU is theirs too), and so is a shared MPS daemon of such GPUs;
    everything else is undone."""
    out: list[EffectRecord] = []
    for record in records:
        if isinstance(record, MpsPlan) and record.shared and set(record.uuids) & set(shared_gpus):
            continue
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
