"""The CDI spec model: frozen records mirroring ``specs-go`` and their exact JSON/YAML shape.

``to_dict()`` produces the field names and field order of the CDI Go types (``cdiVersion``, ``kind``,
``annotations``, ``devices``, ``containerEdits``; camelCase inside), omitting empty fields the way Go's
``omitempty`` does (so ``major: 0``/``minor: 0`` are left out, as in the upstream driver's specs).
``from_dict()`` is strict like the CDI loader: an unknown field or a wrongly typed value is an error.
Both come from :class:`~nvdra.cdi._fields.JsonRecord`, driven by each record's fields: declared in the Go
field order, named in camelCase (``wire()`` metadata where the Go name differs or a defaulted field is
required on the wire).

Invariants owned here: records are immutable; ``from_dict(x.to_dict()) == x`` for every record whose
integer fields are non-zero where set; a device's ``containerEdits`` is always emitted (the schema
requires it), the spec-level one only when it has content.
"""

from __future__ import annotations

__all__ = [
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "Hook",
    "IntelRdt",
    "Mount",
    "NetDevice",
    "Spec",
]

from collections.abc import Mapping

import attrs

from nvdra.cdi._fields import JsonRecord, wire


@attrs.frozen(kw_only=True)
class DeviceNode(JsonRecord):
    """A device node to create in the container (``deviceNodes[]``).

    ``host_path`` needs cdiVersion 0.5.0. ``major``/``minor`` of 0 mean "not given" (Go omitempty).
    ``file_mode`` is the numeric mode (0o666 is written as 438). ``permissions`` is a subset of ``rwm``
    (empty means ``rwm``).
    """

    path: str
    host_path: str = ""
    type: str = ""
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    permissions: str = ""
    uid: int | None = None
    gid: int | None = None


@attrs.frozen(kw_only=True)
class Mount(JsonRecord):
    """A bind (or other) mount into the container (``mounts[]``); ``type`` needs cdiVersion 0.4.0."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str = ""


@attrs.frozen(kw_only=True)
class Hook(JsonRecord):
    """An OCI hook to run (``hooks[]``), e.g. an ``nvidia-cdi-hook`` at ``createContainer``."""

    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@attrs.frozen(kw_only=True)
class IntelRdt(JsonRecord):
    """Intel RDT class of service (``intelRdt``, cdiVersion 0.7.0; ``schemata``/monitoring 1.1.0)."""

    clos_id: str = attrs.field(default="", metadata=wire("closID"))
    l3_cache_schema: str = ""
    mem_bw_schema: str = ""
    schemata: tuple[str, ...] = ()
    enable_monitoring: bool = False


@attrs.frozen(kw_only=True)
class NetDevice(JsonRecord):
    """A host network interface moved into the container (``netDevices[]``, cdiVersion 1.1.0)."""

    host_interface_name: str
    name: str


@attrs.frozen(kw_only=True)
class ContainerEdits(JsonRecord):
    """Edits applied to a container's OCI spec. ``a + b`` appends ``b``'s edits after ``a``'s.

    Merging follows CDI's ``ContainerEdits.Append``: lists concatenate in order; a set ``intel_rdt`` on
    the right replaces the left one.
    """

    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    net_devices: tuple[NetDevice, ...] = ()
    hooks: tuple[Hook, ...] = ()
    mounts: tuple[Mount, ...] = ()
    intel_rdt: IntelRdt | None = None
    additional_gids: tuple[int, ...] = ()

    def __add__(self, other: ContainerEdits) -> ContainerEdits:
        if not isinstance(other, ContainerEdits):
            return NotImplemented
        return ContainerEdits(
            env=self.env + other.env,
            device_nodes=self.device_nodes + other.device_nodes,
            mounts=self.mounts + other.mounts,
            hooks=self.hooks + other.hooks,
            additional_gids=self.additional_gids + other.additional_gids,
            intel_rdt=other.intel_rdt if other.intel_rdt is not None else self.intel_rdt,
            net_devices=self.net_devices + other.net_devices,
        )

    def is_empty(self) -> bool:
        """True when applying these edits would change nothing."""
        return self == _EMPTY_EDITS


_EMPTY_EDITS = ContainerEdits()


@attrs.frozen(kw_only=True)
class Device(JsonRecord):
    """One named device of a spec (``devices[]``); ``annotations`` need cdiVersion 0.6.0."""

    name: str
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    container_edits: ContainerEdits = attrs.field(default=_EMPTY_EDITS, metadata=wire(required=True))


@attrs.frozen(kw_only=True)
class Spec(JsonRecord):
    """A CDI spec file: a kind, its devices and spec-level edits applied with any of them."""

    cdi_version: str
    kind: str
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    devices: tuple[Device, ...]
    container_edits: ContainerEdits = _EMPTY_EDITS
