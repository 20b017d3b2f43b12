"""The DynamicMIG partitionable layout: counters, consumption, slice layouts, API validity, CLI."""

from __future__ import annotations

from click.testing import CliRunner

from nvdra.core.featuregates import parse_feature_gates
from nvdra.core.sharing import gpu_counters, qualifies_for_dynamic_mig, render_dynamic_mig
from nvdra.kubeletplugin import FakeKube
from nvdra.plugins.gpu.devices import allocatable_devices
from nvdra.tool.cli import main as cli_main
from nvdra.tool.devices import driver_resources, simulated_inventory, slice_objects

DYN = parse_feature_gates("DynamicMIG=true")


def test_dgx_h100_publishes_every_placement_and_the_full_gpu() -> None:
    """8 H100s: 25 (profile, placement) candidates + the full GPU each, one counter set per GPU."""
    layout = render_dynamic_mig(simulated_inventory("dgx-h100"))
    assert layout is not None
    assert layout.device_count == 8 * 26
    assert [c["name"] for c in layout.counter_sets] == [f"gpu-{i}-counter-set" for i in range(8)]
    names = [d["name"] for d in layout.gpus[0].devices]
    assert names == sorted(names)
    assert "gpu-0" in names and "gpu-0-mig-1g10gb-19-6" in names and "gpu-0-mig-7g80gb-0-0" in names


def test_full_gpu_consumes_every_counter_and_candidates_their_slices() -> None:
    """The full GPU consumes the whole counter set; a candidate exactly its memory slices and engines."""
    layout = render_dynamic_mig(simulated_inventory("dgx-h100"))
    assert layout is not None
    sl = layout.gpus[0]
    by_name = {d["name"]: d for d in sl.devices}
    assert sl.counter_set is not None
    full = by_name["gpu-0"]["consumesCounters"][0]
    assert full["counters"] == sl.counter_set["counters"]
    mig = by_name["gpu-0-mig-3g40gb-9-4"]
    consumed = mig["consumesCounters"][0]["counters"]
    assert sorted(k for k in consumed if k.startswith("memory-slice")) == [
        f"memory-slice-{i}" for i in range(4, 8)
    ]
    assert "uuid" not in mig["attributes"] and mig["attributes"]["type"] == {"string": "mig"}
    assert mig["attributes"]["parentUUID"] == by_name["gpu-0"]["attributes"]["uuid"]
    assert set(mig["capacity"]) == {
        "copyEngines",
        "decoders",
        "encoders",
        "jpegEngines",
        "memory",
        "multiprocessors",
        "ofaEngines",
    }


def test_both_layouts_and_their_validity_against_the_api_rules() -> None:
    """>= 1.35: counters alone in the first slice; older: each GPU slice carries its own counter set."""
    layout = render_dynamic_mig(simulated_inventory("dgx-h100"))
    assert layout is not None
    new = layout.slices(separate_counters=True)
    assert new[0][0] == () and len(new[0][1]) == 8 and all(c == () for _, c in new[1:])
    old = layout.slices(separate_counters=False)
    assert len(old) == 8 and all(len(c) == 1 and len(d) == 26 for d, c in old)
    resources = driver_resources(simulated_inventory("dgx-h100"), "n1", DYN)
    kube = FakeKube()
    for body in slice_objects(resources, driver="gpu.nvidia.com", node_name="n1"):
        kube.create_resource_slice(body)  # validates limits (64 advanced devices, counters vs devices)
    assert len(kube.resource_slices()) == 9


def test_counters_stay_within_api_limits() -> None:
    """A counter set has at most 32 counters; a device at most 2 consumptions."""
    for gpu in simulated_inventory("dgx-h100").gpus:
        assert len(gpu_counters(gpu)) <= 32


def test_ampere_qualifies_only_with_mig_on_and_publishes_no_full_gpu() -> None:
    """a100-mig: MIG-on A100s publish only candidates; MIG-off A100s keep the classic full GPU."""
    inv = simulated_inventory("a100-mig")
    assert [qualifies_for_dynamic_mig(g) for g in inv.gpus] == [True] * 4 + [False] * 4
    devices = allocatable_devices(inv, DYN)
    assert "gpu-0" not in devices and "gpu-4" in devices
    assert (
        devices["gpu-0-mig-1g5gb-19-3"].mig is None and devices["gpu-0-mig-1g5gb-19-3"].placement is not None
    )
    layout = render_dynamic_mig(inv)
    assert layout is not None
    assert [g.counter_set is None for g in layout.gpus] == [False] * 4 + [True] * 4


def test_no_qualifying_gpu_falls_back_to_the_classic_model() -> None:
    """dgx-a100 (MIG off everywhere) and pcie-l4 publish the classic devices even with DynamicMIG."""
    for profile in ("dgx-a100", "pcie-l4"):
        inv = simulated_inventory(profile)
        assert render_dynamic_mig(inv) is None
        classic = driver_resources(inv, "n1", parse_feature_gates(""))
        assert driver_resources(inv, "n1", DYN) == classic


def test_nvdra_devices_shows_the_partitionable_layout() -> None:
    """``nvdra devices --simulate dgx-h100 --feature-gates DynamicMIG=true`` lists the MIG candidates."""
    out = CliRunner().invoke(
        cli_main, ["devices", "--simulate", "dgx-h100", "--feature-gates", "DynamicMIG=true"]
    )
    assert out.exit_code == 0, out.output
    assert "gpu-7-mig-7g80gb-0-0" in out.output
    assert out.output.count("gpu-3-mig-") == 25
