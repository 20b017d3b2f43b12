"""DriverResources.with_devices: what every device view's decorate does to the published resources."""

from __future__ import annotations

from nvdra.kubeletplugin.types import DriverResources, JsonObject, Pool, Slice

COUNTERS: tuple[JsonObject, ...] = ({"name": "gpu-0-counters", "counters": {}},)


def test_with_devices_changes_only_the_devices() -> None:
    resources = DriverResources(
        pools={
            "node-a": Pool(
                slices=(
                    Slice(devices=({"name": "gpu-0"}, {"name": "gpu-1"})),
                    Slice(shared_counters=COUNTERS),
                ),
                generation=3,
            ),
            "node-b": Pool(slices=(Slice(devices=({"name": "gpu-2"},)),)),
        }
    )
    seen: list[tuple[JsonObject, ...]] = []

    def tag(devices: tuple[JsonObject, ...]) -> list[JsonObject]:
        seen.append(devices)
        return [{**d, "tagged": True} for d in devices if d["name"] != "gpu-1"]

    changed = resources.with_devices(tag)
    assert changed == DriverResources(
        pools={
            "node-a": Pool(
                slices=(Slice(devices=({"name": "gpu-0", "tagged": True},)), Slice(shared_counters=COUNTERS)),
                generation=3,
            ),
            "node-b": Pool(slices=(Slice(devices=({"name": "gpu-2", "tagged": True},)),)),
        }
    )
    assert len(seen) == 3  # once per slice, the counters-only slice too (with no devices)
    assert resources.pools["node-a"].slices[0].devices == ({"name": "gpu-0"}, {"name": "gpu-1"})  # untouched
