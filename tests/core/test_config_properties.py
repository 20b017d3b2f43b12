"""Properties of the config codec: round trips, idempotent normalization, and robustness to mutations."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nvdra.core.config import Config, decode_config, encode_config, load_config
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates
from tests.core.strategies import ALL_ON, feature_gate_sets, json_values, valid_configs


@given(valid_configs)
def test_round_trip(config: Config) -> None:
    """decode(encode(x)) == x for every valid config, strict and non-strict."""
    encoded = encode_config(config)
    assert decode_config(encoded, gates=ALL_ON) == config
    assert decode_config(encoded, gates=ALL_ON, strict=False) == config


@given(valid_configs)
def test_valid_configs_validate_and_normalize_idempotently(config: Config) -> None:
    """Generated configs validate before and after normalizing, and normalizing twice changes nothing."""
    config.validate(ALL_ON)
    normalized = config.normalize(ALL_ON)
    normalized.validate(ALL_ON)
    assert normalized.normalize(ALL_ON) == normalized
    assert load_config(encode_config(config), gates=ALL_ON) == normalized


@given(valid_configs, feature_gate_sets)
def test_normalize_never_raises(config: Config, gates: FeatureGates) -> None:
    """Normalizing under any gates is total; validation either passes or raises ConfigError."""
    normalized = config.normalize(gates)
    try:
        normalized.validate(gates)
    except ConfigError as err:
        assert err.path.startswith("$")


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _paths(value, (*prefix, index))
    return out


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action == "replace" else doc
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[f"{last}x"] = value
    return doc


@settings(max_examples=300)
@given(valid_configs, st.data(), st.sampled_from(["replace", "delete", "add"]), json_values(), st.booleans())
def test_mutations_decode_or_raise_config_error(
    config: Config, data: st.DataObject, action: str, value: Any, strict: bool
) -> None:
    """A randomly mutated valid document either decodes or raises ConfigError, never anything else."""
    doc = copy.deepcopy(encode_config(config))
    path = data.draw(st.sampled_from(_paths(doc)))
    mutated = _mutate(doc, path, action, value)
    try:
        decoded = decode_config(mutated, gates=ALL_ON, strict=strict)
    except ConfigError as err:
        assert str(err)
        return
    try:
        decoded.normalize(ALL_ON).validate(ALL_ON)
    except ConfigError as err:
        assert str(err)
