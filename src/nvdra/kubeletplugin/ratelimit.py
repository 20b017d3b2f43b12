"""A thread-safe token bucket for background API calls (``--kube-api-qps`` / ``--kube-api-burst``).

Invariants:
- at most ``burst`` calls pass without waiting; afterwards calls pass at ``qps`` per second on average;
- waiting happens outside the lock, so a waiting caller never blocks the bookkeeping of others;
- the clock and the sleep function are injectable, so tests observe waits by counting, not timing.

Only background calls (ResourceSlice list/create/update/delete) take tokens. The claim GET on the
prepare path never does: queueing it behind slice traffic is what made the Go plugin's prepare take
~200 ms at the default 5 QPS (ARCHITECTURE.md §8).
"""

from __future__ import annotations

__all__ = ["RateLimiterStatistics", "TokenBucket"]

import threading
import time
from collections.abc import Callable

import attrs

from nvdra.core.errors import ConfigError


@attrs.frozen(kw_only=True)
class RateLimiterStatistics:
    """Counters of a :class:`TokenBucket` since it was made."""

    acquired: int
    waited: int
    seconds_waited: float


class TokenBucket:
    """Token bucket: ``burst`` tokens at most, refilled at ``qps`` tokens per second.

    A ``qps`` of 0 or less disables limiting (every :meth:`acquire` returns at once), as a negative
    ``--kube-api-qps`` does in client-go.
    """

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Make a full bucket.

        Raises:
            ConfigError: ``burst`` is below 1 while limiting is on.
        """
        if qps > 0 and burst < 1:
            raise ConfigError("--kube-api-burst", burst, "an integer >= 1 when --kube-api-qps > 0")
        self._qps = float(qps)
        self._burst = max(int(burst), 1)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self._burst)
        self._last = clock()
        self._acquired = 0
        self._waited = 0
        self._seconds_waited = 0.0

    @property
    def enabled(self) -> bool:
        """Whether calls are limited at all."""
        return self._qps > 0

    def acquire(self) -> float:
        """Take one token, sleeping until it is available.

        Returns:
            The seconds this call slept (0.0 when a token was there).
        """
        if not self.enabled:
            with self._lock:
                self._acquired += 1
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self._qps)
            self._last = now
            # Reserve the token now (the balance may go negative): later callers queue behind us.
            self._tokens -= 1.0
            delay = 0.0 if self._tokens >= 0 else -self._tokens / self._qps
            self._acquired += 1
            if delay > 0:
                self._waited += 1
                self._seconds_waited += delay
        if delay > 0:
            self._sleep(delay)
        return delay

    def statistics(self) -> RateLimiterStatistics:
        """A snapshot of the counters."""
        with self._lock:
            return RateLimiterStatistics(
                acquired=self._acquired, waited=self._waited, seconds_waited=self._seconds_waited
            )
