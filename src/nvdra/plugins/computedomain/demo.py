"""``nvdra demo computedomain``: a simulated GB200 NVL72 rack running a 2-node then an 18-node workload.

The rack is 18 ``gb200-nvl72-tray`` nodes in one NVLink clique, each with the real CD plugin serving its
real unix sockets; the real controller and daemons (with the fake nvidia-imex) share one in-memory API
(:class:`~nvdra.plugins.computedomain.simcluster.SimCluster`). For each workload the demo creates a
ComputeDomain, schedules one channel claim per node, prints readiness as it converges, and tears the
domain down, checking nothing is left behind. Also runnable as ``python -m nvdra.plugins.computedomain.demo``.
"""

from __future__ import annotations

__all__ = ["run_demo"]

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nvdra.plugins.computedomain.simcluster import SimCluster

Out = Callable[[str], None]


def _workload(c: SimCluster, out: Out, name: str, size: int) -> None:
    started = time.monotonic()
    cd = c.create_domain(name, num_nodes=size)
    uid = cd["metadata"]["uid"]
    out(f"ComputeDomain {name} (numNodes {size}) created, uid {uid}")
    nodes = c.nodes[:size]
    refs = c.schedule_workload(cd, nodes)
    out(f"  {size} workload pods scheduled, one channel claim each")
    last = ""
    for rnd in range(1, 60):
        c.step()
        status = c.domain(name).get("status") or {}
        ready = sum(1 for n in status.get("nodes") or [] if n.get("status") == "Ready")
        prepared = sum(1 for n in nodes if not n.pending)
        line = (
            f"  round {rnd}: {len(status.get('nodes') or [])} daemons registered, {ready} READY, "
            f"domain {status.get('status', 'NotReady')}, {prepared}/{size} channels injected"
        )
        if line.split(": ", 1)[1] != last:
            out(line)
            last = line.split(": ", 1)[1]
        if prepared == size:
            break
    out(f"  all {size} workloads got IMEX channel 0 in {time.monotonic() - started:.2f} s")
    c.release_workload(refs, nodes)
    c.delete_domain(name)
    c.run_until("teardown", lambda: not c.leftovers(uid), max_rounds=30)
    out(
        f"  torn down: no DaemonSet, template, node label, clique, pod or CDI file left "
        f"({c.writes()} API writes so far, {c.conflicts()} conflicts)"
    )


def run_demo(out: Out = print) -> None:
    """Run the demo, printing progress through ``out``."""
    logging.disable(logging.ERROR)
    with tempfile.TemporaryDirectory() as base, tempfile.TemporaryDirectory(prefix="nvdra-cd-") as sock:
        out("Starting a simulated GB200 NVL72 rack: 18 trays x 4 GPUs, one NVLink clique ...")
        with SimCluster(Path(base), Path(sock), nodes=18) as c:
            clique = c.nodes[0].plugin.clique_id if c.nodes[0].plugin else ""
            out(f"  18 CD plugins registered (clique {clique}); controller running")
            _workload(c, out, "pair", 2)
            _workload(c, out, "rack", 18)
    logging.disable(logging.NOTSET)


if __name__ == "__main__":
    run_demo()
