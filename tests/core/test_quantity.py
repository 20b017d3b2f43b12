"""Quantity parsing and canonical byte formatting."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvdra.core.quantity import format_bytes, parse_quantity


@pytest.mark.parametrize(
    ("value", "text"),
    [(192 * 1024**3, "192Gi"), (85520809984, "81559Mi"), (1000, "1000"), (1024, "1Ki"), (0, "0")],
)
def test_format_bytes(value: int, text: str) -> None:
    """Bytes take the largest binary suffix that divides them exactly."""
    assert format_bytes(value) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2Gi", 2 * 1024**3),
        ("10M", 10**7),
        ("1G", 10**9),
        ("500m", Decimal("0.5")),
        ("1e3", 1000),
        (600, 600),
    ],
)
def test_parse_quantity(text: str | int, value: int | Decimal) -> None:
    """Decimal and binary suffixes, milli units, exponents and JSON numbers parse exactly."""
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("bad", ["", "Gi", "1.2.3", "12 Gi", "1Zi", "ten"])
def test_parse_quantity_rejects(bad: str) -> None:
    """Malformed quantities raise ValueError naming the accepted forms."""
    with pytest.raises(ValueError, match="suffix"):
        parse_quantity(bad)


@given(st.integers(min_value=0, max_value=2**62))
def test_format_parse_round_trip(n: int) -> None:
    """Formatting then parsing a byte count gives it back."""
    assert parse_quantity(format_bytes(n)) == n
