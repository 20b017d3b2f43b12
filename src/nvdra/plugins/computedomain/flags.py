"""Flag value types shared by the ComputeDomain commands: Go-style durations and ``-v`` verbosity.

Upstream's components are Go programs: durations are written ``15s``, ``1m30s`` or ``500ms``, and
``-v`` takes a level (``-v 4``, ``-v=4``). nvdra's commands accept those spellings and the plain forms
people also write (``15`` meaning seconds; ``-vv`` meaning 2), so a chart or an operator copying
upstream's values gets what they meant — never a silent misreading: anything else is a usage error
that names the accepted forms.
"""

from __future__ import annotations

__all__ = ["DURATION", "VERBOSITY", "Duration", "Verbosity", "parse_duration"]

import re
from typing import Any

import click

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")


def parse_duration(text: str) -> float:
    """Seconds from ``15``, ``15.5``, ``15s``, ``1m30s``, ``500ms`` (Go's ``time.ParseDuration`` units).

    Raises:
        ValueError: anything else, or a negative value.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _PART.findall(value)
        if not value or "".join(n + u for n, u in parts) != value:
            raise ValueError(
                f'"{text}" is not a duration; allowed: seconds (15) or Go units (15s, 1m30s, 500ms)'
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0:
        raise ValueError(f'"{text}" is negative; allowed: a duration of 0 or more')
    return seconds


class Duration(click.ParamType[float]):
    """A click type for :func:`parse_duration` (the value is seconds, a float)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Seconds."""
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Verbosity(click.ParamType[int]):
    """``-v`` as a level: ``4``, ``=4`` (from ``-v=4``), or ``v``/``vv`` (from ``-vv``/``-vvv``)."""

    name = "level"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """The level, 0 or more."""
        if isinstance(value, int):
            return value
        text = str(value).strip().removeprefix("=")
        if text and set(text) == {"v"}:
            return len(text) + 1  # "-vv" reaches here as "-v" with the value "v"
        if text.isdigit():
            return int(text)
        self.fail(f'"{value}" is not a log level; allowed: -v N, -v=N, or -v/-vv/-vvv', param, ctx)


DURATION = Duration()
VERBOSITY = Verbosity()
