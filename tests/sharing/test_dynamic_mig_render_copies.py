"""The DynamicMIG render builds each profile's values once per GPU: every device must still own its dicts."""

from __future__ import annotations

from typing import Any

from nvdra.core.sharing.dynamic_mig import render_dynamic_mig
from nvdra.tool.devices import simulated_inventory


def _dict_ids(value: Any, seen: list[int]) -> None:
    if isinstance(value, dict):
        seen.append(id(value))
        for v in value.values():
            _dict_ids(v, seen)
    elif isinstance(value, list):
        for v in value:
            _dict_ids(v, seen)


def test_no_dict_is_shared_between_devices() -> None:
    layout = render_dynamic_mig(simulated_inventory("gb200-nvl72-tray"))
    assert layout is not None
    seen: list[int] = []
    for gpu in layout.gpus:
        for device in gpu.devices:
            _dict_ids(device, seen)
    assert layout.device_count == 104
    assert len(seen) == len(set(seen)), "a rendered dict is shared between devices"


def test_mutating_one_candidate_leaves_its_siblings() -> None:
    layout = render_dynamic_mig(simulated_inventory("dgx-h100"))
    assert layout is not None
    migs = [d for d in layout.gpus[0].devices if d["attributes"]["type"] == {"string": "mig"}]
    first, second = migs[0], migs[1]
    first["attributes"]["productName"]["string"] = "changed"
    first["consumesCounters"][0]["counters"]["memory"]["value"] = "0"
    assert second["attributes"]["productName"]["string"] != "changed"
    assert second["consumesCounters"][0]["counters"]["memory"]["value"] != "0"
