"""Config resolution: which opaque config applies to each allocated device of a claim (upstream §4.2).

Input is the claim's ``status.allocation.devices.config`` list (the scheduler copied class and claim
configs there, in precedence order) and the allocation results of *this* driver; output is one
:class:`ConfigGroup` per config object in use, each holding the decoded, normalized and validated
config and the devices it applies to.

Rules (invariants owned here):
- entries without ``opaque`` are an error ("only opaque parameters are supported"); entries of other
  drivers are ignored; every entry of this driver is strictly decoded, and all decoding problems of
  all entries are reported together;
- precedence, lowest first: built-in defaults < ``FromClass`` entries < ``FromClaim`` entries. Within
  one source, a config naming the device's request beats one naming only the parent request (a result
  of subrequest ``req/sub`` matches configs scoped to ``req/sub`` and to ``req``), which beats an
  unscoped one; among equals the later entry wins. (Upstream scans strictly by list position, so an
  unscoped claim config listed after a request-scoped one would win there; nvdra lets the more
  specific one win, as the user evidently meant.)
- kinds fit device types: GpuConfig→gpu, MigDeviceConfig→mig, VfioDeviceConfig→vfio,
  ComputeDomainChannelConfig→channel, ComputeDomainDaemonConfig→daemon. An unscoped config that does
  not fit is skipped; a request-scoped one that does not fit but would win fails the claim;
- defaults: GpuConfig, MigDeviceConfig, VfioDeviceConfig (only with PassthroughSupport), and the two
  ComputeDomain kinds with an empty ``domainID`` (which fail validation if chosen, as upstream);
- only configs actually chosen are normalized and validated (a class may carry configs for device
  types this claim did not get); groups come in the order of their first device in ``results``.
"""

from __future__ import annotations

__all__ = [
    "AllocatedDevice",
    "ConfigGroup",
    "ConfigSource",
    "DeviceType",
    "default_config",
    "resolve_configs",
]

import enum
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from nvdra.core.config._base import raise_problems
from nvdra.core.config.api import Config, decode_config
from nvdra.core.config.computedomain import ComputeDomainChannelConfig, ComputeDomainDaemonConfig
from nvdra.core.config.gpu import GpuConfig
from nvdra.core.config.mig import MigDeviceConfig
from nvdra.core.config.vfio import VfioDeviceConfig
from nvdra.core.errors import ClaimError, ConfigError
from nvdra.core.featuregates import FeatureGates, Gate

_CONFIG_PATH = "$.status.allocation.devices.config"


class DeviceType(enum.StrEnum):
    """The kind of device an allocation result names (decides which config kinds fit)."""

    GPU = "gpu"
    MIG = "mig"
    VFIO = "vfio"
    CHANNEL = "channel"
    DAEMON = "daemon"


class ConfigSource(enum.StrEnum):
    """Where a config came from; the order of the members is the precedence, lowest first."""

    DEFAULT = "Default"
    FROM_CLASS = "FromClass"
    FROM_CLAIM = "FromClaim"


_FITS: dict[type, DeviceType] = {
    GpuConfig: DeviceType.GPU,
    MigDeviceConfig: DeviceType.MIG,
    VfioDeviceConfig: DeviceType.VFIO,
    ComputeDomainChannelConfig: DeviceType.CHANNEL,
    ComputeDomainDaemonConfig: DeviceType.DAEMON,
}
_PRECEDENCE = {source: rank for rank, source in enumerate(ConfigSource)}


@attrs.frozen(kw_only=True)
class AllocatedDevice:
    """One allocation result of this driver: the request (``req`` or ``req/sub``) and the device."""

    request: str
    device: str
    device_type: DeviceType


@attrs.frozen(kw_only=True)
class ConfigGroup:
    """Devices that share one config object: one sharing setup, one MPS daemon, one set of edits.

    ``index`` is the config's position in ``status.allocation.devices.config`` (None for a default).
    """

    config: Config
    devices: tuple[AllocatedDevice, ...]
    source: ConfigSource
    index: int | None = None


@attrs.frozen(kw_only=True)
class _Entry:
    index: int
    source: ConfigSource
    requests: tuple[str, ...]
    config: Config

    @property
    def label(self) -> str:
        return f"{_CONFIG_PATH}[{self.index}] ({self.source})"


def default_config(device_type: DeviceType, gates: FeatureGates) -> Config | None:
    """The built-in default config for a device type (None: vfio without PassthroughSupport)."""
    if device_type is DeviceType.GPU:
        return GpuConfig()
    if device_type is DeviceType.MIG:
        return MigDeviceConfig()
    if device_type is DeviceType.VFIO:
        return VfioDeviceConfig() if gates.enabled(Gate.PASSTHROUGH_SUPPORT) else None
    if device_type is DeviceType.CHANNEL:
        return ComputeDomainChannelConfig(domain_id="")
    return ComputeDomainDaemonConfig(domain_id="")


def _entry_requests(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise ClaimError(f"{where}: requests must be a list of request names, got {raw!r}")
    return tuple(raw)


def _parse_entry(index: int, raw: Any, driver: str, gates: FeatureGates) -> _Entry | None:
    where = f"{_CONFIG_PATH}[{index}]"
    if not isinstance(raw, Mapping):
        raise ClaimError(f"{where}: expected an object, got {raw!r}")
    try:
        source = ConfigSource(str(raw.get("source")))
    except ValueError:
        raise ClaimError(
            f"{where}.source: expected FromClass or FromClaim, got {raw.get('source')!r}"
        ) from None
    if source is ConfigSource.DEFAULT:
        raise ClaimError(f"{where}.source: expected FromClass or FromClaim, got {source!r}")
    opaque = raw.get("opaque")
    if not isinstance(opaque, Mapping):
        raise ClaimError(f"{where} ({source}): only opaque parameters are supported")
    if opaque.get("driver") != driver:
        return None
    requests = _entry_requests(raw.get("requests"), where)
    parameters = opaque.get("parameters")
    if not isinstance(parameters, Mapping):
        raise ConfigError(
            f"{where}.opaque.parameters",
            parameters,
            "a JSON object with apiVersion and kind",
            reason="expected an object, got",
        )
    config = decode_config(parameters, gates=gates, strict=True, path=f"{where}.opaque.parameters")
    return _Entry(index=index, source=source, requests=requests, config=config)


def _parse_entries(configs: Sequence[Any], driver: str, gates: FeatureGates) -> list[_Entry]:
    entries: list[_Entry] = []
    problems: list[ConfigError] = []
    for index, raw in enumerate(configs):
        try:
            entry = _parse_entry(index, raw, driver, gates)
        except ConfigError as err:
            problems.append(err)
            continue
        if entry is not None:
            entries.append(entry)
    raise_problems(problems)
    return entries


def _specificity(requests: tuple[str, ...], request: str) -> int | None:
    """How closely a config's ``requests`` name ``request``.

    2: names it; 1: names its parent (``req`` for ``req/sub``); 0: unscoped; None: names other requests.
    """
    if not requests:
        return 0
    if request in requests:
        return 2
    parent, sep, _ = request.partition("/")
    if sep and parent in requests:
        return 1
    return None


def _choose(entries: Sequence[_Entry], device: AllocatedDevice) -> _Entry | None:
    best: tuple[tuple[int, int, int], _Entry] | None = None
    for entry in entries:
        level = _specificity(entry.requests, device.request)
        if level is None or (level == 0 and _FITS[type(entry.config)] is not device.device_type):
            continue
        rank = (_PRECEDENCE[entry.source], level, entry.index)
        if best is None or rank > best[0]:
            best = (rank, entry)
    if best is None:
        return None
    entry = best[1]
    if _FITS[type(entry.config)] is not device.device_type:
        raise ClaimError(
            f"cannot apply {entry.config.KIND} to device {device.device} of request {device.request} "
            f"(device type {device.device_type}; {entry.config.KIND} applies to "
            f"{_FITS[type(entry.config)]} devices): {entry.label} is scoped to "
            f"requests {list(entry.requests)}"
        )
    return entry


def resolve_configs(
    configs: Sequence[Mapping[str, Any]],
    results: Sequence[AllocatedDevice],
    *,
    driver: str,
    gates: FeatureGates,
) -> tuple[ConfigGroup, ...]:
    """Resolve the effective config of every allocated device and group devices by config.

    Args:
        configs: the claim's ``status.allocation.devices.config`` list, as the API server returns it.
        results: this driver's allocation results, with their device types.
        driver: this driver's name (``gpu.nvidia.com``); other drivers' entries are ignored.
        gates: the effective feature gates (defaults, normalization and validation depend on them).

    Returns:
        One group per config in use, in the order of each group's first device in ``results``.

    Raises:
        ClaimError: a malformed or non-opaque entry, a request-scoped config of the wrong kind, or a
            device with no applicable config.
        ConfigError: decoding or validation problems (every one found, with the entry's JSONPath).
    """
    entries = _parse_entries(configs, driver, gates)
    chosen: dict[object, tuple[Config, ConfigSource, int | None, list[AllocatedDevice]]] = {}
    for device in results:
        entry = _choose(entries, device)
        if entry is not None:
            key: object = entry.index
            slot = chosen.setdefault(key, (entry.config, entry.source, entry.index, []))
        else:
            default = _normalized_default(device.device_type, gates)
            if default is None:
                raise ClaimError(
                    f"no config applies to device {device.device} of request {device.request} "
                    f"(device type {device.device_type}) and it has no default; "
                    f"is {Gate.PASSTHROUGH_SUPPORT} on?"
                )
            slot = chosen.setdefault(
                ("default", device.device_type), (default, ConfigSource.DEFAULT, None, [])
            )
        slot[3].append(device)
    return _finish(chosen.values(), gates)


@functools.lru_cache(maxsize=32)
def _normalized_default(device_type: DeviceType, gates: FeatureGates) -> Config | None:
    """A device type's default config, normalized and validated, once per type and gates (most claims
    carry no config: their devices all get these)."""
    default = default_config(device_type, gates)
    if default is None:
        return None
    normalized = default.normalize(gates)
    normalized.validate(gates, f"<default {default.KIND}>")
    return normalized


def _finish(
    slots: Iterable[tuple[Config, ConfigSource, int | None, list[AllocatedDevice]]], gates: FeatureGates
) -> tuple[ConfigGroup, ...]:
    groups: list[ConfigGroup] = []
    problems: list[ConfigError] = []
    for config, source, index, devices in slots:
        if source is ConfigSource.DEFAULT:  # normalized and validated already
            groups.append(ConfigGroup(config=config, devices=tuple(devices), source=source, index=index))
            continue
        normalized = config.normalize(gates)
        # a default has no place in the claim: its path names it instead
        root = (
            f"{_CONFIG_PATH}[{index}].opaque.parameters" if index is not None else f"<default {config.KIND}>"
        )
        try:
            normalized.validate(gates, root)
        except ConfigError as err:
            problems.append(err)
            continue
        groups.append(ConfigGroup(config=normalized, devices=tuple(devices), source=source, index=index))
    raise_problems(problems)
    return tuple(groups)
