"""Node profiles: built-ins load with the required hardware facts; bad profiles fail precisely."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from nvdra.core.errors import ConfigError
from nvdra.nvml import PROFILE_NAMES, SimulatedNvml, load_profile
from nvdra.nvml._profile import MODELS_FILE, builtin_models
from nvdra.nvml.discovery import mig_profile_name


def test_profile_names_match_files() -> None:
    """PROFILE_NAMES lists exactly the node profile files shipped in the package."""
    files = {p.name for p in resources.files("nvdra.nvml").joinpath("profiles").iterdir()}
    assert {f"{n}.yaml" for n in PROFILE_NAMES} | {MODELS_FILE} == {f for f in files if f.endswith(".yaml")}


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_builtin_profile_loads(name: str) -> None:
    """Every built-in profile validates and builds a simulator."""
    profile = load_profile(name)
    assert profile.name == name
    assert SimulatedNvml(profile).profile is profile


def test_model_names_follow_the_naming_rule() -> None:
    """Every MIG profile name in gpu-models.yaml is what go-nvlib's rule computes from its memory."""
    for model in builtin_models().values():
        for p in model.mig_profiles:
            computed = mig_profile_name(
                memory_size_mb=p.memory_mb,
                total_memory_bytes=model.memory_mib * 1024 * 1024,
                gi_slices=p.compute_slices,
                profile_enum=p.profile_enum,
            )
            assert computed == p.name, (model.key, p.id)


def test_dgx_a100_facts() -> None:
    """dgx-a100: 8x A100-SXM4-40GB at the DGX bus ids, 6 switches x 2 links, no fabric info, MIG off."""
    p = load_profile("dgx-a100")
    assert [g.bus_id[9:11] for g in p.gpus] == ["07", "0F", "47", "4E", "87", "90", "B7", "BD"]
    assert {g.model.name for g in p.gpus} == {"NVIDIA A100-SXM4-40GB"}
    assert {g.model.memory_mib for g in p.gpus} == {40960}
    assert [n for _, n in p.nvlink.switches] == [2] * 6
    assert p.fabric is None
    assert not any(g.mig_enabled for g in p.gpus)


def test_dgx_h100_facts() -> None:
    """dgx-h100: FM-guide bus ids, module ids 1-8, 4+4+5+5 links, fabric completed with zero cluster."""
    p = load_profile("dgx-h100")
    assert [g.bus_id[9:11] for g in p.gpus] == ["1B", "43", "52", "61", "9D", "C3", "D1", "DF"]
    assert [g.module_id for g in p.gpus] == list(range(1, 9))
    assert {g.numa_node for g in p.gpus} == {0, 1}
    assert [n for _, n in p.nvlink.switches] == [4, 4, 5, 5]
    assert p.fabric is not None and p.fabric.state == 3
    assert p.fabric.cluster_uuid == "00000000-0000-0000-0000-000000000000"


def test_gb200_tray_facts() -> None:
    """gb200-nvl72-tray: 4 GPUs in Grace PCI domains, ATS, 18 links, non-zero cluster UUID and clique."""
    p = load_profile("gb200-nvl72-tray")
    assert [g.bus_id for g in p.gpus] == [
        "00000008:01:00.0",
        "00000009:01:00.0",
        "00000018:01:00.0",
        "00000019:01:00.0",
    ]
    assert [g.module_id for g in p.gpus] == [1, 2, 3, 4]
    assert {g.addressing_mode for g in p.gpus} == {2}
    assert sum(n for _, n in p.nvlink.switches) == 18
    assert p.fabric is not None
    assert p.fabric.cluster_uuid != "00000000-0000-0000-0000-000000000000"
    assert p.fabric.clique_id != 0


def test_bridge_count_is_a_parameter() -> None:
    """pcie-a100-nvlink defaults to 3 bridges per pair; overrides change it."""
    assert load_profile("pcie-a100-nvlink").nvlink.bridges_per_pair == 3
    one = load_profile("pcie-a100-nvlink", overrides={"nvlink": {"bridges_per_pair": 1}})
    assert one.nvlink.bridges_per_pair == 1
    assert one.nvlink.pairs == ((0, 1), (2, 3))


def test_models_are_shared_not_copied() -> None:
    """GPUs of one profile share one GpuModel object (one MIG table per model)."""
    p = load_profile("a100-mig")
    assert len({id(g.model) for g in p.gpus}) == 1


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


_MINIMAL = """
name: mine
driver_version: "580.105.08"
cuda_driver_version: 13000
gpu_model: H100-SXM5-80GB
gpus:
  - {bus_id: "00000000:1B:00.0"}
"""


def test_user_profile_from_path(tmp_path: Path) -> None:
    """A user YAML path loads, with built-in models available by key."""
    p = load_profile(_write(tmp_path, _MINIMAL))
    assert p.gpus[0].model.name == "NVIDIA H100 80GB HBM3"
    assert p.gpus[0].numa_node is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_MINIMAL.replace("00000000:1B:00.0", "0000:1b:00.0"), "gpus[0].bus_id"),
        (_MINIMAL + "colour: blue\n", "$.colour"),
        (_MINIMAL.replace("H100-SXM5-80GB", "H900"), "gpus[0].model"),
        (_MINIMAL.replace("cuda_driver_version: 13000", "cuda_driver_version: x"), "cuda_driver_version"),
        (_MINIMAL + "fabric: {state: done}\n", "fabric.state"),
        (_MINIMAL + "fabric_manager: {mode: 3}\n", "fabric_manager.mode"),
        (_MINIMAL + "fabric_manager: {mode: 0, restart: true}\n", "fabric_manager.restart"),
        (_MINIMAL + "fabric_manager: {mode: 0}\n", "$.fabric_manager"),  # no NVSwitch: no FM
        (
            _MINIMAL.replace(
                '{bus_id: "00000000:1B:00.0"}',
                '{bus_id: "00000000:1B:00.0", mig: {enabled: true, devices: [{profile: 1g.10gb, start: 7}]}}',
            ),
            "devices[0].start",
        ),
        (
            _MINIMAL.replace(
                '{bus_id: "00000000:1B:00.0"}',
                '{bus_id: "00000000:1B:00.0", mig: {enabled: true, '
                "devices: [{profile: 3g.40gb, start: 0}, {profile: 4g.40gb, start: 0}]}}",
            ),
            "mig.devices[1]",
        ),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    """An invalid profile raises ConfigError whose path holds the file name and the field."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        SimulatedNvml(load_profile(path))
    assert str(path) in info.value.path
    assert field in info.value.path


def test_profiles_declare_their_fabric_manager_mode() -> None:
    """NVSwitch boards declare FABRIC_MODE (dgx-h100/dgx-a100/a100-mig 0, hgx-h200 1); others run none."""
    modes = {name: load_profile(name).fabric_manager_mode for name in PROFILE_NAMES}
    assert modes == {
        "a100-mig": 0,
        "dgx-a100": 0,
        "dgx-h100": 0,
        "gb200-nvl72-tray": None,
        "hgx-h200": 1,
        "pcie-a100-nvlink": None,
        "pcie-l4": None,
    }


def test_unknown_profile_name() -> None:
    """An unknown name that is no file lists the built-in names."""
    with pytest.raises(ConfigError, match="dgx-h100"):
        load_profile("dgx-z900")
