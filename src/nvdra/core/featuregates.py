"""Feature gates: the registry of known gates, ``--feature-gates`` parsing, and upstream's rules.

A :class:`FeatureGates` value is immutable and passed explicitly (there is no process-global gate
set, unlike upstream's singleton). It knows, for every gate, whether it is on and which source decided:
the built-in default, the ``--feature-gates`` flag, ``AllAlpha``/``AllBeta``, an environment variable,
or a later override (a per-node label, say) recorded through :meth:`FeatureGates.with_override`.

Invariants owned here:
- every known gate has exactly one state; unknown names are errors that list the known gates;
- values parse like Go's ``strconv.ParseBool`` (``1 t T TRUE true True 0 f F FALSE false False``);
- upstream's rules hold for every value this module hands out: ComputeDomainCliques requires
  IMEXDaemonsWithDNSNames; DynamicMIG excludes PassthroughSupport, NVMLDeviceHealthCheck and
  MPSSupport; PassthroughSupport excludes NVMLDeviceHealthCheck; DeviceMetadata requires
  PassthroughSupport;
- ``FabricManagerPartitioning`` (upstream's later name) is an alias of ``FabricTopologySupport``;
  env ``FABRIC_TOPOLOGY_SUPPORT`` is a second spelling of that gate: if both the flag and the env set
  it, they must agree (a silent winner would hide a misconfigured chart).
"""

from __future__ import annotations

__all__ = [
    "FABRIC_TOPOLOGY_ENV",
    "KNOWN_GATES",
    "FeatureGates",
    "Gate",
    "GateSource",
    "GateSpec",
    "GateState",
    "Maturity",
    "parse_bool",
    "parse_feature_gates",
]

import enum
from collections.abc import Iterator, Mapping
from typing import Literal

import attrs

from nvdra.core.errors import FeatureGateError

FABRIC_TOPOLOGY_ENV = "FABRIC_TOPOLOGY_SUPPORT"
"""Environment variable that also switches ``FabricTopologySupport`` (the user's README names it)."""


class Gate(enum.StrEnum):
    """Names of the gates nvdra knows (they are plain strings: ``gates.enabled("MPSSupport")`` works)."""

    TIME_SLICING_SETTINGS = "TimeSlicingSettings"
    MPS_SUPPORT = "MPSSupport"
    IMEX_DAEMONS_WITH_DNS_NAMES = "IMEXDaemonsWithDNSNames"
    PASSTHROUGH_SUPPORT = "PassthroughSupport"
    DYNAMIC_MIG = "DynamicMIG"
    NVML_DEVICE_HEALTH_CHECK = "NVMLDeviceHealthCheck"
    COMPUTE_DOMAIN_CLIQUES = "ComputeDomainCliques"
    CRASH_ON_NVLINK_FABRIC_ERRORS = "CrashOnNVLinkFabricErrors"
    DEVICE_METADATA = "DeviceMetadata"
    FABRIC_TOPOLOGY_SUPPORT = "FabricTopologySupport"
    HOST_MANAGED_IMEX_DAEMON = "HostManagedIMEXDaemon"
    DRA_LIST_TYPE_ATTRIBUTES = "DRAListTypeAttributes"
    CONSUMABLE_SHARES = "ConsumableShares"
    DEVICE_BINDING_CONDITIONS = "DeviceBindingConditions"
    ALL_ALPHA = "AllAlpha"
    ALL_BETA = "AllBeta"
    CONTEXTUAL_LOGGING = "ContextualLogging"
    LOGGING_ALPHA_OPTIONS = "LoggingAlphaOptions"
    LOGGING_BETA_OPTIONS = "LoggingBetaOptions"


Maturity = Literal["Alpha", "Beta"]
"""A gate's pre-release stage, as Kubernetes component-base names it (no known gate is GA)."""


class GateSource(enum.StrEnum):
    """What decided a gate's value."""

    DEFAULT = "default"
    FLAG = "flag"
    ALL_ALPHA = "AllAlpha"
    ALL_BETA = "AllBeta"
    ENV = "env"
    OVERRIDE = "override"


@attrs.frozen(kw_only=True)
class GateSpec:
    """A known gate: its default and maturity."""

    name: str
    default: bool
    maturity: Maturity


KNOWN_GATES: tuple[GateSpec, ...] = (
    GateSpec(name=Gate.TIME_SLICING_SETTINGS, default=False, maturity="Alpha"),
    GateSpec(name=Gate.MPS_SUPPORT, default=False, maturity="Alpha"),
    GateSpec(name=Gate.IMEX_DAEMONS_WITH_DNS_NAMES, default=True, maturity="Beta"),
    GateSpec(name=Gate.PASSTHROUGH_SUPPORT, default=False, maturity="Alpha"),
    GateSpec(name=Gate.DYNAMIC_MIG, default=False, maturity="Alpha"),
    GateSpec(name=Gate.NVML_DEVICE_HEALTH_CHECK, default=False, maturity="Alpha"),
    GateSpec(name=Gate.COMPUTE_DOMAIN_CLIQUES, default=True, maturity="Beta"),
    GateSpec(name=Gate.CRASH_ON_NVLINK_FABRIC_ERRORS, default=True, maturity="Beta"),
    GateSpec(name=Gate.DEVICE_METADATA, default=False, maturity="Alpha"),
    GateSpec(name=Gate.FABRIC_TOPOLOGY_SUPPORT, default=False, maturity="Alpha"),
    # upstream's newest: the IMEX mode ``hostManaged`` unlocked; list-valued attributes (KEP-6072,
    # needs the cluster's gate of the same name); ``--consumable-shares`` unlocked (KEP-5075)
    GateSpec(name=Gate.HOST_MANAGED_IMEX_DAEMON, default=False, maturity="Alpha"),
    GateSpec(name=Gate.DRA_LIST_TYPE_ATTRIBUTES, default=False, maturity="Alpha"),
    GateSpec(name=Gate.CONSUMABLE_SHARES, default=False, maturity="Alpha"),
    # nvdra's own (upstream has none): VFIO devices (PassthroughSupport) and SharedNVSwitch partition
    # devices (--publish-fabric-partitions) carry KEP-5007 binding conditions
    GateSpec(name=Gate.DEVICE_BINDING_CONDITIONS, default=False, maturity="Alpha"),
    # component-base gates that upstream's versioned registry also accepts
    GateSpec(name=Gate.ALL_ALPHA, default=False, maturity="Alpha"),
    GateSpec(name=Gate.ALL_BETA, default=False, maturity="Beta"),
    # upstream forces ContextualLogging on before parsing flags: its effective default is true
    GateSpec(name=Gate.CONTEXTUAL_LOGGING, default=True, maturity="Beta"),
    GateSpec(name=Gate.LOGGING_ALPHA_OPTIONS, default=False, maturity="Alpha"),
    GateSpec(name=Gate.LOGGING_BETA_OPTIONS, default=True, maturity="Beta"),
)

_SPECS: dict[str, GateSpec] = {spec.name: spec for spec in KNOWN_GATES}
_ALIASES: dict[str, str] = {"FabricManagerPartitioning": Gate.FABRIC_TOPOLOGY_SUPPORT}

_REQUIRES: tuple[tuple[str, str], ...] = (
    (Gate.COMPUTE_DOMAIN_CLIQUES, Gate.IMEX_DAEMONS_WITH_DNS_NAMES),
    (Gate.DEVICE_METADATA, Gate.PASSTHROUGH_SUPPORT),
)
_EXCLUDES: tuple[tuple[str, str], ...] = (
    (Gate.DYNAMIC_MIG, Gate.PASSTHROUGH_SUPPORT),
    (Gate.DYNAMIC_MIG, Gate.NVML_DEVICE_HEALTH_CHECK),
    (Gate.DYNAMIC_MIG, Gate.MPS_SUPPORT),
    (Gate.PASSTHROUGH_SUPPORT, Gate.NVML_DEVICE_HEALTH_CHECK),
)

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Parse a boolean exactly like Go's ``strconv.ParseBool``.

    Raises:
        ValueError: ``text`` is none of the accepted spellings.
    """
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(
        f"invalid boolean {text!r}; allowed: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"
    )


@attrs.frozen(kw_only=True)
class GateState:
    """One gate's effective value and the source that set it (``detail`` names the flag/env/label)."""

    spec: GateSpec
    enabled: bool
    source: GateSource
    detail: str = ""

    @property
    def name(self) -> str:
        """The gate's name."""
        return self.spec.name


def _known_list() -> str:
    names = sorted([*_SPECS, *_ALIASES])
    return ", ".join(names)


def _canonical(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in _SPECS:
        raise FeatureGateError(f"unrecognized feature gate {name!r}; known gates: {_known_list()}")
    return name


@attrs.frozen(cache_hash=True)  # a cache key (the resolved default configs): hashed once
class FeatureGates:
    """The effective value of every known gate. Build with :func:`parse_feature_gates` or :meth:`defaults`.

    The states are kept sorted by gate name; the value is immutable and safe to share across threads.
    """

    states: tuple[GateState, ...]

    @classmethod
    def defaults(cls) -> FeatureGates:
        """Every gate at its built-in default."""
        return cls(
            tuple(
                GateState(spec=spec, enabled=spec.default, source=GateSource.DEFAULT)
                for spec in sorted(KNOWN_GATES, key=lambda s: s.name)
            )
        )

    def state(self, name: str) -> GateState:
        """The state of gate ``name`` (aliases accepted).

        Raises:
            FeatureGateError: the gate is unknown (the message lists the known gates).
        """
        name = _canonical(name)
        for st in self.states:
            if st.spec.name == name:
                return st
        raise FeatureGateError(
            f"feature gate {name!r} has no state"
        )  # pragma: no cover - states are complete

    def enabled(self, name: str) -> bool:
        """Whether gate ``name`` is on. Raises :class:`FeatureGateError` for an unknown gate."""
        return self.state(name).enabled

    def __iter__(self) -> Iterator[GateState]:
        return iter(self.states)

    def as_map(self) -> dict[str, bool]:
        """Every gate's value, for templates and for passing the effective set on to child processes."""
        return {st.name: st.enabled for st in self.states}

    def to_spec(self) -> str:
        """A ``--feature-gates`` string reproducing the gates that differ from their defaults."""
        return ",".join(
            f"{st.name}={'true' if st.enabled else 'false'}"
            for st in self.states
            if st.enabled != st.spec.default
        )

    def describe(self) -> dict[str, dict[str, object]]:
        """Per gate: value, source, maturity and the source's detail, for the startup log."""
        return {
            st.name: {
                "enabled": st.enabled,
                "source": str(st.source),
                "detail": st.detail,
                "maturity": st.spec.maturity,
                "default": st.spec.default,
            }
            for st in self.states
        }

    def with_override(self, name: str, enabled: bool, *, detail: str) -> FeatureGates:
        """A copy with one gate overridden (e.g. by a label on this node) and its source recorded.

        Args:
            name: the gate (aliases accepted).
            enabled: its new value.
            detail: where the override came from, for :meth:`describe` (e.g. the label key).

        Raises:
            FeatureGateError: the gate is unknown, or the result violates a gate rule.
        """
        name = _canonical(name)
        states = tuple(
            GateState(spec=st.spec, enabled=enabled, source=GateSource.OVERRIDE, detail=detail)
            if st.name == name
            else st
            for st in self.states
        )
        gates = FeatureGates(states)
        gates.check_rules()
        return gates

    def check_rules(self) -> None:
        """Check upstream's dependency and exclusion rules.

        Raises:
            FeatureGateError: one message listing every violated rule and the gates involved.
        """
        violations = [
            f"{gate} requires {needed} to be enabled"
            for gate, needed in _REQUIRES
            if self.enabled(gate) and not self.enabled(needed)
        ]
        violations += [
            f"{a} and {b} cannot be enabled together"
            for a, b in _EXCLUDES
            if self.enabled(a) and self.enabled(b)
        ]
        if violations:
            raise FeatureGateError("invalid feature gate combination: " + "; ".join(violations))


def _parse_spec(spec: str) -> dict[str, tuple[bool, str]]:
    """``Name=bool`` pairs → canonical name → (value, spelling used). Later pairs win, as in Go."""
    out: dict[str, tuple[bool, str]] = {}
    for raw in spec.split(","):
        if not raw.strip():
            continue
        key, sep, value = raw.partition("=")
        if not sep:
            raise FeatureGateError(f"malformed feature gate pair {raw.strip()!r}; expected Name=true|false")
        key, value = key.strip(), value.strip()
        name = _canonical(key)
        try:
            enabled = parse_bool(value)
        except ValueError as exc:
            raise FeatureGateError(f"feature gate {key}: {exc}") from exc
        previous = out.get(name)
        if previous is not None and previous[1] != key and previous[0] != enabled:
            raise FeatureGateError(
                f"feature gates {previous[1]} and {key} name the same gate but disagree "
                f"({previous[1]}={str(previous[0]).lower()}, {key}={str(enabled).lower()})"
            )
        out[name] = (enabled, key)
    return out


def _env_value(env: Mapping[str, str] | None) -> bool | None:
    if env is None:
        return None
    raw = env.get(FABRIC_TOPOLOGY_ENV)
    if raw is None or not raw.strip():
        return None
    try:
        return parse_bool(raw.strip())
    except ValueError as exc:
        raise FeatureGateError(f"environment variable {FABRIC_TOPOLOGY_ENV}: {exc}") from exc


def _resolve(spec: GateSpec, explicit: dict[str, tuple[bool, str]], env_fabric: bool | None) -> GateState:
    name = spec.name
    if name in explicit:
        value, key = explicit[name]
        if name == Gate.FABRIC_TOPOLOGY_SUPPORT and env_fabric is not None and env_fabric != value:
            raise FeatureGateError(
                f"--feature-gates sets {key}={str(value).lower()} but {FABRIC_TOPOLOGY_ENV}="
                f"{str(env_fabric).lower()}; set one of them, or make them agree"
            )
        return GateState(spec=spec, enabled=value, source=GateSource.FLAG, detail=f"--feature-gates {key}")
    if name == Gate.FABRIC_TOPOLOGY_SUPPORT and env_fabric is not None:
        return GateState(spec=spec, enabled=env_fabric, source=GateSource.ENV, detail=FABRIC_TOPOLOGY_ENV)
    # AllAlpha (AllBeta) is itself alpha (beta): it is on here only when the flag set it, decided above
    for meta, maturity, source in (
        (Gate.ALL_ALPHA, "Alpha", GateSource.ALL_ALPHA),
        (Gate.ALL_BETA, "Beta", GateSource.ALL_BETA),
    ):
        if spec.maturity == maturity and explicit.get(meta, (False, ""))[0]:
            return GateState(spec=spec, enabled=True, source=source, detail=f"--feature-gates {meta}")
    return GateState(spec=spec, enabled=spec.default, source=GateSource.DEFAULT)


def parse_feature_gates(spec: str, *, env: Mapping[str, str] | None = None) -> FeatureGates:
    """Parse a ``--feature-gates`` value (``Name=true,Other=false``) into validated gates.

    Whitespace around names, values and commas is ignored; names are case-sensitive. ``AllAlpha=true``
    (``AllBeta=true``) turns on every alpha (beta) gate the flag does not set explicitly.

    Args:
        spec: the flag value; empty means all defaults.
        env: the process environment to consult for ``FABRIC_TOPOLOGY_SUPPORT``; ``None`` consults
            nothing (keeps this function pure; the entrypoint passes ``os.environ``).

    Returns:
        The effective gates, every one with the source that decided it.

    Raises:
        FeatureGateError: malformed pair, unknown gate, non-boolean value, flag/env disagreement, or
            a violated dependency/exclusion rule.
    """
    explicit = _parse_spec(spec)
    env_fabric = _env_value(env)
    states = tuple(_resolve(s, explicit, env_fabric) for s in sorted(KNOWN_GATES, key=lambda s: s.name))
    gates = FeatureGates(states)
    gates.check_rules()
    return gates
