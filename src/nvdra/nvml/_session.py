"""One NVML session for a process: ``init()`` before use, ``shutdown()`` after, for every backend alike.

Every process that uses NVML (the GPU plugin, the ComputeDomain plugin) opens its backend with
:func:`nvml_session`, whether the backend is the real library or a simulated node, so the real
backend starts on the very path the simulated one is tested on.

Invariants: ``shutdown`` runs only after ``init`` succeeded; an error while shutting down never
replaces the error that ended the session (it is added to that error as a note and logged), and at
a clean end it is logged, not raised, since the process is stopping anyway.
"""

from __future__ import annotations

__all__ = ["nvml_session"]

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from nvdra.core.errors import NvmlError
from nvdra.nvml._backend import NvmlBackend

log = logging.getLogger(__name__)
B = TypeVar("B", bound=NvmlBackend)


@contextmanager
def nvml_session(backend: B) -> Iterator[B]:
    """Initialise ``backend``, yield it, and shut it down; the first failure is the one that surfaces.

    Raises:
        NvmlError: ``init`` failed (e.g. :class:`~nvdra.core.errors.NvmlLibraryNotFound` naming every
            path searched, or the library's own error); nothing is shut down then.
    """
    backend.init()
    try:
        yield backend
    except BaseException as exc:
        try:
            backend.shutdown()
        except NvmlError as cleanup:
            exc.add_note(f"(while stopping, NVML shutdown also failed: {cleanup})")
            log.warning("NVML shutdown after an error failed too: %s", cleanup)
        raise
    try:
        backend.shutdown()
    except NvmlError as cleanup:
        log.warning("NVML shutdown failed: %s", cleanup)
