"""Shared fixtures for the nvml tests: initialised simulated backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nvdra.nvml import SimulatedNvml


@pytest.fixture
def sim() -> Iterator[Callable[..., SimulatedNvml]]:
    """Factory: an initialised SimulatedNvml for a profile name (shut down after the test)."""
    made: list[SimulatedNvml] = []

    def make(profile: str) -> SimulatedNvml:
        backend = SimulatedNvml(profile)
        backend.init()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        if backend.snapshot().init_refcount:
            backend.shutdown()
