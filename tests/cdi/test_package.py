"""The nvdra.cdi package surface: sorted exports that resolve, and a light import footprint."""

from __future__ import annotations

import subprocess
import sys

import nvdra.cdi


def _isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def test_all_is_sorted_and_resolves() -> None:
    """__all__ is sorted (ruff's isort-style order), unique, and every name exists on the package."""
    names = nvdra.cdi.__all__
    assert list(names) == sorted(names, key=_isort_key)
    assert len(set(names)) == len(names)
    assert all(hasattr(nvdra.cdi, n) for n in names)


def test_import_loads_no_sdk() -> None:
    """Importing nvdra.cdi loads none of grpc, kubernetes, pynvml or click."""
    code = (
        "import sys, nvdra.cdi; "
        "print(','.join(m for m in ('grpc', 'kubernetes', 'pynvml', 'click') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
