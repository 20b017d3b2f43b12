"""Kubernetes resource.Quantity: parse and format the subset nvdra needs.

Formatting follows Kubernetes' canonical form for binary quantities: the largest power-of-1024
suffix that divides the value exactly (``85520809984`` → ``81559Mi``), else the plain integer.
Parsing accepts decimal SI (``k``, ``M``, ``G``, …), binary SI (``Ki``, ``Mi``, …), exponents and
plain numbers, and rounds fractional results up to whole units as the API server does for bytes.
"""

from __future__ import annotations

__all__ = ["format_bytes", "parse_quantity"]

import math
import re
from decimal import Decimal, InvalidOperation

_BINARY = (("Ei", 1024**6), ("Pi", 1024**5), ("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(1024),
    "Mi": Decimal(1024**2),
    "Gi": Decimal(1024**3),
    "Ti": Decimal(1024**4),
    "Pi": Decimal(1024**5),
    "Ei": Decimal(1024**6),
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)


def format_bytes(value: int) -> str:
    """Canonical Kubernetes spelling of a byte count (``192Gi``, ``81559Mi``, ``1000``)."""
    if value < 0:
        raise ValueError(f"byte count must not be negative, got {value}")
    for suffix, factor in _BINARY:
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def parse_quantity(text: str | int | float) -> Decimal:
    """Parse a Quantity string (or a JSON number) into an exact Decimal.

    Raises:
        ValueError: the text is not a Kubernetes quantity; the message names the accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a quantity")
    if isinstance(text, int | float):
        if isinstance(text, float) and not math.isfinite(text):
            raise ValueError(f"{text!r} is not a finite quantity")
        return Decimal(str(text))
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise ValueError(
            f"{text!r} is not a quantity; expected a number with an optional suffix "
            "(Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m) or exponent, e.g. 2Gi or 500M"
        )
    number, exponent, suffix = m.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"{text!r} is not a quantity") from exc
    if exponent:
        return base * (Decimal(10) ** int(exponent[1:]))
    return base * _SUFFIXES[suffix or ""]
