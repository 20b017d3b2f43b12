"""ComputeDomain scale: time to Ready, API writes and conflicts for 2, 18, 72 and 1,000 simulated nodes.

Each size runs the real controller, CD plugin drivers and daemons (fake nvidia-imex) against one
in-memory API (``SimCluster``; 2 and 18 nodes over real unix sockets, 72 and 1,000 straight into the
driver objects). One ComputeDomain spans every node, one workload claim per node, racks of 18 trays per
NVLink clique. Printed beside the measured writes is the floor the design needs:

    controller: 1 finalizer + 1 DaemonSet + 2 templates + per clique (1 create + 1 update to Ready)
                + 2 status writes (NotReady with nodes, then Ready)
    plugins:    1 node label per node;  daemons: 1 registration patch per node

Time to Ready is wall time from creating the domain until every channel claim is prepared; the
controller's poll period is one simulation round here, so rounds are reported too. ``ms_per_node`` is
that time per node: flat when the work grows as O(N); ``ready_cpu_s`` is this process's CPU time
meanwhile (less sensitive to other jobs on the machine than the wall time). Each node's plugin state
(checkpoint, CDI specs, driver root) lives under ``--state-dir`` (default: /dev/shm where it exists,
else the temp dir): on one machine the 1,000 nodes' durable writes (7 fsynced files each) would
otherwise all queue on one disk, which measures that disk rather than the design; ``--state-dir
/tmp`` shows it.
Usage: python benchmarks/computedomain.py [sizes...] [--state-dir DIR] [--out FILE.json]

``python benchmarks/computedomain.py idle [nodes] [window_s]`` measures the API requests per minute of an
idle ComputeDomain (default 100 nodes, all Ready, nothing changing): the controller and every daemon as
they run now (list+watch informers, resync every 5 min) against the same converged state served the
old way (the controller listing six queries every second, each daemon GETting its clique every
second). Both are counted at the API (every list, get, watch request and write). The watch side is
measured over ``window_s`` of wall time with the production settings; a watch request the server ends
after its timeout (5 min) is renewed without a list: those renewals, which do not fall into a short
window, are measured in a second run whose watches last 5 s, and scaled by 5/300. With
``--leader-election-enabled`` the controller also renews its Lease every 2 s (GET + PUT: 60 requests/min),
with either model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nvdra.imex import CLIQUE_LABEL, DOMAIN_LABEL, Settings
from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.objects import PODS
from nvdra.plugins.computedomain.controller import ComputeDomainController
from nvdra.plugins.computedomain.daemon import DaemonSettings, ImexDaemon
from nvdra.plugins.computedomain.fakeimex import FakeImexRunner, ImexFabric
from nvdra.plugins.computedomain.kube import COMPUTE_DOMAINS
from nvdra.plugins.computedomain.simcluster import CLUSTER_UUID, SimCluster


def default_state_dir() -> str | None:
    """/dev/shm when this machine has it (a tmpfs), else None (the temp dir)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def run(n: int, state_dir: str | None = None) -> dict[str, float]:
    """One n-node domain to Ready; node state under ``state_dir`` (None: the temp dir)."""
    with (
        tempfile.TemporaryDirectory(dir=state_dir) as base,
        tempfile.TemporaryDirectory(prefix="cdb-") as sock,
    ):
        t0 = time.monotonic()
        with SimCluster(Path(base), Path(sock), nodes=n, sockets=n <= 18) as c:
            setup = time.monotonic() - t0
            start, cpu = time.monotonic(), time.process_time()
            cd = c.create_domain("bench", num_nodes=n)
            c.schedule_workload(cd, c.nodes)
            rounds = c.run_until("all channels", lambda: all(not x.pending for x in c.nodes), max_rounds=100)
            ready, ready_cpu = time.monotonic() - start, time.process_time() - cpu
            cliques = math.ceil(n / 18)
            floor = 4 + 2 * cliques + 2 + 2 * n
            return {
                "nodes": n,
                "setup_s": setup,
                "ready_s": ready,
                "ready_cpu_s": ready_cpu,
                "rounds": rounds,
                "writes": c.writes(),
                "controller": c.writes("controller"),
                "plugin": c.writes("plugin"),
                "daemon": c.writes("daemon"),
                "conflicts": c.conflicts(),
                "floor": floor,
                "ms_per_node": ready * 1000 / n,
            }


def _converged(n: int, base: Path) -> tuple[FakeKube, Settings, list[ImexDaemon]]:
    """A Ready n-node domain (pods registered and Ready, cliques and status written) and its daemons."""
    kube = FakeKube()
    settings = Settings(namespace="nvdra", max_nodes=18)
    cd = kube.create_object(
        COMPUTE_DOMAINS,
        {
            "apiVersion": "resource.nvidia.com/v1beta1",
            "kind": "ComputeDomain",
            "metadata": {"name": "idle", "namespace": "default"},
            "spec": {"numNodes": n, "channel": {"resourceClaimTemplate": {"name": "idle-channel"}}},
        },
    )
    uid = cd["metadata"]["uid"]
    fabric = ImexFabric()
    daemons = []
    for i in range(n):
        node, clique, ip = f"node-{i:04d}", f"{CLUSTER_UUID}.{i // 18 + 1}", f"10.{i // 250}.{i % 250}.1"
        kube.add_node(node, labels={DOMAIN_LABEL: uid})
        pod: dict[str, Any] = {
            "metadata": {
                "name": f"daemon-{i:04d}",
                "namespace": "nvdra",
                "labels": {DOMAIN_LABEL: uid, CLIQUE_LABEL: clique},
            },
            "spec": {"nodeName": node},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
        }
        kube.objects.put(PODS, pod)
        hosts = base / node / "hosts"
        hosts.parent.mkdir(parents=True)
        daemon_settings = DaemonSettings(
            clique_id=clique,
            domain_uid=uid,
            domain_name="idle",
            domain_namespace="default",
            node_name=node,
            pod_ip=ip,
            pod_name=pod["metadata"]["name"],
            pod_namespace="nvdra",
            imexd_dir=base / node / "imexd",
            hosts_path=hosts,
        )
        daemons.append(ImexDaemon(daemon_settings, kube, FakeImexRunner(fabric, hosts)))
    lister = ComputeDomainController(kube, settings)
    for _ in range(10):
        if not lister.reconcile_once():
            break
    status = kube.get_object(COMPUTE_DOMAINS, "idle", "default").get("status") or {}
    assert status.get("status") == "Ready", status.get("status")
    return kube, settings, daemons


def _count(kube: FakeKube) -> Counter[str]:
    return Counter(c.verb for c in kube.calls())


def _watched(
    kube: FakeKube, settings: Settings, daemons: list[ImexDaemon], window_s: float, watch_timeout_s: float
) -> Counter[str]:
    """Requests of the controller and the daemons as they run (watching), over ``window_s``."""
    stop = threading.Event()
    controller = ComputeDomainController(kube, settings, watch_timeout_s=watch_timeout_s)
    for daemon in daemons:
        daemon.watch_timeout_s = watch_timeout_s
    threads = [threading.Thread(target=controller.run, args=(stop,), daemon=True)]
    threads += [
        threading.Thread(target=d.run, args=(stop, 1.0), kwargs={"watch": True}, daemon=True) for d in daemons
    ]
    kube.clear_calls()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while sum(c.verb == "watch" for c in kube.calls()) < 6 + len(daemons) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # let the first passes settle
    kube.clear_calls()
    time.sleep(window_s)
    watched = _count(kube)
    stop.set()
    for thread in threads:
        thread.join(10)
    return watched


def idle(n: int = 100, window_s: float = 20.0) -> dict[str, Any]:
    """Requests per minute of an idle n-node domain, polled (before) and watched (now)."""
    with tempfile.TemporaryDirectory() as tmp:
        kube, settings, daemons = _converged(n, Path(tmp))
        # Before: one second of the old loops (a listing pass, a clique GET per daemon), times 60.
        lister = ComputeDomainController(kube, settings)
        for daemon in daemons:
            daemon.register()  # the label it carries already; writes its config
            daemon.step()  # starts nvidia-imex: later steps only read
        kube.clear_calls()
        lister.reconcile_once()
        for daemon in daemons:
            daemon.step()
        polled = _count(kube)
        # Now: the controller and the daemons as they run, watched over a wall-clock window ...
        watched = _watched(kube, settings, daemons, window_s, 300.0)
        # ... and with every watch renewed each 5 s instead of 5 min: the renewals, measured, scaled.
        renewed = _watched(kube, settings, daemons, window_s, 5.0)
    return {
        "nodes": n,
        "window_s": window_s,
        "polled_per_min": 60 * sum(polled.values()),
        "polled_by_verb": dict(polled),
        "watched_per_min": sum(watched.values()) * 60 / window_s,
        "watched_by_verb": dict(watched),
        "renewals_by_verb_5s": dict(renewed),
        "watch_renewals_per_min": sum(renewed.values()) * 60 / window_s * 5.0 / 300.0,
    }


def main() -> None:
    logging.disable(logging.ERROR)
    if sys.argv[1:2] == ["idle"]:
        nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 100
        window = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
        row = idle(nodes, window)
        print(f"idle {row['nodes']}-node ComputeDomain, API requests per minute (controller + daemons):")
        polled = row["polled_per_min"]
        print(f"  before (poll every 1 s):   {polled:>8.0f}   each second: {row['polled_by_verb']}")
        print(
            f"  now (list+watch):          {row['watched_per_min']:>8.1f}   "
            f"in a {row['window_s']:.0f} s window: {row['watched_by_verb'] or 'no request'}"
        )
        renewals = row["watch_renewals_per_min"]
        measured = row["renewals_by_verb_5s"]
        print(
            f"  + watch renewals (5 min):  {renewals:>8.1f}   measured with 5 s watches: {measured}, x 5/300"
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[2, 18, 72, 1000])
    parser.add_argument("--state-dir", default=default_state_dir(), help="where the nodes' state lives")
    parser.add_argument("--out", help="also write the rows here (JSON)")
    args = parser.parse_args()
    cols = [
        "nodes",
        "setup_s",
        "ready_s",
        "ready_cpu_s",
        "ms_per_node",
        "rounds",
        "writes",
        "floor",
        "controller",
        "plugin",
        "daemon",
        "conflicts",
    ]
    print(
        f"node state under {args.state_dir or tempfile.gettempdir()}; load average {os.getloadavg()[0]:.1f}"
    )
    print("  ".join(f"{c:>11}" for c in cols))
    rows = []
    for n in args.sizes:
        row = run(n, args.state_dir)
        rows.append(row)
        print("  ".join(f"{row[c]:>11.2f}" if isinstance(row[c], float) else f"{row[c]:>11}" for c in cols))
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"state_dir": args.state_dir, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
