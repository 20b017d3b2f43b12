"""Chart values of issue 15's features: consumableShares and the GPU classes' extended resources."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.helm import RenderError, render

GPUS = {"resources": {"gpus": {"enabled": True}}}


def plugin_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet" and "kubelet-plugin" in d["metadata"]["name"]]
    (gpus,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "gpus"]
    return {e["name"]: e.get("value", "") for e in gpus.get("env", [])}


@pytest.mark.parametrize("value", ["memory", "unlimited", 4])
def test_consumable_shares_reaches_the_gpu_plugin(value: object) -> None:
    """consumableShares becomes CONSUMABLE_SHARES (upstream's variable) with the gate on."""
    docs = render({**GPUS, "consumableShares": value, "featureGates": {"ConsumableShares": True}})
    assert plugin_env(docs)["CONSUMABLE_SHARES"] == str(value)


def test_consumable_shares_unset_sets_nothing() -> None:
    assert "CONSUMABLE_SHARES" not in plugin_env(render(GPUS))


@pytest.mark.parametrize(
    ("values", "phrase"),
    [
        (
            {"consumableShares": "lots", "featureGates": {"ConsumableShares": True}},
            "allowed: disabled, memory",
        ),
        ({"consumableShares": 0, "featureGates": {"ConsumableShares": True}}, "positive integer"),
        ({"consumableShares": "memory"}, "needs featureGates.ConsumableShares"),
    ],
)
def test_bad_consumable_shares_fail_rendering(values: dict[str, Any], phrase: str) -> None:
    with pytest.raises(RenderError) as info:
        render({**GPUS, **values})
    assert phrase in str(info.value)
