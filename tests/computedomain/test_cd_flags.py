"""Flags of the ComputeDomain commands: Go-style durations, ``-v`` levels, leader-election rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from nvdra.core.errors import ConfigError
from nvdra.kubeletplugin import FakeKube
from nvdra.plugins.computedomain.controller import LeaseElector, LeaseTiming
from nvdra.plugins.computedomain.controller_main import main as controller_main
from nvdra.plugins.computedomain.daemon_main import main as daemon_main
from nvdra.plugins.computedomain.flags import parse_duration

BASE = ["--pod-name", "p", "--image-name", "i"]


def controller_params(*args: str) -> dict[str, Any]:
    """The controller's parsed flags."""
    return dict(controller_main.make_context("nvdra-cd-controller", [*BASE, *args]).params)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15", 15.0), ("15s", 15.0), ("2.5", 2.5), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0)],
)
def test_durations_parse_as_go_does(text: str, seconds: float) -> None:
    """Plain seconds and Go's unit spellings give the same seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "15x", "1m 2s", "-1", "15 s"])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything else is a ValueError naming the accepted forms."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("flag", ["lease-duration", "renew-deadline", "retry-period"])
@pytest.mark.parametrize("value", ["5", "5s"])
def test_leader_election_flags_accept_seconds_with_or_without_unit(flag: str, value: str) -> None:
    """--leader-election-{lease-duration,renew-deadline,retry-period} take 5 and 5s alike."""
    params = controller_params(f"--leader-election-{flag}", value)
    assert params[f"leader_election_{flag.replace('-', '_')}"] == 5.0


def test_leader_election_defaults_are_upstreams(monkeypatch: pytest.MonkeyPatch) -> None:
    """15 s lease, 10 s renew deadline, 2 s retry period; --simulate empty unless NVDRA_SIMULATE."""
    monkeypatch.delenv("NVDRA_SIMULATE", raising=False)
    params = controller_params()
    assert (
        params["leader_election_lease_duration"],
        params["leader_election_renew_deadline"],
        params["leader_election_retry_period"],
    ) == (15.0, 10.0, 2.0)
    assert params["simulate"] == ""


def test_bad_duration_flag_is_a_usage_error() -> None:
    """A wrong duration stops the controller with a message naming the flag and the forms."""
    result = CliRunner().invoke(controller_main, [*BASE, "--leader-election-lease-duration", "15x"])
    assert result.exit_code == 2
    assert "--leader-election-lease-duration" in result.output and "15s" in result.output


def test_simulate_comes_from_the_flag_or_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """--simulate and NVDRA_SIMULATE both set it."""
    assert controller_params("--simulate", "gb200-nvl72-tray")["simulate"] == "gb200-nvl72-tray"
    monkeypatch.setenv("NVDRA_SIMULATE", "dgx-h100")
    assert controller_params()["simulate"] == "dgx-h100"


@pytest.mark.parametrize(
    ("args", "level"), [(["-v", "4"], 4), (["-v=4"], 4), (["-vv"], 2), (["-vvv"], 3), ([], 0)]
)
def test_daemon_verbosity_spellings(args: list[str], level: int) -> None:
    """The daemon's -v takes a level as upstream writes it, or repeated v's."""
    ctx = daemon_main.make_context("nvdra-cd-daemon", [*args, "check"])
    assert ctx.params["verbosity"] == level


def test_daemon_rejects_a_non_level() -> None:
    """-v with a word is a usage error, not a silent 0."""
    result = CliRunner().invoke(daemon_main, ["-v", "loud", "check"])
    assert result.exit_code == 2 and "log level" in result.output


@pytest.mark.parametrize(("lease", "renew", "retry"), [(15, 15, 2), (15, 20, 2), (15, 10, 9), (15, 10, 0)])
def test_leader_election_timing_rules(lease: float, renew: float, retry: float) -> None:
    """lease > renew deadline > 1.2 x retry period > 0, as client-go requires."""
    with pytest.raises(ConfigError):
        LeaseTiming(lease, renew, retry)


def test_leader_keeps_leading_through_failed_renewals_until_the_deadline() -> None:
    """A failed renewal within the renew deadline keeps leadership; past it, leadership is lost."""
    kube = FakeKube()
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]
    elector = LeaseElector(
        kube, namespace="ns", name="l", identity="a", timing=LeaseTiming(15, 10), now=lambda: clock[0]
    )
    assert elector.acquire_or_renew()
    kube.fail_next("get", times=100, resource="leases")
    clock[0] += timedelta(seconds=9)
    assert elector.acquire_or_renew() and elector.leading
    clock[0] += timedelta(seconds=1)
    assert not elector.acquire_or_renew() and not elector.leading
