"""A benchmark's API server in its own process (so it does not share the plugin's or the client's GIL).

Usage: python benchmarks/_apiserver.py KUBECONFIG NODE CLAIMS — serves a FakeKube holding NODE and
CLAIMS allocated one-GPU claims (names bench-<i>, deterministic UIDs), writes KUBECONFIG, prints
"ready", and runs until stdin closes.
"""

from __future__ import annotations

import sys
import uuid

from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.tool.demo import allocated_claim


def claim_uid(i: int) -> str:
    """The UID of benchmark claim ``i`` (deterministic, so the client can name it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nvdra-bench-{i}"))


def main() -> None:
    kubeconfig, node, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = FakeKube()
    store.add_node(node)
    for i in range(count):
        claim = allocated_claim(name=f"bench-{i}", namespace="default", devices=["gpu-0"], node=node)
        claim["metadata"]["uid"] = claim_uid(i)
        store.add_claim(claim)
    with ApiServer(store) as api:
        api.write_kubeconfig(kubeconfig)
        print("ready", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
