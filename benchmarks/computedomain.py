"""ComputeDomain scale: time to Ready, API writes and conflicts for 2, 18, 72 and 1,000 simulated nodes.

Each size runs the real controller, CD plugin drivers and daemons (fake nvidia-imex) against one
in-memory API (``SimCluster``; 2 and 18 nodes over real unix sockets, 72 and 1,000 straight into the
driver objects). One ComputeDomain spans every node, one workload claim per node, racks of 18 trays per
NVLink clique. Printed beside the measured writes is the floor the design needs:

    controller: 1 finalizer + 1 DaemonSet + 2 templates + per clique (1 create + 1 update to Ready)
                + 2 status writes (NotReady with nodes, then Ready)
    plugins:    1 node label per node;  daemons: 1 registration patch per node

Time to Ready is wall time from creating the domain until every channel claim is prepared; the
controller's poll period is one simulation round here, so rounds are reported too.
Usage: python benchmarks/computedomain.py [sizes...]
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from pathlib import Path

from nvdra.plugins.computedomain.simcluster import SimCluster


def run(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as base, tempfile.TemporaryDirectory(prefix="cdb-") as sock:
        t0 = time.monotonic()
        with SimCluster(Path(base), Path(sock), nodes=n, sockets=n <= 18) as c:
            setup = time.monotonic() - t0
            start = time.monotonic()
            cd = c.create_domain("bench", num_nodes=n)
            c.schedule_workload(cd, c.nodes)
            rounds = c.run_until("all channels", lambda: all(not x.pending for x in c.nodes), max_rounds=100)
            ready = time.monotonic() - start
            cliques = math.ceil(n / 18)
            floor = 4 + 2 * cliques + 2 + 2 * n
            return {
                "nodes": n,
                "setup_s": setup,
                "ready_s": ready,
                "rounds": rounds,
                "writes": c.writes(),
                "controller": c.writes("controller"),
                "plugin": c.writes("plugin"),
                "daemon": c.writes("daemon"),
                "conflicts": c.conflicts(),
                "floor": floor,
            }


def main() -> None:
    logging.disable(logging.ERROR)
    sizes = [int(a) for a in sys.argv[1:]] or [2, 18, 72, 1000]
    cols = [
        "nodes",
        "setup_s",
        "ready_s",
        "rounds",
        "writes",
        "floor",
        "controller",
        "plugin",
        "daemon",
        "conflicts",
    ]
    print("  ".join(f"{c:>10}" for c in cols))
    for n in sizes:
        row = run(n)
        print("  ".join(f"{row[c]:>10.2f}" if isinstance(row[c], float) else f"{row[c]:>10}" for c in cols))


if __name__ == "__main__":
    main()
