"""The token bucket for background API calls: burst, then qps; waits observed by count, not time."""

from __future__ import annotations

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin.ratelimit import TokenBucket


class FakeTime:
    """A clock that moves only when told or slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_burst_passes_then_calls_wait_one_interval_each() -> None:
    """With qps=5, burst=10: ten calls pass at once, the next ones wait 0.2 s each."""
    t = FakeTime()
    bucket = TokenBucket(5.0, 10, clock=t.clock, sleep=t.sleep)
    for _ in range(10):
        assert bucket.acquire() == 0.0
    for _ in range(3):
        bucket.acquire()
    assert t.sleeps == pytest.approx([0.2, 0.2, 0.2])
    stats = bucket.statistics()
    assert (stats.acquired, stats.waited) == (13, 3) and stats.seconds_waited == pytest.approx(0.6)


def test_idle_time_refills_up_to_burst_only() -> None:
    """After a long pause the bucket holds `burst` tokens, not more."""
    t = FakeTime()
    bucket = TokenBucket(1.0, 2, clock=t.clock, sleep=t.sleep)
    for _ in range(2):
        bucket.acquire()
    t.now += 100.0
    for _ in range(2):
        bucket.acquire()
    assert t.sleeps == []
    bucket.acquire()
    assert t.sleeps == pytest.approx([1.0])


def test_non_positive_qps_disables_limiting() -> None:
    """qps <= 0 never waits (client-go's 'no limit')."""
    t = FakeTime()
    bucket = TokenBucket(0, 0, clock=t.clock, sleep=t.sleep)
    for _ in range(100):
        bucket.acquire()
    assert not bucket.enabled and t.sleeps == [] and bucket.statistics().acquired == 100


def test_zero_burst_with_limiting_is_a_config_error() -> None:
    """A burst below 1 with a positive qps could never pass a call."""
    with pytest.raises(errors.ConfigError, match="--kube-api-burst"):
        TokenBucket(5.0, 0)
