"""DynamicMIG figures: ResourceSlice rendering of a dgx-h100 (all placements of 8 GPUs) and of a GB200
NVL72 rack (18 trays of 4 GPUs; ``run_all.py`` also creates them in the API store), and the prepare
latency of a dynamic MIG claim on the simulated node, beside the same driver preparing a full GPU (the
floor: checkpoint writes and CDI spec without any MIG work).

Run: .venv/bin/python benchmarks/dynamic_mig.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.plugins.conftest import allocated_claim, result
from tests.sharing.conftest import SimNode

from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.tool.devices import driver_resources, simulated_inventory, slice_objects


def _render(profile: str, nodes: int = 1) -> None:
    """Render ``nodes`` nodes of ``profile`` (the NVL72 rack: 18 trays), without publishing."""
    inv = simulated_inventory(profile)
    gates = parse_feature_gates("DynamicMIG=true")
    times = []
    for _ in range(50 if nodes == 1 else 9):
        t0 = time.perf_counter()
        objs = []
        for n in range(nodes):
            res = driver_resources(inv, f"n{n}", gates)
            objs += slice_objects(res, driver="gpu.nvidia.com", node_name=f"n{n}")
        times.append((time.perf_counter() - t0) * 1000)
    devices = sum(len(o["spec"].get("devices", [])) for o in objs)
    print(
        f"render {profile} x {nodes} DynamicMIG: {devices} devices in {len(objs)} slices, "
        f"p50 {statistics.median(times):.2f} ms"
    )


def _prepare(device: str, n: int = 40) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        sim = SimNode(Path(tmp))
        driver = sim.driver("DynamicMIG=true")
        out = []
        for _ in range(n):
            uid = str(uuid.uuid4())
            claim = allocated_claim([result(device)], uid=uid)
            t0 = time.perf_counter()
            res = driver.prepare_resource_claims([claim])[uid]
            out.append((time.perf_counter() - t0) * 1000)
            assert res.error == "", res.error
            driver.unprepare_resource_claims(
                [ClaimRef(namespace="default", name=claim["metadata"]["name"], uid=uid)]
            )
        sim.close()
    return out


def main() -> None:
    """Print the figures."""
    _render("dgx-h100")
    _render("gb200-nvl72-tray", nodes=18)  # a GB200 NVL72 rack
    mig = _prepare("gpu-0-mig-1g10gb-19-3")
    full = _prepare("gpu-1")
    print(f"prepare dynamic MIG claim (create GI+CI, CDI caps): p50 {statistics.median(mig):.2f} ms")
    print(f"prepare full-GPU claim on the same driver (floor): p50 {statistics.median(full):.2f} ms")


if __name__ == "__main__":
    main()
