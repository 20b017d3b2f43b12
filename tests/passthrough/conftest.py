"""Fixtures shared with the GPU plugin tests (a simulated dgx-h100 node)."""

from __future__ import annotations

from tests.plugins.conftest import cdi_schema, driver_root, inventory, node

__all__ = ["cdi_schema", "driver_root", "inventory", "node"]
