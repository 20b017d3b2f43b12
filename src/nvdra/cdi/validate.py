"""CDI spec versions and validation: what a container runtime's CDI loader accepts.

``minimum_version`` implements CDI's ``MinimumRequiredVersion`` rules (container-device-interface
``specs-go/version.go``): never below 0.3.0; a mount ``type`` needs 0.4.0; a device-node ``hostPath`` or a
device name not starting with a letter needs 0.5.0; spec/device annotations or a dot in the class need
0.6.0; ``intelRdt`` or ``additionalGids`` need 0.7.0; ``netDevices`` or ``intelRdt.schemata``/
``enableMonitoring`` need 1.1.0 (0.8.0 and 1.0.0 changed only the Go API).

``validate_spec`` applies the loader's checks, so a spec that passes it loads in a runtime: known
``cdiVersion`` not below the minimum, valid kind and device names, unique device names, at least one
device, well-formed env entries, device nodes, hooks, mounts, Intel RDT and net devices.
"""

from __future__ import annotations

__all__ = [
    "CURRENT_VERSION",
    "EARLIEST_VERSION",
    "KNOWN_VERSIONS",
    "minimum_version",
    "parse_version",
    "validate_edits",
    "validate_spec",
]

import re
from collections.abc import Iterator, Mapping

from nvdra.cdi.names import parse_kind, validate_device_name
from nvdra.cdi.spec import ContainerEdits, Spec
from nvdra.core.errors import CdiError

KNOWN_VERSIONS: tuple[str, ...] = (
    "0.1.0",
    "0.2.0",
    "0.3.0",
    "0.4.0",
    "0.5.0",
    "0.6.0",
    "0.7.0",
    "0.8.0",
    "1.0.0",
    "1.1.0",
)
"""Every ``cdiVersion`` a current CDI loader accepts (a leading ``v`` is tolerated)."""

EARLIEST_VERSION = "0.3.0"
"""``minimum_version`` never answers below this (CDI's ``vEarliest``)."""

CURRENT_VERSION = "1.1.0"

_HOOK_NAMES = frozenset(
    {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
)
_DEVICE_TYPES = frozenset({"", "b", "c", "u", "p"})
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ANNOTATION_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ANNOTATIONS_MAX_BYTES = 256 * 1024  # Kubernetes' TotalAnnotationSizeLimitB, applied by CDI too
_UINT32_MAX = 2**32 - 1
_INT64 = range(-(2**63), 2**63)


def parse_version(version: str) -> tuple[int, int, int]:
    """``"0.5.0"`` or ``"v0.5.0"`` → ``(0, 5, 0)``.

    Raises:
        CdiError: not one of :data:`KNOWN_VERSIONS`.
    """
    bare = version.removeprefix("v")
    if bare not in KNOWN_VERSIONS:
        raise CdiError(
            f"cdiVersion {version!r} is not a known CDI version; allowed: {', '.join(KNOWN_VERSIONS)}"
        )
    major, minor, patch = (int(p) for p in bare.split("."))
    return major, minor, patch


def _all_edits(spec: Spec) -> Iterator[ContainerEdits]:
    yield spec.container_edits
    for device in spec.devices:
        yield device.container_edits


def _needs_1_1_0(spec: Spec) -> bool:
    for edits in _all_edits(spec):
        if edits.net_devices:
            return True
        rdt = edits.intel_rdt
        if rdt is not None and (rdt.schemata or rdt.enable_monitoring):
            return True
    return False


def _needs_0_7_0(spec: Spec) -> bool:
    return any(e.intel_rdt is not None or e.additional_gids for e in _all_edits(spec))


def _needs_0_6_0(spec: Spec) -> bool:
    if spec.annotations or any(d.annotations for d in spec.devices):
        return True
    _, sep, cls = spec.kind.partition("/")
    return bool(sep) and "." in cls


def _needs_0_5_0(spec: Spec) -> bool:
    if any(d.name and d.name[0] not in _LETTERS for d in spec.devices):
        return True
    return any(n.host_path for e in _all_edits(spec) for n in e.device_nodes)


def _needs_0_4_0(spec: Spec) -> bool:
    return any(m.type for e in _all_edits(spec) for m in e.mounts)


_RULES = (
    ("1.1.0", _needs_1_1_0),
    ("0.7.0", _needs_0_7_0),
    ("0.6.0", _needs_0_6_0),
    ("0.5.0", _needs_0_5_0),
    ("0.4.0", _needs_0_4_0),
)


def minimum_version(spec: Spec) -> str:
    """The lowest ``cdiVersion`` that can express everything ``spec`` uses (never below 0.3.0).

    Writing this version lets the oldest possible runtime read the file.
    """
    for version, needed in _RULES:  # newest first: the first rule that fires decides
        if needed(spec):
            return version
    return EARLIEST_VERSION


def validate_spec(spec: Spec) -> None:
    """Check ``spec`` the way a CDI loader does before accepting it.

    Raises:
        CdiError: the first problem found, naming the field and value.
    """
    declared = parse_version(spec.cdi_version)
    needed = minimum_version(spec)
    if declared < parse_version(needed):
        raise CdiError(
            f"cdiVersion {spec.cdi_version!r} is too low for the fields used; needs at least {needed}"
        )
    parse_kind(spec.kind)
    _validate_annotations(spec.annotations, "spec.annotations")
    if not spec.devices:
        raise CdiError(f"spec of kind {spec.kind!r} has no devices; at least one is required")
    seen: set[str] = set()
    for device in spec.devices:
        validate_device_name(device.name)
        if device.name in seen:
            raise CdiError(f"spec of kind {spec.kind!r} defines device {device.name!r} more than once")
        seen.add(device.name)
        _validate_annotations(device.annotations, f"device {device.name!r} annotations")
        validate_edits(device.container_edits, f"device {device.name!r}")
    validate_edits(spec.container_edits, "spec")


def _validate_annotations(annotations: Mapping[str, str], where: str) -> None:
    total = 0
    for key, value in annotations.items():
        prefix, sep, name = key.rpartition("/")
        if not _ANNOTATION_NAME.fullmatch(name) or (
            sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))
        ):
            raise CdiError(
                f"{where}: invalid key {key!r}; must be a Kubernetes qualified name ([prefix/]name)"
            )
        total += len(key) + len(value)
    if total > _ANNOTATIONS_MAX_BYTES:
        raise CdiError(f"{where}: {total} bytes; at most {_ANNOTATIONS_MAX_BYTES} allowed")


def _validate_env(env: tuple[str, ...], where: str) -> None:
    for entry in env:
        if entry.find("=") <= 0:
            raise CdiError(f"{where}: invalid environment entry {entry!r}; must be NAME=value")


def validate_edits(edits: ContainerEdits, where: str = "containerEdits") -> None:
    """Check one ``containerEdits`` block.

    Raises:
        CdiError: an entry is malformed (message names ``where`` and the entry).
    """
    _validate_env(edits.env, f"{where} env")
    _validate_device_nodes(edits, where)
    _validate_hooks(edits, where)
    for mount in edits.mounts:
        if not mount.host_path or not mount.container_path:
            raise CdiError(f"{where}: mount {mount!r} needs both hostPath and containerPath")
    for gid in edits.additional_gids:
        if not 0 <= gid <= _UINT32_MAX:
            raise CdiError(f"{where}: additional gid {gid} is not a uint32")
    rdt = edits.intel_rdt
    if rdt is not None and (
        len(rdt.clos_id) >= 4096 or rdt.clos_id in {".", ".."} or any(c in rdt.clos_id for c in "/\n")
    ):
        raise CdiError(f"{where}: intelRdt closID {rdt.clos_id!r} must be a valid file name")
    for net in edits.net_devices:
        for label, ifname in (("hostInterfaceName", net.host_interface_name), ("name", net.name)):
            if not ifname or len(ifname) > 15 or ifname in {".", ".."} or any(c in ifname for c in "/: \t\n"):
                raise CdiError(f"{where}: net device {label} {ifname!r} is not a valid interface name")


def _validate_device_nodes(edits: ContainerEdits, where: str) -> None:
    for node in edits.device_nodes:
        if not node.path:
            raise CdiError(f"{where}: device node with an empty path")
        if node.type not in _DEVICE_TYPES:
            raise CdiError(f"{where}: device node {node.path!r} has type {node.type!r}; allowed: b, c, u, p")
        if set(node.permissions) - set("rwm"):
            raise CdiError(
                f"{where}: device node {node.path!r} permissions {node.permissions!r}; allowed: rwm"
            )
        if node.major not in _INT64 or node.minor not in _INT64:
            raise CdiError(f"{where}: device node {node.path!r} major/minor out of int64 range")
        for label, ident in (("uid", node.uid), ("gid", node.gid)):
            if ident is not None and not 0 <= ident <= _UINT32_MAX:
                raise CdiError(f"{where}: device node {node.path!r} {label} {ident} is not a uint32")


def _validate_hooks(edits: ContainerEdits, where: str) -> None:
    for hook in edits.hooks:
        if hook.hook_name not in _HOOK_NAMES:
            raise CdiError(f"{where}: hook name {hook.hook_name!r}; allowed: {sorted(_HOOK_NAMES)}")
        if not hook.path.startswith("/"):
            raise CdiError(f"{where}: hook {hook.hook_name!r} path {hook.path!r} must be absolute")
        if hook.timeout is not None and not 0 < hook.timeout <= _UINT32_MAX:
            raise CdiError(f"{where}: hook {hook.path!r} timeout {hook.timeout}; must be > 0")
        _validate_env(hook.env, f"{where} hook {hook.path!r} env")
