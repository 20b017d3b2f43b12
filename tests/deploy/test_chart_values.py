"""Invalid chart values fail rendering with the intended message; the chart's lists match the code."""

from __future__ import annotations

import re
from typing import Any

import pytest

from nvdra.core.errors import FeatureGateError
from nvdra.core.featuregates import KNOWN_GATES, parse_feature_gates
from nvdra.nvml import PROFILE_NAMES
from tests.deploy.helm import CHART, RenderError, render

CM = ("cert-manager.io/v1",)


def webhook(**tls: Any) -> dict[str, Any]:
    return {"webhook": {"enabled": True, "tls": tls}}


# (id, values, API versions served, namespace, a phrase the failure must contain)
INVALID: list[tuple[str, dict[str, Any], tuple[str, ...], str, str]] = [
    ("default namespace", {}, (), "default", 'refusing to install into the "default" namespace'),
    (
        "nothing enabled",
        {"resources": {"computeDomains": {"enabled": False}}},
        (),
        "nvdra",
        "nothing to install",
    ),
    ("stray namespace value", {"namespace": "x"}, (), "nvdra", 'the value "namespace" is not used'),
    ("empty image", {"image": {"repository": ""}}, (), "nvdra", "image.repository must be set"),
    ("resource API", {"resourceApiVersion": "resource.k8s.io/v1alpha3"}, (), "nvdra", "resourceApiVersion"),
    ("verbosity word", {"logVerbosity": "loud"}, (), "nvdra", 'logVerbosity "loud" is not a level'),
    ("verbosity 11", {"logVerbosity": 11}, (), "nvdra", "an integer from 0 to 10"),
    (
        "lease duration",
        {"controller": {"leaderElection": {"leaseDuration": "1m"}}},
        (),
        "nvdra",
        'leaseDuration "1m" is not a duration',
    ),
    ("gates as a list", {"featureGates": ["MPSSupport"]}, (), "nvdra", "featureGates must be a map"),
    (
        "unknown gate",
        {"featureGates": {"Turbo": True}},
        (),
        "nvdra",
        "featureGates.Turbo: unknown feature gate",
    ),
    (
        "gate not a bool",
        {"featureGates": {"MPSSupport": "yes"}},
        (),
        "nvdra",
        "featureGates.MPSSupport: yes is not",
    ),
    ("unknown profile", {"simulate": "dgx-z"}, (), "nvdra", 'simulate "dgx-z" is not a profile'),
    (
        "webhook without cert-manager",
        webhook(),
        (),
        "nvdra",
        "webhook.tls.mode=cert-manager needs cert-manager",
    ),
    ("issuer type", webhook(certManager={"issuerType": "acme"}), CM, "nvdra", 'issuerType "acme"'),
    (
        "issuer without name",
        webhook(certManager={"issuerType": "issuer"}),
        CM,
        "nvdra",
        "issuerName must name",
    ),
    ("secret without name", webhook(mode="secret", secret={"caBundle": "x"}), (), "nvdra", "tls.secret.name"),
    ("secret without CA", webhook(mode="secret", secret={"name": "s"}), (), "nvdra", "tls.secret.caBundle"),
    ("TLS mode", webhook(mode="acme"), (), "nvdra", 'webhook.tls.mode "acme" is not supported'),
    (
        "failure policy",
        {"webhook": {"enabled": True, "failurePolicy": "Maybe"}},
        CM,
        "nvdra",
        'webhook.failurePolicy "Maybe"',
    ),
]


@pytest.mark.parametrize(
    ("name", "values", "apis", "namespace", "phrase"), INVALID, ids=[i[0] for i in INVALID]
)
def test_invalid_values_fail_rendering_with_the_intended_message(
    name: str, values: dict[str, Any], apis: tuple[str, ...], namespace: str, phrase: str
) -> None:
    """Each bad value stops rendering, and the message names the value and what to do."""
    with pytest.raises(RenderError) as info:
        render(values, api_versions=apis, namespace=namespace)
    assert phrase in str(info.value)


def test_default_namespace_is_allowed_when_asked() -> None:
    """allowDefaultNamespace=true lifts the default-namespace guard."""
    assert render({"allowDefaultNamespace": True}, namespace="default")


def _chart_list(define: str) -> list[str]:
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    match = re.search(r'define "' + re.escape(define) + r'" -}}\n{{- list (.*?) \| toJson', text)
    assert match, define
    return re.findall(r'"([^"]+)"', match.group(1))


def test_chart_knows_exactly_the_gates_the_code_knows() -> None:
    """Every gate of nvdra.core.featuregates is accepted by the chart, and every name it accepts parses."""
    names = _chart_list("nvdra.knownFeatureGates")
    assert {spec.name for spec in KNOWN_GATES} <= set(names)
    for name in names:
        try:
            parse_feature_gates(f"{name}=false")
        except FeatureGateError as exc:  # a known gate whose rules need others: not an unknown name
            assert "combination" in str(exc), exc


def test_chart_knows_exactly_the_built_in_profiles() -> None:
    """simulate accepts the built-in profile names, no more and no fewer."""
    assert sorted(_chart_list("nvdra.simulateProfiles")) == sorted(PROFILE_NAMES)
