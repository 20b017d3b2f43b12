"""NVIDIA container edits, rendered from a :class:`~nvdra.cdi.driverroot.DriverInstallation` (pure).

The shapes follow the upstream DRA driver's per-claim specs (nvidia-container-toolkit's nvcdi in nvml
mode, paths rewritten to the host driver root):

* common (spec-level) edits: env ``NVIDIA_CTK_LIBCUDA_DIR=<lib dir>`` and ``NVIDIA_VISIBLE_DEVICES=void``
  (so a legacy nvidia-container-runtime does not inject devices on top of CDI), the control device nodes,
  the ``nvidia-cdi-hook`` ``createContainer`` hooks (``create-symlinks``, ``enable-cuda-compat``,
  ``update-ldcache``, ``disable-device-node-modification``), read-only bind mounts of the binaries,
  GSP firmware and libraries (``ro,nosuid,nodev,rbind,rprivate``), sorted by path;
* a full GPU: its ``/dev/nvidia<minor>`` node;
* a MIG device: the parent's node plus the GI- and CI-access capability nodes (type ``c``);
* an IMEX channel: its ``/dev/nvidia-caps-imex-channels/channel<N>`` node (type ``c``, mode 0666).

Device nodes carry ``fileMode`` 438 (0666, or the real node's mode) and ``permissions: rwm`` as upstream
writes them. Everything is deterministic: equal inputs render equal edits.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_HOOK_PATH",
    "MOUNT_OPTIONS",
    "char_device_node",
    "common_edits",
    "gpu_edits",
    "imex_channel_edits",
    "mig_edits",
]

from nvdra.cdi.installation import CharDevice, DriverInstallation, MigCapNodes
from nvdra.cdi.spec import ContainerEdits, DeviceNode, Hook, Mount

DEFAULT_HOOK_PATH = "/usr/bin/nvidia-cdi-hook"
"""Where the ``nvidia-cdi-hook`` binary is on the host (upstream's default)."""

MOUNT_OPTIONS: tuple[str, ...] = ("ro", "nosuid", "nodev", "rbind", "rprivate")
"""Options of every driver file bind mount."""

_HOOK_ENV = ("NVIDIA_CTK_DEBUG=false",)
_CREATE_CONTAINER = "createContainer"


def _node(device: CharDevice, *, node_type: str = "", permissions: str = "rwm") -> DeviceNode:
    """``device`` as a spec's device node (by default an existing node, ``rwm`` as upstream writes it)."""
    return DeviceNode(
        path=device.path,
        host_path=device.host_path,
        type=node_type,
        major=device.major,
        minor=device.minor,
        file_mode=device.file_mode,
        permissions=permissions,
    )


def char_device_node(device: CharDevice) -> DeviceNode:
    """A node the host may not have yet (MIG caps, IMEX channels, fabric-imex-mgmt): the explicit type
    and numbers let the runtime create it without a stat (upstream writes them the same way)."""
    return _node(device, node_type="c", permissions="")


def _hook(hook_path: str, *args: str) -> Hook:
    return Hook(hook_name=_CREATE_CONTAINER, path=hook_path, args=("nvidia-cdi-hook", *args), env=_HOOK_ENV)


def _symlink_args(driver: DriverInstallation) -> tuple[str, ...]:
    args: list[str] = []
    for lib in driver.libraries:
        if lib.soname is None or lib.soname == lib.file_name:
            continue
        args += ["--link", f"{lib.file_name}::{lib.directory}/{lib.soname}"]
        if lib.dev_link:
            unversioned = lib.soname.rsplit(".so.", 1)[0] + ".so"
            args += ["--link", f"{lib.soname}::{lib.directory}/{unversioned}"]
    return tuple(args)


def common_edits(
    driver: DriverInstallation,
    *,
    hook_path: str = DEFAULT_HOOK_PATH,
    visible_devices_void: bool = True,
) -> ContainerEdits:
    """The spec-level edits every NVIDIA claim spec carries.

    Args:
        driver: the discovered installation.
        hook_path: host path of ``nvidia-cdi-hook``.
        visible_devices_void: add ``NVIDIA_VISIBLE_DEVICES=void`` (upstream does, for every claim).

    Returns:
        The edits: env, control device nodes, hooks, binary, firmware and library mounts.
    """
    env = [f"NVIDIA_CTK_LIBCUDA_DIR={driver.libcuda_dir}"]
    if visible_devices_void:
        env.append("NVIDIA_VISIBLE_DEVICES=void")
    hooks = []
    links = _symlink_args(driver)
    if links:
        hooks.append(_hook(hook_path, "create-symlinks", *links))
    hooks.append(_hook(hook_path, "enable-cuda-compat", f"--host-driver-version={driver.version}"))
    folders = [arg for d in driver.library_dirs for arg in ("--folder", d)]
    hooks.append(_hook(hook_path, "update-ldcache", *folders))
    hooks.append(_hook(hook_path, "disable-device-node-modification"))
    mounts = tuple(
        Mount(host_path=f.host_path, container_path=f.path, options=MOUNT_OPTIONS)
        for f in driver.mounted_files
    )
    return ContainerEdits(
        env=tuple(env),
        device_nodes=tuple(_node(n) for n in driver.control_nodes),
        hooks=tuple(hooks),
        mounts=mounts,
    )


def gpu_edits(driver: DriverInstallation, minor: int) -> ContainerEdits:
    """The edits of one full GPU: its ``/dev/nvidia<minor>`` node.

    Raises:
        CdiError: the node was not found at discovery.
    """
    return ContainerEdits(device_nodes=(_node(driver.gpu_node(minor)),))


def mig_edits(driver: DriverInstallation, parent_minor: int, caps: MigCapNodes) -> ContainerEdits:
    """The edits of one MIG device: parent GPU node, GI-access and CI-access capability nodes.

    Args:
        driver: the discovered installation.
        parent_minor: the parent GPU's minor number.
        caps: the capability nodes, from :meth:`~nvdra.cdi.driverroot.DriverRoot.mig_caps`.

    Raises:
        CdiError: the parent node was not found at discovery.
    """
    parent = _node(driver.gpu_node(parent_minor))
    return ContainerEdits(device_nodes=(parent, char_device_node(caps.gi), char_device_node(caps.ci)))


def imex_channel_edits(channel: CharDevice) -> ContainerEdits:
    """The edits of one IMEX channel, from :meth:`~nvdra.cdi.driverroot.DriverRoot.imex_channel`."""
    return ContainerEdits(device_nodes=(char_device_node(channel),))
