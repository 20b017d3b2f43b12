"""Log a repeated line once, then once per window with a count: "… (repeated 12 times in 60 s)".

A controller that retries every second must not print the same error every second. :class:`RepeatFilter`
is a ``logging.Filter`` keyed by (logger, level, rendered message): the first occurrence passes; the
identical ones after it within ``window_s`` are counted and dropped; the first one after the window
passes with the count of those it stood for appended. A line that changes passes at once.
"""

from __future__ import annotations

__all__ = ["RepeatFilter", "install_repeat_filter"]

import logging
import threading
import time
from collections.abc import Callable


class RepeatFilter(logging.Filter):
    """Drops identical log records within a window and reports how many it dropped."""

    def __init__(
        self, window_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 1024
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (window start, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass the first record of a window (with the dropped count); drop repeats inside it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        key = (record.name, record.levelno, message)
        now = self._clock()
        with self._lock:
            start, dropped = self._seen.get(key, (None, 0))
            if start is not None and now - start < self.window_s:
                self._seen[key] = (start, dropped + 1)
                return False
            if len(self._seen) >= self._max_keys:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if dropped and start is not None:
            record.msg = f"{message} (repeated {dropped} times in {now - start:.0f} s)"
            record.args = None
        return True


def install_repeat_filter(window_s: float = 60.0) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on every handler of the root logger (after ``basicConfig``)."""
    shared = RepeatFilter(window_s)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(shared)
    return shared
