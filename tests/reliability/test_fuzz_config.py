"""Fuzzing the opaque-config decoders and the admission webhook with generated and mutated documents.

Beyond the single-mutation property in ``tests/core``: several mutations at once, hostile values
(NaN, infinities, huge integers, deep nesting, non-string keys, NUL and very long strings), every gate
combination, and whole AdmissionReviews whose envelope is mutated too. Properties: a rejection is a
:class:`ConfigError` (with a ``$`` path and a message) or a clean denial, never another exception; the
input document is never modified (no partial change); an admitted document loads on the node.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvdra.core.config import Config, decode_config, encode_config, load_config
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates
from nvdra.plugins.webhook import admission
from tests.core.strategies import ALL_ON, feature_gate_sets, valid_configs

HOSTILE_SCALARS = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        2**200,
        -(2**63) - 1,
        "",
        "\0",
        "x" * 10_000,
        "../../etc/passwd",
        "1e400",
        "NaN",
        "-1Gi",
        "99999999999999999999Ti",
        True,
        [],
        {},
    ]
)


def hostile_values() -> st.SearchStrategy[Any]:
    """JSON-ish values, hostile ones included, with non-string keys and some nesting."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | HOSTILE_SCALARS
    keys = st.text(max_size=8) | st.integers() | st.none()
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=8,
    )


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _paths(value, (*prefix, index))
    return out


def _mutate(doc: Any, data: st.DataObject) -> Any:
    path = data.draw(st.sampled_from(_paths(doc)))
    action = data.draw(st.sampled_from(["replace", "delete", "add", "wrap", "deep"]))
    value = data.draw(hostile_values())
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "wrap":
        parent[last] = [parent[last]]
    elif action == "deep":
        nested: Any = parent[last]
        for _ in range(200):
            nested = {"x": nested}
        parent[last] = nested
    elif isinstance(parent, dict):
        parent[f"{last}_"] = value
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A valid config document with 1 to 4 mutations applied."""
    doc: Any = copy.deepcopy(encode_config(draw(valid_configs)))
    data = draw(st.data())
    for _ in range(draw(st.integers(1, 4))):
        doc = _mutate(doc, data)
    return doc


def _load(doc: Any, gates: FeatureGates) -> Config | ConfigError:
    try:
        return load_config(doc, gates=gates)
    except ConfigError as err:
        return err


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents(), feature_gate_sets)
def test_mutated_documents_load_or_raise_config_error(doc: Any, gates: FeatureGates) -> None:
    """load_config on a mutated document returns a config or a ConfigError; the document is unchanged."""
    before = copy.deepcopy(doc)
    outcome = _load(doc, gates)
    if isinstance(outcome, ConfigError):
        assert str(outcome) and outcome.path.startswith("$")
    assert repr(doc) == repr(before)  # repr: NaN != NaN, but prints the same


@settings(max_examples=300)
@given(hostile_values(), st.booleans())
def test_arbitrary_values_decode_or_raise_config_error(value: Any, strict: bool) -> None:
    """Any JSON-ish value (not even an object) is refused with a ConfigError, never another exception."""
    for doc in (value, {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": value}):
        try:
            decode_config(doc, gates=ALL_ON, strict=strict)
        except ConfigError as err:
            assert str(err)


def _review(obj: Any, resource: str = "resourceclaims") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "resource": {"group": "resource.k8s.io", "version": "v1", "resource": resource},
            "object": obj,
        },
    }


def _claim(params: Any, driver: str = "gpu.nvidia.com") -> dict[str, Any]:
    return {"spec": {"devices": {"config": [{"opaque": {"driver": driver, "parameters": params}}]}}}


def _check_answer(answer: dict[str, Any]) -> bool:
    response = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["reason"] == "Invalid"
        assert response["status"]["message"]
    return bool(response["allowed"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents(), feature_gate_sets)
def test_webhook_answers_every_mutated_claim(doc: Any, gates: FeatureGates) -> None:
    """The webhook allows or cleanly denies; what it allows loads on a node with the fabric gate on."""
    body = _review(_claim(doc))
    before = copy.deepcopy(body)
    wgates = admission.admission_gates(gates)
    allowed = _check_answer(admission.review(body, wgates))
    assert repr(body) == repr(before)
    if allowed:
        assert not isinstance(_load(doc, wgates), ConfigError)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs, st.data())
def test_webhook_answers_mutated_reviews(config: Config, data: st.DataObject) -> None:
    """AdmissionReviews mutated anywhere (envelope included) get an answer, never an exception."""
    body: Any = _review(_claim(encode_config(config)), data.draw(st.sampled_from(["resourceclaims", "x"])))
    for _ in range(data.draw(st.integers(1, 3))):
        body = _mutate(body, data)
    _check_answer(admission.review(body, admission.admission_gates(ALL_ON)))


def test_webhook_denies_a_resource_name_that_is_not_a_string() -> None:
    """request.resource.resource = [] (unhashable) is denied, not a TypeError (found by the fuzzer)."""
    body = _review(_claim({}))
    body["request"]["resource"]["resource"] = []
    answer = admission.review(body, admission.admission_gates(ALL_ON))
    assert answer["response"]["allowed"] is False
    assert "unsupported resource" in answer["response"]["status"]["message"]
