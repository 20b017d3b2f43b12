"""Admission decisions: the webhook denies exactly what the plugins' decoder rejects, with field paths."""

from __future__ import annotations

from typing import Any

import pytest

from nvdra.core.config import KINDS
from nvdra.core.featuregates import FeatureGates, Gate, parse_feature_gates
from nvdra.fabric.requirements import fix_claim
from nvdra.plugins.webhook import DRIVER_KINDS, RESOURCE_VERSIONS, admission_gates, config_problems, review
from tests.readme_examples import readme_fabric_topology
from tests.webhook.conftest import admission_review, claim, opaque, template

API = "resource.nvidia.com/v1beta1"
CD = "compute-domain.nvidia.com"
P = "spec.devices.config[0].opaque.parameters"


def gpu(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "GpuConfig", **fields}


# (name, config entry, the path the denial must name, a phrase it must contain)
WRONG: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown field",
        opaque(gpu(sharing={"strategy": "MPS", "bogus": 1})),
        f"{P}.sharing.bogus",
        "unknown field",
    ),
    ("unknown strategy", opaque(gpu(sharing={"strategy": "Spatial"})), f"{P}.sharing.strategy", "Spatial"),
    (
        "unknown interval",
        opaque(gpu(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Forever"}})),
        f"{P}.sharing.timeSlicingConfig.interval",
        "Forever",
    ),
    (
        "MPS percentage over 100",
        opaque(gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 150}})),
        f"{P}.sharing.mpsConfig.defaultActiveThreadPercentage",
        "greater than 100",
    ),
    (
        "MPS limit not a quantity",
        opaque(gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "lots"}})),
        f"{P}.sharing.mpsConfig.defaultPinnedDeviceMemoryLimit",
        "quantity",
    ),
    (
        "time-slicing settings with MPS",
        opaque(gpu(sharing={"strategy": "MPS", "timeSlicingConfig": {"interval": "Long"}})),
        f"{P}.sharing.timeSlicingConfig",
        "'MPS' strategy",
    ),
    ("unknown kind", opaque({"apiVersion": API, "kind": "TpuConfig"}), f"{P}.kind", "TpuConfig"),
    ("wrong apiVersion", opaque({"apiVersion": "v1", "kind": "GpuConfig"}), f"{P}.apiVersion", "'v1'"),
    ("parameters not an object", opaque(["GpuConfig"]), P, "expected an object"),
    (
        "partition size 3",
        opaque(gpu(fabricTopologyConfig={"partitionSize": 3})),
        f"{P}.fabricTopologyConfig.partitionSize",
        "2, 4 or 8",
    ),
    (
        "Manual without partition ids",
        opaque(gpu(fabricTopologyConfig={"strategy": "Manual"})),
        f"{P}.fabricTopologyConfig.partitionIDs",
        "requires partitionIDs",
    ),
    (
        "constraint under VGPU",
        opaque(gpu(fabricTopologyConfig={"virtualizationModel": "VGPU", "minBandwidth": 100})),
        f"{P}.fabricTopologyConfig.minBandwidth",
        "VGPU",
    ),
    (
        "MIG config with a time slice",
        opaque(
            {
                "apiVersion": API,
                "kind": "MigDeviceConfig",
                "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {}},
            }
        ),
        f"{P}.sharing.timeSlicingConfig",
        "unknown field",
    ),
    (
        "VFIO backend policy",
        opaque({"apiVersion": API, "kind": "VfioDeviceConfig", "iommu": {"backendPolicy": "Always"}}),
        f"{P}.iommu.backendPolicy",
        "Always",
    ),
    (
        "channel config without domain",
        opaque({"apiVersion": API, "kind": "ComputeDomainChannelConfig", "domainID": ""}, driver=CD),
        f"{P}.domainID",
        "cannot be empty",
    ),
    (
        "channel allocation mode",
        opaque(
            {
                "apiVersion": API,
                "kind": "ComputeDomainChannelConfig",
                "domainID": "u",
                "allocationMode": "Some",
            },
            driver=CD,
        ),
        f"{P}.allocationMode",
        "Some",
    ),
    (
        "daemon config without domain",
        opaque({"apiVersion": API, "kind": "ComputeDomainDaemonConfig"}, driver=CD),
        f"{P}.domainID",
        "domainID",
    ),
    ("GPU config for the CD driver", opaque(gpu(), driver=CD), f"{P}.kind", "not a configuration for driver"),
    # Found by tests/reliability/test_fuzz_config.py: the fabric demand check parsed the ID and raised.
    (
        "legacy partition id -1",
        opaque(gpu(fabricPartitionID=-1)),
        f"{P}.fabricPartitionID",
        "invalid partition id",
    ),
    (
        "CD config for the GPU driver",
        opaque({"apiVersion": API, "kind": "ComputeDomainDaemonConfig", "domainID": "u"}),
        f"{P}.kind",
        "not a configuration for driver gpu.nvidia.com",
    ),
]


@pytest.mark.parametrize(("name", "entry", "path", "phrase"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_config_is_denied_with_its_field_path(
    name: str, entry: dict[str, Any], path: str, phrase: str, gates: FeatureGates
) -> None:
    """Each wrong example is denied (reason Invalid) and the message names the field path first."""
    answer = review(admission_review(claim(entry)), gates)["response"]
    assert answer["allowed"] is False
    assert answer["status"]["reason"] == "Invalid"
    message = answer["status"]["message"]
    assert message.startswith(path + ":"), message
    assert phrase in message


GOOD = [
    opaque(gpu()),
    opaque(gpu(sharing={"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}})),
    opaque(gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "10Gi"}})),
    opaque({"apiVersion": API, "kind": "MigDeviceConfig", "sharing": {"strategy": "MPS"}}),
    opaque({"apiVersion": API, "kind": "VfioDeviceConfig", "iommu": {"backendPolicy": "PreferIommuFD"}}),
    opaque(
        {"apiVersion": API, "kind": "ComputeDomainChannelConfig", "domainID": "u", "allocationMode": "All"},
        CD,
    ),
    opaque({"apiVersion": API, "kind": "ComputeDomainDaemonConfig", "domainID": "u"}, driver=CD),
    opaque({"anything": "goes"}, driver="other.example.com"),
]


@pytest.mark.parametrize("entry", GOOD, ids=lambda e: e["opaque"]["parameters"].get("kind", "foreign"))
@pytest.mark.parametrize("version", RESOURCE_VERSIONS)
@pytest.mark.parametrize("build", [claim, template], ids=["claim", "template"])
def test_valid_config_is_allowed_in_every_version(
    entry: dict[str, Any], version: str, build: Any, gates: FeatureGates
) -> None:
    """Valid configs (VfioDeviceConfig and the ComputeDomain kinds included) pass in v1, v1beta2, v1beta1."""
    answer = review(admission_review(build(entry, version=version), uid="u-7"), gates)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"] == {"uid": "u-7", "allowed": True}


def test_template_paths_and_every_problem_are_reported(gates: FeatureGates) -> None:
    """A template's paths start at spec.spec; every problem of every entry is joined with '; '."""
    bad_pct = opaque(gpu(sharing={"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": -1}}))
    bad_kind = opaque({"apiVersion": API, "kind": "Nope"})
    obj = template(opaque(gpu()), bad_pct, bad_kind, version="v1beta1")
    message = review(admission_review(obj), gates)["response"]["status"]["message"]
    assert message.startswith("spec.spec.devices.config[1].opaque.parameters.sharing.mpsConfig.")
    assert "; spec.spec.devices.config[2].opaque.parameters.kind: unknown kind 'Nope'" in message


def test_gate_dependent_rules_follow_the_cluster_gates() -> None:
    """MPS is denied while MPSSupport is off and allowed once the chart's gate map turns it on."""
    entry = opaque(gpu(sharing={"strategy": "MPS"}))
    off = admission_gates(parse_feature_gates(""))
    on = admission_gates(parse_feature_gates("MPSSupport=true"))
    denied = review(admission_review(claim(entry)), off)["response"]
    assert denied["allowed"] is False
    assert "MPSSupport" in denied["status"]["message"]
    assert review(admission_review(claim(entry)), on)["response"]["allowed"] is True


def test_fabric_fields_pass_with_the_gate_off_because_nodes_may_enable_it() -> None:
    """FabricTopologySupport can be switched on per node by label: the webhook checks fabric validity only."""
    cluster = parse_feature_gates("TimeSlicingSettings=true")
    assert not cluster.enabled(Gate.FABRIC_TOPOLOGY_SUPPORT)
    readme = gpu(
        sharing={"strategy": "TimeSlicing"},
        fabricTopologyConfig=readme_fabric_topology(),
    )
    readme["apiVersion"] = "nvidia.com/v1beta1"
    unsaid = claim(opaque(readme))
    denied = review(admission_review(unsaid), admission_gates(cluster))["response"]
    assert not denied["allowed"] and "add the selector" in denied["status"]["message"]
    said, _ = fix_claim(unsaid)  # the selectors and constraint that tell the scheduler
    assert review(admission_review(said), admission_gates(cluster))["response"]["allowed"]
    bad = opaque(gpu(fabricTopologyConfig={"partitionSize": 5}))
    assert not review(admission_review(claim(bad)), admission_gates(cluster))["response"]["allowed"]


def test_every_config_kind_belongs_to_exactly_one_driver() -> None:
    """DRIVER_KINDS covers every kind the config API decodes, each under one driver."""
    owned = [kind for kinds in DRIVER_KINDS.values() for kind in kinds]
    assert sorted(owned) == sorted(KINDS)


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"apiVersion": "admission.k8s.io/v1beta1", "request": {}}, "apiVersion"),
        ([1, 2], "apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request: missing"),
    ],
)
def test_malformed_reviews_are_denied_not_raised(body: Any, phrase: str, gates: FeatureGates) -> None:
    """A body that is no AdmissionReview v1 gets a denial that says what is wrong."""
    answer = review(body, gates)["response"]
    assert answer["allowed"] is False
    assert phrase in answer["status"]["message"]


def test_other_resources_and_versions_are_denied(gates: FeatureGates) -> None:
    """Only resource.k8s.io claims/templates in v1, v1beta2, v1beta1 are reviewed; the rest is named."""
    body = admission_review(claim(opaque(gpu())))
    body["request"]["resource"] = {
        "group": "resource.k8s.io",
        "version": "v1alpha3",
        "resource": "resourceclaims",
    }
    answer = review(body, gates)["response"]
    assert answer["allowed"] is False
    assert "v1alpha3" in answer["status"]["message"]
    body["request"]["resource"] = {"group": "", "version": "v1", "resource": "pods"}
    assert "pods" in review(body, gates)["response"]["status"]["message"]


def test_objects_without_configs_or_with_non_opaque_entries_are_allowed(gates: FeatureGates) -> None:
    """No config list, and entries without ``opaque``, are nothing for nvdra to check."""
    obj = claim()
    del obj["spec"]["devices"]["config"]
    assert review(admission_review(obj), gates)["response"]["allowed"]
    assert config_problems(claim({"requests": ["gpu"]}), "resourceclaims", gates) == []
    assert config_problems(claim("not-an-object"), "resourceclaims", gates) == [  # type: ignore[arg-type]
        "spec.devices.config[0]: expected an object, got 'not-an-object'"
    ]


def test_config_problems_rejects_unknown_resources(gates: FeatureGates) -> None:
    """Asking about a resource the webhook does not handle is a programming error, said plainly."""
    with pytest.raises(ValueError, match="unsupported resource 'pods'"):
        config_problems({}, "pods", gates)
