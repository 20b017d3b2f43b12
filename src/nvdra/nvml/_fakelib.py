"""A fake ``libnvidia-ml.so.1`` at the C ABI, fed by a simulated node: build it, render its state, install it.

The library (``fakelib/fake_nvml.c``, built with gcc by :func:`build_fake_nvml`, never shipped as a
binary) exports the NVML entry points :class:`~nvdra.nvml.PynvmlBackend` reaches through an unchanged
nvidia-ml-py, with nvml.h's struct layouts, version words and return codes. It answers from a state
file that :func:`render_fake_nvml_state` writes from a :class:`~nvdra.nvml.SimulatedNvml`, so the real
backend can be run, in CI and without a GPU, on every simulated profile. :func:`install_fake_nvml`
puts both into a generated driver root where a real node has them
(``usr/lib64/libnvidia-ml.so.<driver version>``, found through the ``libnvidia-ml.so.1`` link), so a
plugin started with ``--nvidia-driver-root`` and no ``--simulate`` loads it by the normal search.

State file (one record a line; ``-`` = NVML answers NOT_SUPPORTED)::

    nvdra-fake-nvml 1
    driver <version>                cuda <integer>          events <supported mask, hex>
    fabric_version <1|2|3>          newest nvmlGpuFabricInfo struct the "driver" knows (older ones
                                    answer ARGUMENT_VERSION_MISMATCH, as an older driver does)
    mig_uuid_namespace <uuid>       MIG UUIDs are uuid5(namespace, "<gpu uuid>/gi<g>/ci<c>/<start>+<size>")
    fail <function> <code> [count]  that entry point answers <code> (count times, default always)
    capabilities <root>             the kernel driver's part: the MIG capability files
                                    ``proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<g>[/ci<c>]/access``
                                    and ``dev/nvidia-caps/nvidia-cap<minor>`` under <root> come and go
                                    with GIs and CIs
    fabric <state> <status> <cluster uuid> <clique id> <health mask> <health summary>
    gpu <index> <uuid> <minor> <bus id> <pci device id, hex> <brand> <arch> <cc major> <cc minor>
        <memory bytes> <module id> <numa|-> <addressing mode|-> <name…>
    mig <index> <memory slices> <compute slices>
    profile <index> <enum> <id> <compute slices> <instances> <SMs> <CE> <DEC> <ENC> <JPG> <OFA>
        <memory MB> <placement size> <start,start,…> <name…>
    link <index> <link> <active> <version> <remote type> <remote bus id|->
    compute <index> <mode>          migmode <index> <current> <pending>          lost <index>
    processes <index> <count>       processes on the GPU (a MIG mode change answers IN_USE)
    gi <index> <gi id> <profile id> <start> <size> <compute slices>
    ci <index> <gi id> <ci id> <ci profile id> <MIG uuid> [<processes>]   (destroy answers IN_USE)

The last six kinds are the hardware state: the library rewrites them (atomically) after every
change, and reads the file on the first ``nvmlInit`` of a process (again after its last shutdown), so
a restarted plugin sees what its predecessor made; two processes running at once do not see each
other's changes until then (unlike one real GPU). Events are read from ``<state>.events`` while a
wait runs: ``event <gpu> <type hex> <data> <gi> <ci>`` or ``lost <gpu>`` (see
:func:`append_fake_nvml_event`).
"""

from __future__ import annotations

__all__ = [
    "FAKE_NVML_SONAME",
    "FAKE_NVML_STATE_ENV",
    "FAKE_NVML_STATE_FILE",
    "append_fake_nvml_event",
    "build_fake_nvml",
    "fake_nvml_source",
    "install_fake_nvml",
    "lose_fake_nvml_gpu",
    "render_fake_nvml_state",
]

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from nvdra.core.errors import HostError
from nvdra.nvml import _backend as b
from nvdra.nvml._profile import NodeProfile
from nvdra.nvml._simevents import SUPPORTED_EVENTS, link_remotes
from nvdra.nvml._simstate import _MIG_NAMESPACE
from nvdra.nvml._simulated import SimulatedNvml

FAKE_NVML_STATE_ENV = "NVDRA_FAKE_NVML_STATE"
"""Environment variable naming the state file (overrides the file beside the library)."""
FAKE_NVML_STATE_FILE = "nvdra-fake-nvml.state"
"""The state file's name beside the library."""
FAKE_NVML_SONAME = "libnvidia-ml-nvdra-fake.so.1"
"""The fake's soname (never ``libnvidia-ml.so.1``: see :func:`build_fake_nvml`)."""
_MIB = 1024 * 1024


def fake_nvml_source() -> Path:
    """The C source of the fake library."""
    return Path(str(resources.files("nvdra.nvml").joinpath("fakelib/fake_nvml.c")))


def build_fake_nvml(out_dir: Path, *, omit: Sequence[str] = (), cc: str = "gcc") -> Path:
    """Compile the fake library to ``out_dir/libnvidia-ml.so.1``.

    Args:
        out_dir: where to put the library (created if missing).
        omit: entry points to leave unexported, as an older driver lacks them (pynvml then raises
            FUNCTION_NOT_FOUND for them), e.g. ``("nvmlDeviceGetGpuFabricInfoV",)``.
        cc: the C compiler.

    Raises:
        HostError: the compiler is missing or fails (its output is in the message).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "libnvidia-ml.so.1"
    cmd = [cc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-pthread"]
    # Its own soname: once loaded by path, a library is also found by its soname, and a process's later
    # dlopen("libnvidia-ml.so.1") (pynvml without a driver root, a GPU test) must reach the real one.
    cmd += [f"-Wl,-soname,{FAKE_NVML_SONAME}", "-o", str(target), str(fake_nvml_source())]
    if omit:
        script = out_dir / "exports.map"
        script.write_text("{ global: *; local: " + " ".join(f"{name};" for name in omit) + " };\n")
        cmd.append(f"-Wl,--version-script={script}")
    if shutil.which(cc) is None:
        raise HostError(f"cannot build the fake NVML library: no C compiler {cc!r} on PATH")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HostError(f"building the fake NVML library failed ({' '.join(cmd)}):\n{done.stderr.strip()}")
    return target


def _as_backend(node: SimulatedNvml | NodeProfile | str) -> SimulatedNvml:
    return node if isinstance(node, SimulatedNvml) else SimulatedNvml(node)


def render_fake_nvml_state(
    node: SimulatedNvml | NodeProfile | str,
    *,
    fabric_version: int = 3,
    faults: Iterable[tuple[str, int]] = (),
    capabilities: Path | None = None,
) -> str:
    """The state file of a simulated node as it is now (MIG devices, modes and lost GPUs included).

    Args:
        node: a simulated backend (its current state is used), a profile, or a profile name/path.
        fabric_version: newest ``nvmlGpuFabricInfo`` version the fake driver knows (1-3).
        faults: ``(entry point, NVML code)`` pairs the library answers with, always.
        capabilities: the driver root whose MIG capability files the library keeps up to date.
    """
    if fabric_version not in (1, 2, 3):
        raise ValueError(f"fabric_version {fabric_version}: must be 1, 2 or 3")
    backend = _as_backend(node)
    profile = backend.profile
    snapshot = backend.snapshot()
    lines = [
        "nvdra-fake-nvml 1",
        f"driver {profile.driver_version}",
        f"cuda {profile.cuda_driver_version}",
        f"events {SUPPORTED_EVENTS:x}",
        f"fabric_version {fabric_version}",
        f"mig_uuid_namespace {_MIG_NAMESPACE}",
    ]
    lines += [f"fail {name} {code}" for name, code in faults]
    if capabilities is not None:
        lines.append(f"capabilities {capabilities}")
    f = profile.fabric
    if f is not None:
        lines.append(
            f"fabric {f.state} {f.status} {f.cluster_uuid} {f.clique_id} {f.health_mask} {f.health_summary}"
        )
    for spec, state in zip(profile.gpus, snapshot.gpus, strict=True):
        m = spec.model
        numa = "-" if spec.numa_node is None else str(spec.numa_node)
        addressing = "-" if spec.addressing_mode is None else str(spec.addressing_mode)
        lines.append(
            f"gpu {spec.index} {spec.uuid} {spec.minor} {spec.bus_id} {(m.pci_device_id << 16) | 0x10DE:x} "
            f"{m.brand} {m.architecture} {m.cuda_compute_capability[0]} {m.cuda_compute_capability[1]} "
            f"{m.memory_mib * _MIB} {spec.module_id} {numa} {addressing} {m.name}"
        )
        lines.append(f"compute {spec.index} {state.compute_mode}")
        if state.lost:
            lines.append(f"lost {spec.index}")
        if state.processes:
            lines.append(f"processes {spec.index} {state.processes}")
        if m.mig_capable:
            lines.append(f"mig {spec.index} {m.mig_memory_slices} {m.mig_compute_slices}")
            lines.append(f"migmode {spec.index} {int(state.mig_current)} {int(state.mig_pending)}")
            for p in sorted(m.mig_profiles, key=lambda p: p.profile_enum):
                starts = ",".join(str(s) for s in p.placement_starts)
                lines.append(
                    f"profile {spec.index} {p.profile_enum} {p.id} {p.compute_slices} {p.instance_count} "
                    f"{p.multiprocessors} {p.copy_engines} {p.decoders} {p.encoders} {p.jpeg_engines} "
                    f"{p.ofa_engines} {p.memory_mb} {p.memory_slices} {starts} MIG {p.name}"
                )
        remotes = link_remotes(profile, spec)
        for link in range(m.nvlink_links):
            remote = remotes.get(link)
            if remote is None:
                lines.append(f"link {spec.index} {link} 0 {m.nvlink_version} {b.NVLINK_REMOTE_UNKNOWN} -")
            else:
                lines.append(f"link {spec.index} {link} 1 {m.nvlink_version} {remote[0]} {remote[1]}")
        for gi in state.gpu_instances:
            lines.append(
                f"gi {spec.index} {gi.gi_id} {gi.profile_id} {gi.placement.start} {gi.placement.size} "
                f"{gi.compute_slices}"
            )
            lines += [
                f"ci {spec.index} {gi.gi_id} {ci.ci_id} {ci.ci_profile_id} {ci.uuid} {ci.processes}"
                for ci in gi.compute_instances
            ]
    return "\n".join(lines) + "\n"


def install_fake_nvml(
    root: Path,
    node: SimulatedNvml | NodeProfile | str,
    library: Path,
    *,
    fabric_version: int = 3,
    faults: Iterable[tuple[str, int]] = (),
) -> Path:
    """Put the fake library and its state into a driver root made by ``make_simulated_driver_root``.

    The library replaces the placeholder ``usr/lib64/libnvidia-ml.so.<driver version>`` (a copy, so
    each root loads as its own library); the state file goes beside it, and the library keeps the
    root's MIG capability files as the kernel driver does. Returns the library's path.
    """
    backend = _as_backend(node)
    target = root / "usr/lib64" / f"libnvidia-ml.so.{backend.profile.driver_version}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    shutil.copyfile(library, target)
    target.chmod(0o755)
    soname = target.parent / "libnvidia-ml.so.1"
    if not soname.is_symlink() and not soname.exists():
        soname.symlink_to(target.name)
    state = render_fake_nvml_state(backend, fabric_version=fabric_version, faults=faults, capabilities=root)
    (target.parent / FAKE_NVML_STATE_FILE).write_text(state)
    return target


def append_fake_nvml_event(
    state_file: Path,
    index: int,
    event_type: int,
    data: int = 0,
    *,
    gi_id: int = b.NO_INSTANCE,
    ci_id: int = b.NO_INSTANCE,
) -> None:
    """Queue an event for the library's waiters (delivered to sets registered for its GPU and type)."""
    gi = -1 if gi_id == b.NO_INSTANCE else gi_id
    ci = -1 if ci_id == b.NO_INSTANCE else ci_id
    with open(f"{state_file}.events", "a", encoding="ascii") as f:
        f.write(f"event {index} {event_type:x} {data} {gi} {ci}\n")


def lose_fake_nvml_gpu(state_file: Path, index: int) -> None:
    """GPU ``index`` falls off the bus: the next event wait reads this, answers GPU_IS_LOST if the GPU is
    registered, and from then on every call on that GPU answers GPU_IS_LOST."""
    with open(f"{state_file}.events", "a", encoding="ascii") as f:
        f.write(f"lost {index}\n")
