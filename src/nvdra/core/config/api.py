"""Decoding and encoding whole opaque config documents (``apiVersion`` + ``kind`` + fields).

Invariants owned here:
- accepted ``apiVersion``: ``resource.nvidia.com/v1beta1`` (upstream) and ``nvidia.com/v1beta1`` (the
  group the user's README example uses); encoding always writes the upstream one;
- the ``kind`` picks the model; strict decoding rejects unknown fields and wrong types, and reports
  every problem of the document in one :class:`~nvdra.core.errors.ConfigError`;
- strict decoding also rejects GpuConfig's (and VfioDeviceConfig's) fabric fields while
  FabricTopologySupport is off (the rule their ``validate`` applies), so the user learns it together
  with any typo;
  non-strict decoding (re-reading stored configs) ignores gates and drops unknown fields, so that a
  configuration written by another version or under other gates can still be read back;
- ``decode_config(encode_config(c)) == c`` for every model value.
"""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "API_VERSIONS",
    "KINDS",
    "Config",
    "decode_config",
    "encode_config",
    "load_config",
]

from collections.abc import Mapping
from typing import Any

from nvdra.core.config._base import child_path, raise_problems
from nvdra.core.config._serde import structure, unstructure
from nvdra.core.config.computedomain import ComputeDomainChannelConfig, ComputeDomainDaemonConfig
from nvdra.core.config.gpu import FABRIC_FIELDS, GpuConfig, fabric_gate_problem
from nvdra.core.config.mig import MigDeviceConfig
from nvdra.core.config.vfio import VFIO_FABRIC_FIELDS, VfioDeviceConfig
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate

API_VERSION = "resource.nvidia.com/v1beta1"
"""The apiVersion nvdra writes (upstream's group and version)."""
API_VERSIONS = (API_VERSION, "nvidia.com/v1beta1")
"""apiVersions accepted when decoding."""

Config = (
    GpuConfig | MigDeviceConfig | VfioDeviceConfig | ComputeDomainChannelConfig | ComputeDomainDaemonConfig
)
"""Any opaque config model."""

KINDS: dict[str, type[Config]] = {
    cls.KIND: cls
    for cls in (
        GpuConfig,
        MigDeviceConfig,
        VfioDeviceConfig,
        ComputeDomainChannelConfig,
        ComputeDomainDaemonConfig,
    )
}
"""``kind`` → model class."""

_TYPE_META = ("apiVersion", "kind")


def _type_meta_problems(obj: Mapping[str, Any], path: str) -> tuple[type[Config] | None, list[ConfigError]]:
    problems: list[ConfigError] = []
    api_version = obj.get("apiVersion")
    if api_version not in API_VERSIONS:
        problems.append(
            ConfigError(
                child_path(path, "apiVersion"),
                api_version,
                " or ".join(API_VERSIONS),
                reason="unsupported apiVersion" if api_version is not None else "missing apiVersion, got",
            )
        )
    kind = obj.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        problems.append(
            ConfigError(
                child_path(path, "kind"),
                kind,
                ", ".join(KINDS),
                reason="unknown kind" if kind is not None else "missing kind, got",
            )
        )
    return cls, problems


def decode_config(
    obj: Mapping[str, Any], *, gates: FeatureGates, strict: bool = True, path: str = "$"
) -> Config:
    """Decode one opaque config document (not normalized, not validated).

    Args:
        obj: the JSON object (``opaque.parameters`` of a device config).
        gates: the effective feature gates (strict mode checks the fabric gate).
        strict: reject unknown fields (user input); ``False`` drops them (stored configs).
        path: JSONPath of ``obj`` within its container, prefixed to every error path.

    Returns:
        The model named by ``kind``.

    Raises:
        ConfigError: every problem of the document, together.
    """
    if not isinstance(obj, Mapping):
        raise ConfigError(
            path, obj, "a JSON object with apiVersion and kind", reason="expected an object, got"
        )
    cls, problems = _type_meta_problems(obj, path)
    if cls is None:
        raise_problems(problems)
        raise AssertionError("unreachable: a missing kind is a problem")  # pragma: no cover
    body = {k: v for k, v in obj.items() if k not in _TYPE_META}
    gated = {GpuConfig: FABRIC_FIELDS, VfioDeviceConfig: VFIO_FABRIC_FIELDS}.get(cls, ())
    if gated and not gates.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT) and strict:
        problems += [fabric_gate_problem(path, name) for name in gated if name in body]
    try:
        config = structure(body, cls, strict=strict, path=path)
    except ConfigError as err:
        problems.append(err)
    raise_problems(problems)
    return config


def encode_config(config: Config) -> dict[str, Any]:
    """Encode a config model as an opaque-parameters JSON object (``apiVersion`` and ``kind`` first)."""
    return {"apiVersion": API_VERSION, "kind": config.KIND, **unstructure(config)}


def load_config(obj: Mapping[str, Any], *, gates: FeatureGates, path: str = "$") -> Config:
    """Strictly decode, normalize and validate one document: what a webhook or a prepare needs.

    Raises:
        ConfigError: every decoding problem, or else every validation problem, together.
    """
    config = decode_config(obj, gates=gates, strict=True, path=path).normalize(gates)
    config.validate(gates, path)
    return config
