"""Kubernetes' CEL value types for device selectors: ``Quantity`` and ``Semver``, in plain Python.

These are the semantics of ``k8s.io/apiserver/pkg/cel/library`` (quantity and semver), independent
of any CEL engine: exact decimal comparison of quantities (``200M == 0.2G``, ``50M < 50Mi``), semver
2.0.0 parsing (strict, or normalized: leading ``v`` dropped, missing minor/patch filled, leading zeros
stripped) and precedence (pre-releases sort below the release; build metadata is ignored).

Invariants:
- a :class:`Quantity` is an exact :class:`~decimal.Decimal`; equality and ordering are numeric;
- a :class:`Semver` compares by precedence only, so two versions differing only in build metadata
  are equal, as ``blang/semver``'s ``Equals`` says.
"""

from __future__ import annotations

__all__ = ["Quantity", "Semver", "format_quantity", "parse_semver", "readable_quantity"]

import re
from decimal import Decimal
from functools import total_ordering

import attrs

from nvdra.core.quantity import parse_quantity

_DECIMAL = (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3))
_BINARY = (("Ei", 1024**6), ("Pi", 1024**5), ("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))


@attrs.frozen(order=True)
class Quantity:
    """A ``resource.Quantity`` as an exact number (bytes, counts, millicores…)."""

    value: Decimal

    @classmethod
    def parse(cls, text: str | int) -> Quantity:
        """Parse Kubernetes' spelling (``80Gi``, ``0.2G``, ``1e3``, ``5``).

        Raises:
            ValueError: not a quantity (the message names the accepted forms).
        """
        return cls(parse_quantity(text))

    def compare(self, other: Quantity) -> int:
        """-1, 0 or 1, as ``q.compareTo(r)``."""
        return (self.value > other.value) - (self.value < other.value)

    def __str__(self) -> str:
        return format_quantity(self.value)


def format_quantity(value: Decimal) -> str:
    """A readable spelling: an exact binary, then decimal, suffix when one divides; else one decimal
    place of the largest binary suffix."""
    if value == value.to_integral_value():
        whole = int(value)
        for suffix, factor in _BINARY:
            if whole and whole % factor == 0:
                return f"{whole // factor}{suffix}"
        for suffix, factor in _DECIMAL:
            if whole and whole % factor == 0:
                return f"{whole // factor}{suffix}"
        for suffix, factor in _BINARY:
            if abs(whole) >= factor:
                return f"{whole / factor:.1f}{suffix}"
        return str(whole)
    return format(value.normalize(), "f")


def readable_quantity(value: Decimal) -> str:
    """:func:`format_quantity`, followed by an approximate Gi/Ti figure when that reads better."""
    exact = format_quantity(value)
    for suffix, factor in _BINARY[:4]:
        if abs(value) >= factor and not exact.endswith(suffix):
            return f"{value / factor:.1f}{suffix} ({exact})"
    return exact


_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_LOOSE = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?([-+].*)?$")


@total_ordering
@attrs.frozen(eq=False)
class Semver:
    """A semantic version (2.0.0) with precedence ordering."""

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: str = ""

    def _pre_key(self) -> tuple[tuple[int, int | str], ...]:
        # Numeric identifiers sort below alphanumeric ones, and numerically among themselves.
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.pre)

    def compare(self, other: Semver) -> int:
        """-1, 0 or 1 by semver precedence (build metadata ignored)."""
        a, b = (self.major, self.minor, self.patch), (other.major, other.minor, other.patch)
        if a != b:
            return -1 if a < b else 1
        if self.pre == other.pre:
            return 0
        if not self.pre or not other.pre:
            return 1 if not self.pre else -1
        ka, kb = self._pre_key(), other._pre_key()
        return -1 if ka < kb else (1 if ka > kb else 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Semver) and self.compare(other) == 0

    def __lt__(self, other: Semver) -> bool:
        return self.compare(other) < 0

    def __hash__(self) -> int:
        return hash((self.major, self.minor, self.patch, self.pre))

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += "-" + ".".join(self.pre)
        return text + (f"+{self.build}" if self.build else "")


def parse_semver(text: str, *, normalize: bool = False) -> Semver:
    """Parse a semantic version; ``normalize`` accepts ``v1``, ``1.2`` and leading zeros first.

    Raises:
        ValueError: not a semantic version (says which form is expected).
    """
    candidate = text
    if normalize:
        loose = _LOOSE.match(text)
        if loose is not None:
            major, minor, patch, rest = loose.groups()
            candidate = f"{int(major)}.{int(minor or 0)}.{int(patch or 0)}{rest or ''}"
    m = _SEMVER.match(candidate)
    if m is None:
        raise ValueError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE][+BUILD])")
    major, minor, patch, pre, build = m.groups()
    return Semver(
        major=int(major),
        minor=int(minor),
        patch=int(patch),
        pre=tuple(pre.split(".")) if pre else (),
        build=build or "",
    )
