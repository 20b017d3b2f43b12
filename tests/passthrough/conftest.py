"""Fixtures shared with the GPU plugin tests (a simulated dgx-h100 node, short socket directories)."""

from __future__ import annotations

from tests.plugins.conftest import cdi_schema, driver_root, inventory, node, sockdir

__all__ = ["cdi_schema", "driver_root", "inventory", "node", "sockdir"]
