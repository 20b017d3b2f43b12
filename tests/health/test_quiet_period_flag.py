"""``--health-quiet-period`` (``HEALTH_QUIET_PERIOD``): parsed by the real command, carried by PluginConfig
into the tracker's recovery policy; 0 turns time-based recovery off."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from nvdra.core.featuregates import parse_feature_gates
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.health import health_view
from nvdra.plugins.gpu.main import main
from tests.plugins.conftest import DriverNode

GATES = "NVMLDeviceHealthCheck=true"


def parsed(args: list[str]) -> float:
    """The flag's value as the real command parses it (NODE_NAME given so parsing completes)."""
    ctx = main.make_context("nvdra-gpu-plugin", ["--node-name", "n1", *args])
    return float(ctx.params["health_quiet_period"])


def test_flag_and_env_twin_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default 300 s; the flag and HEALTH_QUIET_PERIOD set it; the flag wins over the env twin."""
    monkeypatch.delenv("HEALTH_QUIET_PERIOD", raising=False)
    assert parsed([]) == 300.0
    assert parsed(["--health-quiet-period", "12.5"]) == 12.5
    monkeypatch.setenv("HEALTH_QUIET_PERIOD", "60")
    assert parsed([]) == 60.0
    assert parsed(["--health-quiet-period", "0"]) == 0.0


def test_negative_period_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A negative period is a usage error naming the flag."""
    monkeypatch.delenv("HEALTH_QUIET_PERIOD", raising=False)
    with pytest.raises(click.BadParameter) as info:
        parsed(["--health-quiet-period", "-1"])
    assert "--health-quiet-period" in info.value.format_message() and "x>=0" in str(info.value)


@pytest.mark.parametrize(("seconds", "policy"), [(42.0, 42.0), (300.0, 300.0), (0.0, None)])
def test_config_reaches_the_trackers_policy(
    node: DriverNode, tmp_path: Path, seconds: float, policy: float | None
) -> None:
    """PluginConfig.health_quiet_period becomes the tracker's quiet period (0: None, recovery off)."""
    driver = node.driver(gates=GATES)
    config = PluginConfig(node_name=node.node_name, health_quiet_period=seconds)
    tracker = health_view(config, parse_feature_gates(GATES), driver)
    assert tracker is not None and tracker.policy.quiet_period == policy
    assert driver.views[-1] is tracker
