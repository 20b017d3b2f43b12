"""Fixtures shared with the GPU plugin tests (a simulated dgx-h100 node)."""

from __future__ import annotations

__all__ = ["cdi_schema", "driver_root", "inventory", "node"]

from tests.plugins.conftest import cdi_schema, driver_root, inventory, node
