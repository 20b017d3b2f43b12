"""Feature gates: parsing, defaults, sources, aliases, env switch, and upstream's rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvdra.core.errors import FeatureGateError
from nvdra.core.featuregates import (
    KNOWN_GATES,
    FeatureGates,
    Gate,
    GateSource,
    parse_bool,
    parse_feature_gates,
)

UPSTREAM_DEFAULTS = {
    "TimeSlicingSettings": False,
    "MPSSupport": False,
    "IMEXDaemonsWithDNSNames": True,
    "PassthroughSupport": False,
    "DynamicMIG": False,
    "NVMLDeviceHealthCheck": False,
    "ComputeDomainCliques": True,
    "CrashOnNVLinkFabricErrors": True,
    "DeviceMetadata": False,
    "FabricTopologySupport": False,
    "HostManagedIMEXDaemon": False,
    "DRAListTypeAttributes": False,
    "ConsumableShares": False,
    "DeviceBindingConditions": False,
    "AllAlpha": False,
    "AllBeta": False,
    "ContextualLogging": True,
    "LoggingAlphaOptions": False,
    "LoggingBetaOptions": True,
}


def test_defaults_match_upstream() -> None:
    """An empty flag yields every gate at upstream's default, all sourced from the default."""
    gates = parse_feature_gates("")
    assert gates.as_map() == UPSTREAM_DEFAULTS
    assert {st.source for st in gates} == {GateSource.DEFAULT}
    assert gates == FeatureGates.defaults()


def test_parse_whitespace_and_sources() -> None:
    """Whitespace around names, values and commas is ignored; flag-set gates record the flag."""
    gates = parse_feature_gates("  TimeSlicingSettings = true ,MPSSupport=1,, ")
    assert gates.enabled(Gate.TIME_SLICING_SETTINGS)
    assert gates.enabled("MPSSupport")
    assert gates.state("MPSSupport").source is GateSource.FLAG
    assert gates.state("DynamicMIG").source is GateSource.DEFAULT
    assert gates.describe()["MPSSupport"]["source"] == "flag"


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_bool_true(text: str) -> None:
    """Go's strconv.ParseBool true spellings are accepted."""
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_bool_false(text: str) -> None:
    """Go's strconv.ParseBool false spellings are accepted."""
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["yes", "on", "tRue", "", "2"])
def test_parse_bool_rejects(text: str) -> None:
    """Anything else is not a boolean."""
    with pytest.raises(ValueError, match="invalid boolean"):
        parse_bool(text)


def test_unknown_gate_lists_known() -> None:
    """An unknown gate is an error that lists the known gates; names are case-sensitive."""
    with pytest.raises(FeatureGateError, match="timeslicingsettings") as info:
        parse_feature_gates("timeslicingsettings=true")
    assert "TimeSlicingSettings" in str(info.value)
    assert "FabricManagerPartitioning" in str(info.value)
    with pytest.raises(FeatureGateError, match="unrecognized"):
        FeatureGates.defaults().enabled("NoSuchGate")


@pytest.mark.parametrize("spec", ["MPSSupport", "MPSSupport=maybe", "=true"])
def test_malformed_pairs(spec: str) -> None:
    """A pair without '=', a non-boolean value or an empty name is rejected."""
    with pytest.raises(FeatureGateError):
        parse_feature_gates(spec)


def test_later_pair_wins() -> None:
    """Repeating a gate keeps the last value, as Go's map flag does."""
    assert parse_feature_gates("MPSSupport=true,MPSSupport=false").enabled("MPSSupport") is False


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("IMEXDaemonsWithDNSNames=false", ["ComputeDomainCliques", "IMEXDaemonsWithDNSNames"]),
        ("DynamicMIG=true,PassthroughSupport=true", ["DynamicMIG", "PassthroughSupport"]),
        ("DynamicMIG=true,NVMLDeviceHealthCheck=true", ["DynamicMIG", "NVMLDeviceHealthCheck"]),
        ("DynamicMIG=true,MPSSupport=true", ["DynamicMIG", "MPSSupport"]),
        (
            "PassthroughSupport=true,NVMLDeviceHealthCheck=true",
            ["PassthroughSupport", "NVMLDeviceHealthCheck"],
        ),
        ("DeviceMetadata=true", ["DeviceMetadata", "PassthroughSupport"]),
    ],
)
def test_rules(spec: str, words: list[str]) -> None:
    """Each upstream dependency/exclusion violation is an error naming both gates."""
    with pytest.raises(FeatureGateError) as info:
        parse_feature_gates(spec)
    for word in words:
        assert word in str(info.value)


def test_rules_satisfied() -> None:
    """Allowed combinations pass (DeviceMetadata with Passthrough; cliques off with DNS names off)."""
    parse_feature_gates("DeviceMetadata=true,PassthroughSupport=true")
    parse_feature_gates("IMEXDaemonsWithDNSNames=false,ComputeDomainCliques=false")
    parse_feature_gates("DynamicMIG=true")


def test_all_violations_reported_together() -> None:
    """Several violated rules are listed in one error."""
    with pytest.raises(FeatureGateError) as info:
        parse_feature_gates("DynamicMIG=true,MPSSupport=true,DeviceMetadata=true")
    assert str(info.value).count(";") >= 1


def test_fabric_env_switches_gate() -> None:
    """FABRIC_TOPOLOGY_SUPPORT=true turns the gate on and records the env as its source."""
    gates = parse_feature_gates("", env={"FABRIC_TOPOLOGY_SUPPORT": "true"})
    state = gates.state(Gate.FABRIC_TOPOLOGY_SUPPORT)
    assert state.enabled and state.source is GateSource.ENV
    assert parse_feature_gates("", env={"OTHER": "1"}).enabled("FabricTopologySupport") is False


def test_fabric_env_and_flag_must_agree() -> None:
    """Flag and env agreeing is fine (flag recorded); disagreeing is an error naming both."""
    gates = parse_feature_gates("FabricTopologySupport=true", env={"FABRIC_TOPOLOGY_SUPPORT": "1"})
    assert gates.state("FabricTopologySupport").source is GateSource.FLAG
    with pytest.raises(FeatureGateError, match="FABRIC_TOPOLOGY_SUPPORT"):
        parse_feature_gates("FabricTopologySupport=false", env={"FABRIC_TOPOLOGY_SUPPORT": "true"})
    with pytest.raises(FeatureGateError, match="FABRIC_TOPOLOGY_SUPPORT"):
        parse_feature_gates("", env={"FABRIC_TOPOLOGY_SUPPORT": "sure"})


def test_alias_fabric_manager_partitioning() -> None:
    """FabricManagerPartitioning is an alias; contradicting spellings in one flag are an error."""
    gates = parse_feature_gates("FabricManagerPartitioning=true")
    assert gates.enabled("FabricTopologySupport") and gates.enabled("FabricManagerPartitioning")
    with pytest.raises(FeatureGateError, match="disagree"):
        parse_feature_gates("FabricManagerPartitioning=true,FabricTopologySupport=false")


def test_all_alpha_and_all_beta() -> None:
    """AllAlpha turns on unset alpha gates only; explicit settings still win; AllBeta likewise."""
    gates = parse_feature_gates(
        "AllAlpha=true,DynamicMIG=false,PassthroughSupport=false,DeviceMetadata=false"
    )
    assert gates.enabled("TimeSlicingSettings") and gates.enabled("FabricTopologySupport")
    assert gates.state("MPSSupport").source is GateSource.ALL_ALPHA
    assert not gates.enabled("DynamicMIG")
    assert not gates.enabled("AllBeta")
    with pytest.raises(FeatureGateError):
        parse_feature_gates("AllAlpha=true")  # DynamicMIG with MPSSupport etc.
    beta = parse_feature_gates("AllBeta=true,IMEXDaemonsWithDNSNames=false,ComputeDomainCliques=false")
    assert beta.enabled("CrashOnNVLinkFabricErrors") and not beta.enabled("TimeSlicingSettings")


def test_override_records_source_and_checks_rules() -> None:
    """A per-node override returns new gates with its source; the original is unchanged."""
    base = parse_feature_gates("")
    node = base.with_override("FabricTopologySupport", True, detail="label fabric-topology-support")
    assert node.enabled("FabricTopologySupport") and not base.enabled("FabricTopologySupport")
    assert node.describe()["FabricTopologySupport"]["source"] == "override"
    assert node.describe()["FabricTopologySupport"]["detail"] == "label fabric-topology-support"
    with pytest.raises(FeatureGateError):
        base.with_override("DeviceMetadata", True, detail="x")


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "TimeSlicingSettings",
                "MPSSupport",
                "FabricTopologySupport",
                "NVMLDeviceHealthCheck",
                "LoggingAlphaOptions",
            ]
        ),
        st.booleans(),
    )
)
def test_to_spec_round_trips(values: dict[str, bool]) -> None:
    """Parsing to_spec() of parsed gates gives the same values."""
    gates = parse_feature_gates(",".join(f"{k}={v}" for k, v in values.items()))
    assert parse_feature_gates(gates.to_spec()).as_map() == gates.as_map()


def test_registry_is_complete() -> None:
    """Every Gate member has a spec and vice versa."""
    assert {s.name for s in KNOWN_GATES} == {str(g) for g in Gate}
