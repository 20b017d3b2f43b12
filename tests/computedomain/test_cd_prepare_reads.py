"""A channel prepare reads its ComputeDomain once per attempt: the object's status lists every node, so a
second GET per attempt cost O(nodes) more on each of the domain's nodes (benchmarks/computedomain.py)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.plugins.computedomain.simcluster import SimCluster


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets."""
    with tempfile.TemporaryDirectory(prefix="nvdra-cdr-") as d:
        yield Path(d)


def _domain_gets(c: SimCluster) -> int:
    return c.counter[("plugin", "get", "computedomains")] + c.counter[("plugin", "list", "computedomains")]


def test_one_domain_get_per_channel_prepare_attempt(tmp_path: Path, sock_dir: Path) -> None:
    logging.disable(logging.ERROR)
    try:
        with SimCluster(tmp_path, sock_dir, nodes=2, sockets=False) as c:
            cd = c.create_domain("job", num_nodes=2)
            refs = c.schedule_workload(cd, c.nodes)
            node = c.nodes[0]
            before = _domain_gets(c)
            _, error = node.prepare(refs[0])  # no daemon yet: not Ready, retryable
            assert "retryable" in error and "not Ready" in error
            assert _domain_gets(c) - before == 1
            c.run_until("all channels", lambda: all(not n.pending for n in c.nodes))
            assert not node.errors and not c.nodes[1].errors
    finally:
        logging.disable(logging.NOTSET)
