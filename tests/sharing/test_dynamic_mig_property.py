"""Property: allocations the published counters allow never fail for placement reasons, never overlap."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvdra.core.quantity import parse_quantity
from nvdra.core.sharing import render_dynamic_mig
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile
from nvdra.nvml.executor import MigExecutor, MigKey

_BACKEND = SimulatedNvml(load_profile("dgx-h100"))
_BACKEND.init()
_LAYOUT = render_dynamic_mig(discover_inventory(_BACKEND))
assert _LAYOUT is not None
_GPU = _LAYOUT.gpus[0]
assert _GPU.counter_set is not None
_CAPACITY = {k: parse_quantity(v["value"]) for k, v in _GPU.counter_set["counters"].items()}
_DEVICES = [
    (d["name"], {k: parse_quantity(v["value"]) for k, v in d["consumesCounters"][0]["counters"].items()})
    for d in _GPU.devices
]


def _key(name: str) -> MigKey | None:
    if "-mig-" not in name:
        return None
    parts = name.split("-")
    return MigKey(parent_uuid=_GPU.gpu.uuid, profile_id=int(parts[-2]), start=int(parts[-1]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=25))
def test_counter_allowed_allocations_always_fit(steps: list[tuple[bool, int]]) -> None:
    """Random allocate/release sequences within the counters: create never fails, GIs never overlap."""
    backend = SimulatedNvml(load_profile("dgx-h100"))
    backend.init()
    ex = MigExecutor(backend)
    used: Counter[str] = Counter()
    live: list[tuple[str, dict[str, Decimal]]] = []
    for release, pick in steps:
        if release and live:
            name, counters = live.pop(pick % len(live))
            used.subtract(counters)
            key = _key(name)
            if key is not None:
                ex.destroy(key)
            continue
        fitting = [(n, c) for n, c in _DEVICES if all(used[k] + v <= _CAPACITY[k] for k, v in c.items())]
        if not fitting:
            continue
        name, counters = fitting[pick % len(fitting)]
        key = _key(name)
        if key is not None:
            ex.create(key)  # must not raise: the scheduler could have made this allocation
        used.update(counters)
        live.append((name, counters))
        slices = [s for gi in backend.snapshot().gpus[0].gpu_instances for s in gi.placement.slices]
        assert len(slices) == len(set(slices))
    assert sorted(d[0] for d in live if _key(d[0])) == sorted(
        n
        for n, _ in live
        if _key(n) is not None and ex.find(_key(n)) is not None  # type: ignore[arg-type]
    )
