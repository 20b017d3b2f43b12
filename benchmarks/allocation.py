"""Allocation time and CEL throughput on a DynamicMIG node of 8 GPUs (hundreds of devices).

The node: a simulated dgx-h100 rendered in the upstream DynamicMIG layout (one counter-set slice,
then one slice per GPU holding the full GPU — consuming its whole counter set — and every MIG
profile at every placement, each consuming its capacities and memory slices): 8 x 26 = 208 devices.

Printed:
- allocation time (median of several fresh allocators) for claims of 1, 8, 56 and 64 MIG devices
  (56 = 8 GPUs x 7 one-slice instances, the node's most; 64 cannot fit: the figure is the time to
  give up under the search budget, as the scheduler gives up at its filter timeout). The claim
  limit of 32 results is lifted for the 56/64 rows, or they would be refused before searching;
- beside each, its floor measured in the same run: building the CEL input of every device up to the
  last one taken (in slice order) and running the selectors on it, which any allocation must do;
- CEL evaluations per second for the chosen engine (common-expression-language, one reused context
  per device, as the allocator runs it) and for the alternative (cel-python), when installed.

Run: ``.venv/bin/python benchmarks/allocation.py`` (cel-python: ``pip install cel-python``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from nvdra.alloc import Allocator, DeviceInput, builtin_device_classes, compile_selector
from nvdra.core.devices import Gpu
from nvdra.core.quantity import format_bytes
from nvdra.core.resourceslice import GPU_DRIVER_NAME, gpu_device
from nvdra.tool.devices import simulated_inventory

NODE = "bench-node"
CLASS_SELECTOR = builtin_device_classes()["mig.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"]
CAPACITY_SELECTOR = "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('10Gi')) < 0"


def _counter(name: str, value: int | str) -> tuple[str, dict[str, str]]:
    return name, {"value": str(value)}


def dynamic_mig_slices(profile: str = "dgx-h100") -> list[dict[str, Any]]:
    """ResourceSlices in the upstream DynamicMIG layout for every GPU of a simulated profile."""
    inventory = simulated_inventory(profile)
    counter_sets, per_gpu = [], []
    for gpu in inventory.gpus:
        counter_sets.append({"name": f"gpu-{gpu.minor}-counter-set", "counters": dict(_gpu_counters(gpu))})
        per_gpu.append(_gpu_devices(gpu, inventory))
    pool = {"name": NODE, "generation": 1, "resourceSliceCount": 1 + len(per_gpu)}

    def body(i: int, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{i:05d}-{GPU_DRIVER_NAME}-{NODE}"},
            "spec": {"driver": GPU_DRIVER_NAME, "pool": pool, "nodeName": NODE, **spec},
        }

    return [body(0, sharedCounters=counter_sets)] + [body(i + 1, devices=d) for i, d in enumerate(per_gpu)]


def _gpu_counters(gpu: Gpu) -> list[tuple[str, dict[str, str]]]:
    slices = max(p.memory_slices for p in gpu.mig_profiles)
    top = max(gpu.mig_profiles, key=lambda p: p.multiprocessors)
    return [
        _counter("multiprocessors", top.multiprocessors),
        _counter("memory", format_bytes(top.memory_mb * 1024 * 1024)),
        *(_counter(f"memory-slice-{i}", 1) for i in range(slices)),
    ]


def _gpu_devices(gpu: Gpu, inventory: Any) -> list[dict[str, Any]]:
    full = gpu_device(gpu, inventory)
    full["consumesCounters"] = [
        {"counterSet": f"gpu-{gpu.minor}-counter-set", "counters": dict(_gpu_counters(gpu))}
    ]
    devices = [full]
    for p in gpu.mig_profiles:
        for start in p.placement_starts:
            name = f"gpu-{gpu.minor}-mig-{p.name.replace('.', '').replace('+', '-')}-{p.id}-{start}"
            memory = format_bytes(p.memory_mb * 1024 * 1024)
            counters = dict(
                [
                    _counter("multiprocessors", p.multiprocessors),
                    _counter("memory", memory),
                    *(_counter(f"memory-slice-{i}", 1) for i in range(start, start + p.memory_slices)),
                ]
            )
            devices.append(
                {
                    "name": name,
                    "attributes": {
                        "type": {"string": "mig"},
                        "profile": {"string": p.name},
                        "parentUUID": {"string": gpu.uuid},
                        "productName": {"string": gpu.product_name},
                    },
                    "capacity": {
                        "memory": {"value": memory},
                        "multiprocessors": {"value": str(p.multiprocessors)},
                    },
                    "consumesCounters": [
                        {"counterSet": f"gpu-{gpu.minor}-counter-set", "counters": counters}
                    ],
                }
            )
    return devices


def mig_claim(count: int) -> dict[str, Any]:
    """A claim for ``count`` one-slice MIG devices (the 1g.10gb profile)."""
    selector = {"cel": {"expression": "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'"}}
    return {
        "metadata": {"name": f"mig-{count}"},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "mig",
                        "exactly": {
                            "deviceClassName": "mig.nvidia.com",
                            "count": count,
                            "selectors": [selector],
                        },
                    }
                ]
            }
        },
    }


def _median_ms(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def allocation_rows(slices: list[dict[str, Any]]) -> None:
    classes = builtin_device_classes()
    devices = [d for s in slices for d in s["spec"].get("devices") or []]
    order = {d["name"]: i for i, d in enumerate(devices)}
    claim_sel = mig_claim(1)["spec"]["devices"]["requests"][0]["exactly"]["selectors"][0]["cel"]["expression"]
    sels = [compile_selector(CLASS_SELECTOR), compile_selector(claim_sel)]
    domains = frozenset(d for s in sels for d in s.domains)

    def floor(upto: int) -> None:
        # The least an allocation must do: build the CEL input of every device up to the last one it
        # takes (slice order) and run the class and request selectors on it.
        for d in devices[:upto]:
            di = DeviceInput(GPU_DRIVER_NAME, d, domains)
            if di.evaluate(sels[0]):
                di.evaluate(sels[1])

    print(f"node: {len(devices)} devices in {len(slices)} slices (8 GPUs, DynamicMIG layout)")
    header = f"{'claim':>16}  {'result':<18} {'steps':>8}  {'median ms':>10}  {'floor ms':>9}"
    print(header + "  floor = devices examined")
    for count in (1, 8, 56, 64):
        limit = 32 if count <= 32 else 64
        outcomes: list[Any] = []

        def run(count: int = count, limit: int = limit, outcomes: list[Any] = outcomes) -> None:
            a = Allocator(slices, classes, node_name=NODE, max_results=limit)
            outcomes.append(a.allocate([mig_claim(count)]))

        ms = _median_ms(run, 5 if count < 64 else 1)
        o = outcomes[-1]
        result = "allocated" if o.ok else ("gave up (budget)" if o.exhausted else "no allocation")
        taken = [order[r["device"]] for r in o.allocations[0]["devices"]["results"]] if o.allocations else []
        upto = max(taken) + 1 if taken else len(devices)
        floor_ms = _median_ms(lambda upto=upto: floor(upto), 5)
        print(f"{count:>10} x MIG  {result:<18} {o.steps:>8}  {ms:>10.1f}  {floor_ms:>9.1f}  {upto}")


def cel_rows(slices: list[dict[str, Any]]) -> None:
    devices = [d for s in slices for d in s["spec"].get("devices") or []]
    n = 20
    for expression in (CLASS_SELECTOR, CAPACITY_SELECTOR):
        sel = compile_selector(expression)
        inputs = [DeviceInput(GPU_DRIVER_NAME, d, sel.domains) for d in devices]
        t0 = time.perf_counter()
        for _ in range(n):
            for di in inputs:
                di.evaluate(sel)
        rate = n * len(inputs) / (time.perf_counter() - t0)
        print(f"common-expression-language (chosen): {rate:>10,.0f} evals/s  {expression}")
    t0 = time.perf_counter()
    for d in devices:
        DeviceInput(GPU_DRIVER_NAME, d, sel.domains)
    per = (time.perf_counter() - t0) / len(devices) * 1e6
    print(f"  building one device's context: {per:.0f} us (once per device per allocation)")
    _celpy_rows(devices)


def _celpy_rows(devices: list[dict[str, Any]]) -> None:
    try:
        import celpy
        import celpy.celtypes as ct
    except ImportError:
        print("cel-python (alternative): not installed (pip install cel-python)")
        return

    def conv(x: Any) -> Any:
        if isinstance(x, dict):
            return ct.MapType({ct.StringType(k): conv(v) for k, v in x.items()})
        return ct.StringType(x) if isinstance(x, str) else x

    activations = []
    for d in devices:
        attrs = {k: next(iter(v.values())) for k, v in d["attributes"].items() if "/" not in k}
        activations.append(
            {"device": conv({"driver": GPU_DRIVER_NAME, "attributes": {GPU_DRIVER_NAME: attrs}})}
        )
    env = celpy.Environment()
    program = env.program(env.compile(CLASS_SELECTOR))
    t0 = time.perf_counter()
    for act in activations:
        program.evaluate(act)
    rate = len(activations) / (time.perf_counter() - t0)
    print(f"cel-python (alternative):            {rate:>10,.0f} evals/s  {CLASS_SELECTOR}")
    print("  (cel-python has no quantity()/cel.bind either; its Kubernetes extensions would add more cost)")


def main() -> None:
    slices = dynamic_mig_slices()
    allocation_rows(slices)
    print()
    cel_rows(slices)


if __name__ == "__main__":
    main()
