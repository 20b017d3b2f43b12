"""Simulated node profiles: YAML data files → validated, frozen :class:`NodeProfile` records.

A profile describes one node: its driver, its GPUs (each an instance of a shared GPU model with one
MIG table per model), their NVLink wiring and fabric registration, and any MIG devices that exist
at start. Built-in profiles live beside this module in ``profiles/``; a user may pass a path to a
YAML file of their own.

Node profile schema (every key is checked; unknown keys are rejected)::

    name: dgx-h100                    # required
    description: free text            # optional
    driver_version: "580.105.08"      # required, as NVML reports it
    cuda_driver_version: 13000        # required, NVML integer
    gpu_model: H100-SXM5-80GB         # default model of every GPU: a key of gpu-models.yaml or gpu_models
    gpu_models: {<key>: <model>}      # optional: extra models, same schema as profiles/gpu-models.yaml
    uuid_seed: some-text              # optional (default: name): GPU UUIDs are derived from it
    gpus:                             # required, in NVML index order
      - bus_id: "00000000:1B:00.0"    # required, NVML form (8-hex domain, upper-case hex)
        module_id: 1                  # default 0 (PCIe products)
        numa_node: 0                  # default null = NVML answers NOT_SUPPORTED
        minor: 0                      # default = index
        model: H200-SXM-141GB         # default = gpu_model
        uuid: GPU-…                   # default = derived from uuid_seed and index
        addressing_mode: ATS          # None | HMM | ATS | unsupported; default = the model's
        mig:                          # only on MIG-capable models
          enabled: true               # default false
          devices: [{profile: 1g.5gb, start: 0}]   # profile name or id; each gets its full-size CI
    nvlink:                           # default {topology: none}
      topology: nvswitch              # none | nvswitch | bridges
      switches: [{bus_id: "00000000:07:00.0", links: 4}]      # nvswitch: links of every GPU, in order
      pairs: [[0, 1]]                 # bridges: GPU index pairs
      bridges_per_pair: 3             # bridges: 1-3
      links_per_bridge: 4             # bridges
    fabric: unsupported               # nvmlDeviceGetGpuFabricInfo answers NOT_SUPPORTED (pre-Hopper), or:
    fabric: {state: completed, status: 0, cluster_uuid: <uuid>, clique_id: 0,
             health_mask: 0, health_summary: 0}
    fabric_manager: {mode: 0}         # optional: Fabric Manager runs, FABRIC_MODE 0 bare metal,
                                      # 1 Shared NVSwitch, 2 vGPU; absent = no Fabric Manager

A bad profile raises :class:`~nvdra.core.errors.ConfigError` whose path names the file and field.
"""

from __future__ import annotations

__all__ = [
    "PROFILE_NAMES",
    "GpuModel",
    "GpuSpec",
    "MigDeviceSpec",
    "MigProfileSpec",
    "NodeProfile",
    "NvLinkTopology",
    "load_profile",
]

import hashlib
import uuid as uuid_mod
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import attrs

from nvdra.core.devices import FabricInfo, MigProfile
from nvdra.core.errors import ConfigError
from nvdra.core.profiles import PROFILE_NAMES
from nvdra.nvml._backend import BUS_ID_FORM, GPU_UUID_FORM

MODELS_FILE = "gpu-models.yaml"
_ADDRESSING = {"None": 0, "HMM": 1, "ATS": 2, "unsupported": None}
_FABRIC_STATES = {"not_supported": 0, "not_started": 1, "in_progress": 2, "completed": 3}
T = TypeVar("T")


@attrs.frozen(kw_only=True)
class MigProfileSpec(MigProfile):
    """One GPU-instance profile of a GPU model (with its full-size compute instance): what discovery
    reports as a :class:`~nvdra.core.devices.MigProfile`, plus the NVML enum it is queried with."""

    profile_enum: int


@attrs.frozen(kw_only=True)
class GpuModel:
    """A GPU product: identity values and the MIG table every GPU of this model shares."""

    key: str
    name: str
    pci_device_id: int
    architecture: int
    brand: int
    cuda_compute_capability: tuple[int, int]
    memory_mib: int
    addressing_mode: int | None
    nvlink_links: int = 0
    nvlink_version: int = 0
    mig_memory_slices: int = 0
    mig_compute_slices: int = 0
    mig_profiles: tuple[MigProfileSpec, ...] = ()

    @property
    def mig_capable(self) -> bool:
        """True when the model has a MIG table."""
        return bool(self.mig_profiles)

    def mig_profile(self, ref: str | int) -> MigProfileSpec | None:
        """The MIG profile with this name or id, or None."""
        return next((p for p in self.mig_profiles if ref in (p.name, p.id)), None)


@attrs.frozen(kw_only=True)
class MigDeviceSpec:
    """A MIG device present at start: a GPU instance of ``profile_id`` at ``start`` plus its full CI."""

    profile_id: int
    start: int


@attrs.frozen(kw_only=True)
class GpuSpec:
    """One GPU of a node profile."""

    index: int
    model: GpuModel
    uuid: str
    minor: int
    bus_id: str
    module_id: int
    numa_node: int | None
    addressing_mode: int | None
    mig_enabled: bool = False
    mig_devices: tuple[MigDeviceSpec, ...] = ()


@attrs.frozen(kw_only=True)
class NvLinkTopology:
    """How the GPUs' NVLinks are wired: ``none``, through NVSwitches, or by bridges between GPU pairs."""

    topology: str = "none"
    switches: tuple[tuple[str, int], ...] = ()  # (bus id, links per GPU to it)
    pairs: tuple[tuple[int, int], ...] = ()
    bridges_per_pair: int = 0
    links_per_bridge: int = 0


@attrs.frozen(kw_only=True)
class NodeProfile:
    """A validated simulated node."""

    name: str
    description: str
    source: str  # the file it came from
    driver_version: str
    cuda_driver_version: int
    gpus: tuple[GpuSpec, ...]
    nvlink: NvLinkTopology = NvLinkTopology()
    fabric: FabricInfo | None = None  # nvmlDeviceGetGpuFabricInfoV on every GPU; None: NOT_SUPPORTED
    fabric_manager_mode: int | None = None  # FABRIC_MODE of the node's Fabric Manager; None = none runs


class _Reader:
    """Typed access to a YAML mapping that reports every problem as ``file:$.path``."""

    def __init__(self, data: Any, path: str) -> None:
        self.path = path
        if not isinstance(data, Mapping):
            raise ConfigError(path, data, "a mapping", reason="expected a mapping, got")
        self.data: Mapping[str, Any] = data
        self._seen: set[str] = set()

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: Any = attrs.NOTHING) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is attrs.NOTHING:
                raise ConfigError(
                    f"{self.path}.{key}", None, _kind_name(kind), reason="missing required field"
                )
            return default
        value = self.data[key]
        if value is None and default is None:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int,))):
            raise ConfigError(f"{self.path}.{key}", value, _kind_name(kind), reason="wrong type")
        return value

    def check(self, key: str, value: Any, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{self.path}.{key}", value, allowed)

    def done(self) -> None:
        extra = sorted(set(self.data) - self._seen)
        if extra:
            raise ConfigError(
                f"{self.path}.{extra[0]}", self.data[extra[0]], "no such field", reason="unknown field"
            )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {"str": "a string", "int": "an integer", "list": "a list", "dict": "a mapping"}.get(
            k.__name__, k.__name__
        )
        for k in kinds
    )


def _model_profile(r: _Reader) -> MigProfileSpec:
    starts = r.get("starts", list)
    r.check(
        "starts", starts, all(isinstance(s, int) and 0 <= s < 8 for s in starts), "memory-slice indices 0-7"
    )
    spec = MigProfileSpec(
        profile_enum=r.get("enum", int),
        id=r.get("id", int),
        name=r.get("name", str),
        compute_slices=r.get("slices", int),
        instance_count=r.get("instances", int),
        multiprocessors=r.get("sms", int),
        memory_mb=r.get("memory_mb", int),
        copy_engines=r.get("ce", int),
        decoders=r.get("dec", int),
        encoders=r.get("enc", int),
        jpeg_engines=r.get("jpeg", int),
        ofa_engines=r.get("ofa", int),
        placement_starts=tuple(starts),
        memory_slices=r.get("size", int),
    )
    r.check("size", spec.memory_slices, all(s + spec.memory_slices <= 8 for s in starts), "start + size <= 8")
    r.done()
    return spec


def _model(key: str, data: Any, path: str) -> GpuModel:
    r = _Reader(data, path)
    cc = r.get("cuda_compute_capability", list)
    r.check(
        "cuda_compute_capability", cc, len(cc) == 2 and all(isinstance(v, int) for v in cc), "[major, minor]"
    )
    addressing = r.get("addressing_mode", str, "None")
    r.check("addressing_mode", addressing, addressing in _ADDRESSING, ", ".join(_ADDRESSING))
    nvlink = _Reader(r.get("nvlink", dict, {}), f"{path}.nvlink")
    links, version = nvlink.get("links", int, 0), nvlink.get("version", int, 0)
    nvlink.done()
    profiles: tuple[MigProfileSpec, ...] = ()
    mem_slices = compute_slices = 0
    if "mig" in r.data:
        mig = _Reader(r.get("mig", dict), f"{path}.mig")
        mem_slices, compute_slices = mig.get("memory_slices", int), mig.get("compute_slices", int)
        raw = mig.get("profiles", list)
        profiles = tuple(_model_profile(_Reader(p, f"{path}.mig.profiles[{i}]")) for i, p in enumerate(raw))
        mig.done()
    model = GpuModel(
        key=key,
        name=r.get("name", str),
        pci_device_id=r.get("pci_device_id", int),
        architecture=r.get("architecture", int),
        brand=r.get("brand", int, 14),
        cuda_compute_capability=(cc[0], cc[1]),
        memory_mib=r.get("memory_mib", int),
        addressing_mode=_ADDRESSING[addressing],
        nvlink_links=links,
        nvlink_version=version,
        mig_memory_slices=mem_slices,
        mig_compute_slices=compute_slices,
        mig_profiles=profiles,
    )
    r.done()
    return model


def _models(data: Any, path: str) -> dict[str, GpuModel]:
    if not isinstance(data, Mapping):
        raise ConfigError(path, data, "a mapping of model key to model", reason="expected a mapping, got")
    return {str(k): _model(str(k), v, f"{path}.{k}") for k, v in data.items()}


def derive_gpu_uuid(seed: str, index: int) -> str:
    """A realistic-looking, deterministic GPU UUID (``GPU-`` + 8-4-4-4-12 lower-case hex)."""
    h = hashlib.sha256(f"nvdra-sim/{seed}/{index}".encode()).hexdigest()[:32]
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _mig(r: _Reader, model: GpuModel) -> tuple[bool, tuple[MigDeviceSpec, ...]]:
    if "mig" not in r.data:
        return False, ()
    mig = _Reader(r.get("mig", dict), f"{r.path}.mig")
    r.check("mig", model.key, model.mig_capable, "a MIG-capable model")
    enabled = mig.get("enabled", bool, False)
    devices: list[MigDeviceSpec] = []
    for i, raw in enumerate(mig.get("devices", list, [])):
        d = _Reader(raw, f"{mig.path}.devices[{i}]")
        ref, start = d.get("profile", (str, int)), d.get("start", int)
        prof = model.mig_profile(ref)
        names = ", ".join(p.name for p in model.mig_profiles)
        d.check("profile", ref, prof is not None, f"a profile of {model.key}: {names}")
        assert prof is not None
        d.check("start", start, start in prof.placement_starts, f"one of {list(prof.placement_starts)}")
        d.done()
        devices.append(MigDeviceSpec(profile_id=prof.id, start=start))
    mig.check("devices", devices, enabled or not devices, "no devices while MIG is disabled")
    mig.done()
    return enabled, tuple(devices)


def _gpu(
    raw: Any, index: int, path: str, models: Mapping[str, GpuModel], *, default_model: str, seed: str
) -> GpuSpec:
    r = _Reader(raw, path)
    model_key = r.get("model", str, default_model)
    r.check("model", model_key, model_key in models, "a key of gpu-models.yaml or gpu_models")
    model = models[model_key]
    bus_id = r.get("bus_id", str)
    r.check("bus_id", bus_id, bool(BUS_ID_FORM.match(bus_id)), "NVML form like 00000000:1B:00.0")
    uuid = r.get("uuid", str, derive_gpu_uuid(seed, index))
    r.check("uuid", uuid, bool(GPU_UUID_FORM.match(uuid)), "GPU- followed by 8-4-4-4-12 lower-case hex")
    addressing = r.get("addressing_mode", str, None)
    if addressing is not None:
        r.check("addressing_mode", addressing, addressing in _ADDRESSING, ", ".join(_ADDRESSING))
    enabled, devices = _mig(r, model)
    gpu = GpuSpec(
        index=index,
        model=model,
        uuid=uuid,
        minor=r.get("minor", int, index),
        bus_id=bus_id,
        module_id=r.get("module_id", int, 0),
        numa_node=r.get("numa_node", int, None),
        addressing_mode=model.addressing_mode if addressing is None else _ADDRESSING[addressing],
        mig_enabled=enabled,
        mig_devices=devices,
    )
    r.done()
    return gpu


def _nvlink(raw: Any, path: str, gpus: tuple[GpuSpec, ...]) -> NvLinkTopology:
    r = _Reader(raw, path)
    topology = r.get("topology", str, "none")
    r.check("topology", topology, topology in ("none", "nvswitch", "bridges"), "none, nvswitch, bridges")
    switches: list[tuple[str, int]] = []
    for i, s in enumerate(r.get("switches", list, [])):
        sr = _Reader(s, f"{path}.switches[{i}]")
        bus_id, links = sr.get("bus_id", str), sr.get("links", int)
        sr.check("bus_id", bus_id, bool(BUS_ID_FORM.match(bus_id)), "NVML form like 00000000:07:00.0")
        sr.done()
        switches.append((bus_id, links))
    pairs = tuple((int(a), int(b)) for a, b in r.get("pairs", list, []))
    topo = NvLinkTopology(
        topology=topology,
        switches=tuple(switches),
        pairs=pairs,
        bridges_per_pair=r.get("bridges_per_pair", int, 0),
        links_per_bridge=r.get("links_per_bridge", int, 0),
    )
    for g in gpus:
        links = _links_used(topo, g.index)
        r.check(
            "topology",
            topology,
            links <= g.model.nvlink_links,
            f"at most {g.model.nvlink_links} links on GPU {g.index} ({g.model.key}); wiring uses {links}",
        )
    r.check("pairs", raw.get("pairs"), all(0 <= i < len(gpus) for p in pairs for i in p), "GPU indices")
    r.check(
        "bridges_per_pair",
        topo.bridges_per_pair,
        topology != "bridges" or 1 <= topo.bridges_per_pair <= 3,
        "1-3",
    )
    r.done()
    return topo


def _links_used(topo: NvLinkTopology, index: int) -> int:
    if topo.topology == "nvswitch":
        return sum(n for _, n in topo.switches)
    if topo.topology == "bridges" and any(index in p for p in topo.pairs):
        return topo.bridges_per_pair * topo.links_per_bridge
    return 0


def _fabric(raw: Any, path: str) -> FabricInfo | None:
    if raw == "unsupported":
        return None
    r = _Reader(raw, path)
    state = r.get("state", str)
    r.check("state", state, state in _FABRIC_STATES, ", ".join(_FABRIC_STATES))
    cluster = r.get("cluster_uuid", str, "00000000-0000-0000-0000-000000000000")
    try:
        cluster = str(uuid_mod.UUID(cluster))
    except ValueError:
        r.check("cluster_uuid", cluster, False, "a UUID")
    spec = FabricInfo(
        state=_FABRIC_STATES[state],
        status=r.get("status", int, 0),
        cluster_uuid=cluster,
        clique_id=r.get("clique_id", int, 0),
        health_mask=r.get("health_mask", int, 0),
        health_summary=r.get("health_summary", int, 0),
    )
    r.done()
    return spec


_FABRIC_MODES = (0, 1, 2)


def _fabric_manager(raw: Any, path: str) -> int | None:
    if raw is None:
        return None
    r = _Reader(raw, path)
    mode = r.get("mode", int)
    r.check("mode", mode, mode in _FABRIC_MODES, "0 (bare metal), 1 (Shared NVSwitch) or 2 (vGPU)")
    r.done()
    return int(mode)


def parse_profile(data: Any, source: str, builtin_models: Mapping[str, GpuModel]) -> NodeProfile:
    """Validate a node profile mapping (already parsed from YAML) into a :class:`NodeProfile`."""
    r = _Reader(data, f"{source}:$")
    models = dict(builtin_models)
    models.update(_models(r.get("gpu_models", dict, {}), f"{source}:$.gpu_models"))
    name = r.get("name", str)
    default_model = r.get("gpu_model", str, "")
    seed = r.get("uuid_seed", str, name)
    raw_gpus = r.get("gpus", list)
    r.check("gpus", raw_gpus, len(raw_gpus) > 0, "at least one GPU")
    gpus = tuple(
        _gpu(g, i, f"{r.path}.gpus[{i}]", models, default_model=default_model, seed=seed)
        for i, g in enumerate(raw_gpus)
    )
    for key, values in (
        ("bus_id", [g.bus_id for g in gpus]),
        ("minor", [g.minor for g in gpus]),
        ("uuid", [g.uuid for g in gpus]),
    ):
        r.check("gpus", f"duplicate {key}", len(set(values)) == len(values), f"a unique {key} per GPU")
    profile = NodeProfile(
        name=name,
        description=r.get("description", str, ""),
        source=source,
        driver_version=r.get("driver_version", str),
        cuda_driver_version=r.get("cuda_driver_version", int),
        gpus=gpus,
        nvlink=_nvlink(r.get("nvlink", dict, {}), f"{r.path}.nvlink", gpus),
        fabric=_fabric(r.get("fabric", (str, dict), "unsupported"), f"{r.path}.fabric"),
        fabric_manager_mode=_fabric_manager(r.get("fabric_manager", dict, None), f"{r.path}.fabric_manager"),
    )
    r.check(
        "fabric_manager",
        profile.fabric_manager_mode,
        profile.fabric_manager_mode is None or profile.nvlink.topology == "nvswitch",
        "no fabric_manager unless nvlink.topology is nvswitch (Fabric Manager manages NVSwitches)",
    )
    r.done()
    return profile


def _read_yaml(text: str, source: str) -> Any:
    import yaml  # lazy: keeps `import nvdra.nvml` light

    # libyaml's loader when PyYAML was built with it: the built-in profiles parse ~10x faster, which
    # is most of a simulated plugin's start-up before it can register.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # a safe loader, chosen above
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, "valid YAML", reason=f"cannot parse ({exc}):") from exc


def _deep_merge(base: Any, overrides: Mapping[str, Any]) -> Any:
    if not isinstance(base, Mapping):
        return dict(overrides)
    merged = dict(base)
    for k, v in overrides.items():
        merged[k] = _deep_merge(merged.get(k), v) if isinstance(v, Mapping) else v
    return merged


def builtin_models() -> dict[str, GpuModel]:
    """The shared GPU models of ``profiles/gpu-models.yaml``."""
    text = resources.files("nvdra.nvml").joinpath("profiles", MODELS_FILE).read_text()
    return _models(_read_yaml(text, MODELS_FILE), f"{MODELS_FILE}:$")


def load_profile(name_or_path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> NodeProfile:
    """Load a built-in profile by name, or a user profile from a YAML path.

    Args:
        name_or_path: one of :data:`PROFILE_NAMES`, or a path to a YAML file.
        overrides: values deep-merged into the YAML mapping before validation, e.g.
            ``{"nvlink": {"bridges_per_pair": 1}}``.

    Returns:
        The validated profile.

    Raises:
        ConfigError: unknown name, unreadable file, or an invalid field (the path names file and field).
    """
    name = str(name_or_path)
    if name in PROFILE_NAMES:
        source = f"{name}.yaml"
        text = resources.files("nvdra.nvml").joinpath("profiles", source).read_text()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                "profile", name, f"a file path or one of {', '.join(PROFILE_NAMES)}", reason="unknown profile"
            )
        source, text = str(path), path.read_text()
    data = _read_yaml(text, source)
    if overrides:
        data = _deep_merge(data, overrides)
    return parse_profile(data, source, builtin_models())
