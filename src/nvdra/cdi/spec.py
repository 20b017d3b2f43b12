"""The CDI spec model: frozen records mirroring ``specs-go`` and their exact JSON/YAML shape.

``to_dict()`` produces the field names and field order of the CDI Go types (``cdiVersion``, ``kind``,
``annotations``, ``devices``, ``containerEdits``; camelCase inside), omitting empty fields the way Go's
``omitempty`` does (so ``major: 0``/``minor: 0`` are left out, as in the upstream driver's specs).
``from_dict()`` is strict like the CDI loader: an unknown field or a wrongly typed value is an error.

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
from typing import Any

import attrs

from nvdra.cdi._fields import (
    JsonDict,
    annotations_field,
    int_field,
    list_field,
    list_of,
    obj,
    put,
    str_field,
    strs_field,
)
from nvdra.core.errors import CdiError


@attrs.frozen(kw_only=True)
class DeviceNode:
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

    def to_dict(self) -> JsonDict:
        """The CDI JSON object, empty fields omitted."""
        out: JsonDict = {"path": self.path}
        put(out, "hostPath", self.host_path)
        put(out, "type", self.type)
        put(out, "major", self.major)
        put(out, "minor", self.minor)
        if self.file_mode is not None:
            out["fileMode"] = self.file_mode
        put(out, "permissions", self.permissions)
        if self.uid is not None:
            out["uid"] = self.uid
        if self.gid is not None:
            out["gid"] = self.gid
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "deviceNode") -> DeviceNode:
        """Decode a ``deviceNodes[]`` entry.

        Raises:
            CdiError: unknown field, missing ``path`` or a wrongly typed value (the message has the path).
        """
        d = obj(
            raw,
            where,
            {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"},
        )
        return cls(
            path=str_field(d, "path", where, required=True),
            host_path=str_field(d, "hostPath", where),
            type=str_field(d, "type", where),
            major=int_field(d, "major", where) or 0,
            minor=int_field(d, "minor", where) or 0,
            file_mode=int_field(d, "fileMode", where),
            permissions=str_field(d, "permissions", where),
            uid=int_field(d, "uid", where),
            gid=int_field(d, "gid", where),
        )


@attrs.frozen(kw_only=True)
class Mount:
    """A bind (or other) mount into the container (``mounts[]``); ``type`` needs cdiVersion 0.4.0."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str = ""

    def to_dict(self) -> JsonDict:
        """The CDI JSON object, empty fields omitted."""
        out: JsonDict = {"hostPath": self.host_path, "containerPath": self.container_path}
        put(out, "options", list(self.options))
        put(out, "type", self.type)
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "mount") -> Mount:
        """Decode a ``mounts[]`` entry.

        Raises:
            CdiError: unknown field, missing path or a wrongly typed value.
        """
        d = obj(raw, where, {"hostPath", "containerPath", "options", "type"})
        return cls(
            host_path=str_field(d, "hostPath", where, required=True),
            container_path=str_field(d, "containerPath", where, required=True),
            options=strs_field(d, "options", where),
            type=str_field(d, "type", where),
        )


@attrs.frozen(kw_only=True)
class Hook:
    """An OCI hook to run (``hooks[]``), e.g. an ``nvidia-cdi-hook`` at ``createContainer``."""

    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None

    def to_dict(self) -> JsonDict:
        """The CDI JSON object, empty fields omitted."""
        out: JsonDict = {"hookName": self.hook_name, "path": self.path}
        put(out, "args", list(self.args))
        put(out, "env", list(self.env))
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "hook") -> Hook:
        """Decode a ``hooks[]`` entry.

        Raises:
            CdiError: unknown field, missing name/path or a wrongly typed value.
        """
        d = obj(raw, where, {"hookName", "path", "args", "env", "timeout"})
        return cls(
            hook_name=str_field(d, "hookName", where, required=True),
            path=str_field(d, "path", where, required=True),
            args=strs_field(d, "args", where),
            env=strs_field(d, "env", where),
            timeout=int_field(d, "timeout", where),
        )


@attrs.frozen(kw_only=True)
class IntelRdt:
    """Intel RDT class of service (``intelRdt``, cdiVersion 0.7.0; ``schemata``/monitoring 1.1.0)."""

    clos_id: str = ""
    l3_cache_schema: str = ""
    mem_bw_schema: str = ""
    schemata: tuple[str, ...] = ()
    enable_monitoring: bool = False

    def to_dict(self) -> JsonDict:
        """The CDI JSON object, empty fields omitted."""
        out: JsonDict = {}
        put(out, "closID", self.clos_id)
        put(out, "l3CacheSchema", self.l3_cache_schema)
        put(out, "memBwSchema", self.mem_bw_schema)
        put(out, "schemata", list(self.schemata))
        put(out, "enableMonitoring", self.enable_monitoring)
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "intelRdt") -> IntelRdt:
        """Decode ``intelRdt``.

        Raises:
            CdiError: unknown field or a wrongly typed value.
        """
        d = obj(raw, where, {"closID", "l3CacheSchema", "memBwSchema", "schemata", "enableMonitoring"})
        monitoring = d.get("enableMonitoring", False)
        if not isinstance(monitoring, bool):
            raise CdiError(f"{where}.enableMonitoring: expected a boolean, got {monitoring!r}")
        return cls(
            clos_id=str_field(d, "closID", where),
            l3_cache_schema=str_field(d, "l3CacheSchema", where),
            mem_bw_schema=str_field(d, "memBwSchema", where),
            schemata=strs_field(d, "schemata", where),
            enable_monitoring=monitoring,
        )


@attrs.frozen(kw_only=True)
class NetDevice:
    """A host network interface moved into the container (``netDevices[]``, cdiVersion 1.1.0)."""

    host_interface_name: str
    name: str

    def to_dict(self) -> JsonDict:
        """The CDI JSON object."""
        return {"hostInterfaceName": self.host_interface_name, "name": self.name}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "netDevice") -> NetDevice:
        """Decode a ``netDevices[]`` entry.

        Raises:
            CdiError: unknown field, missing name or a wrongly typed value.
        """
        d = obj(raw, where, {"hostInterfaceName", "name"})
        return cls(
            host_interface_name=str_field(d, "hostInterfaceName", where, required=True),
            name=str_field(d, "name", where, required=True),
        )


@attrs.frozen(kw_only=True)
class ContainerEdits:
    """Edits applied to a container's OCI spec. ``a + b`` appends ``b``'s edits after ``a``'s.

    Merging follows CDI's ``ContainerEdits.Append``: lists concatenate in order; a set ``intel_rdt`` on
    the right replaces the left one.
    """

    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()
    additional_gids: tuple[int, ...] = ()
    intel_rdt: IntelRdt | None = None
    net_devices: tuple[NetDevice, ...] = ()

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

    def to_dict(self) -> JsonDict:
        """The CDI JSON object in Go field order, empty fields omitted."""
        out: JsonDict = {}
        put(out, "env", list(self.env))
        put(out, "deviceNodes", [n.to_dict() for n in self.device_nodes])
        put(out, "netDevices", [n.to_dict() for n in self.net_devices])
        put(out, "hooks", [h.to_dict() for h in self.hooks])
        put(out, "mounts", [m.to_dict() for m in self.mounts])
        if self.intel_rdt is not None:
            out["intelRdt"] = self.intel_rdt.to_dict()
        put(out, "additionalGids", list(self.additional_gids))
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "containerEdits") -> ContainerEdits:
        """Decode a ``containerEdits`` object.

        Raises:
            CdiError: unknown field or a wrongly typed value (the message has the JSON path).
        """
        keys = {"env", "deviceNodes", "netDevices", "hooks", "mounts", "intelRdt", "additionalGids"}
        d = obj(raw, where, keys)
        gids = list_field(d, "additionalGids", where)
        for i, gid in enumerate(gids):
            if not isinstance(gid, int) or isinstance(gid, bool):
                raise CdiError(f"{where}.additionalGids[{i}]: expected an integer, got {gid!r}")
        rdt = d.get("intelRdt")
        return cls(
            env=strs_field(d, "env", where),
            device_nodes=list_of(DeviceNode.from_dict, d, "deviceNodes", where),
            mounts=list_of(Mount.from_dict, d, "mounts", where),
            hooks=list_of(Hook.from_dict, d, "hooks", where),
            additional_gids=tuple(gids),
            intel_rdt=None if rdt is None else IntelRdt.from_dict(rdt, f"{where}.intelRdt"),
            net_devices=list_of(NetDevice.from_dict, d, "netDevices", where),
        )


_EMPTY_EDITS = ContainerEdits()


@attrs.frozen(kw_only=True)
class Device:
    """One named device of a spec (``devices[]``); ``annotations`` need cdiVersion 0.6.0."""

    name: str
    container_edits: ContainerEdits = _EMPTY_EDITS
    annotations: Mapping[str, str] = attrs.field(factory=dict)

    def to_dict(self) -> JsonDict:
        """The CDI JSON object; ``containerEdits`` is always present (the schema requires it)."""
        out: JsonDict = {"name": self.name}
        put(out, "annotations", dict(self.annotations))
        out["containerEdits"] = self.container_edits.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "device") -> Device:
        """Decode a ``devices[]`` entry.

        Raises:
            CdiError: unknown field, missing name/containerEdits or a wrongly typed value.
        """
        d = obj(raw, where, {"name", "annotations", "containerEdits"})
        if "containerEdits" not in d:
            raise CdiError(f"{where}.containerEdits: required field missing")
        return cls(
            name=str_field(d, "name", where, required=True),
            annotations=annotations_field(d, where),
            container_edits=ContainerEdits.from_dict(d["containerEdits"], f"{where}.containerEdits"),
        )


@attrs.frozen(kw_only=True)
class Spec:
    """A CDI spec file: a kind, its devices and spec-level edits applied with any of them."""

    cdi_version: str
    kind: str
    devices: tuple[Device, ...]
    container_edits: ContainerEdits = _EMPTY_EDITS
    annotations: Mapping[str, str] = attrs.field(factory=dict)

    def to_dict(self) -> JsonDict:
        """The CDI JSON document in Go field order, empty fields omitted."""
        out: JsonDict = {"cdiVersion": self.cdi_version, "kind": self.kind}
        put(out, "annotations", dict(self.annotations))
        out["devices"] = [d.to_dict() for d in self.devices]
        put(out, "containerEdits", self.container_edits.to_dict())
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Spec:
        """Decode a whole spec document (as loaded from JSON or YAML).

        Raises:
            CdiError: unknown field, a missing required field or a wrongly typed value.
        """
        d = obj(raw, "spec", {"cdiVersion", "kind", "annotations", "devices", "containerEdits"})
        if "devices" not in d:
            raise CdiError("spec.devices: required field missing")
        edits = d.get("containerEdits")
        return cls(
            cdi_version=str_field(d, "cdiVersion", "spec", required=True),
            kind=str_field(d, "kind", "spec", required=True),
            annotations=annotations_field(d, "spec"),
            devices=list_of(Device.from_dict, d, "devices", "spec"),
            container_edits=_EMPTY_EDITS
            if edits is None
            else ContainerEdits.from_dict(edits, "spec.containerEdits"),
        )
