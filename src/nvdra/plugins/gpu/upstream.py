"""Adopt the claims the upstream Go plugin prepared: convert its ``checkpoint.json`` to nvdra's.

An operator replaces the upstream ``gpu-kubelet-plugin`` DaemonSet with nvdra in place. The kubelet does
not prepare running claims again; it will only *unprepare* them, later, and the plugin must then undo
what upstream did. So at start, before the checkpoint is loaded, an upstream file is converted.

Upstream layout (upstream-driver §4.3)::

    {"checksum": <uint64>,
     "v1": {"preparedClaims": {<uid>: {"status": <ResourceClaimStatus>, "preparedDevices": [<group>]}}},
     "v2": {"checksum": <uint64>, "nodeBootID": "<boot id>",
            "preparedClaims": {<uid>: {"checkpointState": "PrepareStarted" | "PrepareCompleted",
                                       "status": ..., "preparedDevices": [<group>],
                                       "name": "...", "namespace": "..."}}}}

    <group> = {"devices": [{"gpu": {"info": {"uuid": ...}, "device": <dev>}}
                           | {"mig": {"concrete": {"parentMinor", "giId", "ciId", "migUUID",
                                                   "parentUUID", "parentPCIBusID"}, "device": <dev>}}
                           | {"vfio": {"info": {"uuid", "pciBusID"}, "device": <dev>}}],
               "configState": {"mpsControlDaemonID": "<id>"}}
    <dev> = {"Requests": [...], "PoolName": "...", "DeviceName": "...", "CDIDeviceIDs": [...],
             "ShareID": "..." (optional)}

Conversion (one nvdra entry per claim; effect records in the order upstream applied them, so that the
driver's reverse-order undo matches upstream's unprepare):

- devices → :class:`DeviceRecord` (nvdra's CDI ids and spec file names are upstream's, so the spec upstream
  wrote is the one nvdra's unprepare removes);
- a MIG device, when DynamicMIG is on (upstream then created it at prepare) → ``mig.create`` with the
  parent UUID from ``concrete`` and the GI profile id and placement start parsed from the device name
  (``gpu-<minor>-mig-<profile>-<profileID>-<start>``, upstream's own rollback key); static MIG devices
  were made out of band and are not undone;
- a ``vfio`` device → a ``vfio-pci`` record (undo binds the GPU back to ``nvidia``);
- with TimeSlicingSettings on, a ``timeslice`` record per group with full GPUs (undo: compute mode DEFAULT,
  time slice 0 — upstream's unprepare);
- ``configState.mpsControlDaemonID`` → an ``mps`` record (undo deletes Deployment
  ``mps-control-daemon-<id>``, unmounts and removes ``<plugin dir>/mps/<id>``, compute mode DEFAULT);
- ``PrepareStarted`` entries carry no prepared devices: their devices come from the allocation in
  ``status``, and their records are what upstream's rollback undoes (dynamic MIG, parent found by minor);
  nvdra's start then rolls them back;
- a v1-only file (pre-v2 upstream): every entry is ``PrepareCompleted`` (as upstream reads it), with no
  name or namespace; ``nodeBootID`` carries over, so a reboot since upstream wrote it discards everything.

Assumptions (the upstream source is not vendored here): field names as listed above; the uint64 checksums
are not verified (they hash Go's in-memory dump of the structs) — the structure is checked strictly instead,
and a file that does not convert is left for the store, which moves it aside as corrupt. The original file
is kept as ``checkpoint.json.upstream`` for a human.
"""

from __future__ import annotations

__all__ = [
    "UPSTREAM_SUFFIX",
    "AdoptionContext",
    "AdoptionReport",
    "adopt_upstream_checkpoint",
    "convert_upstream",
    "is_upstream_checkpoint",
    "recover_plugin_dir",
]

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from nvdra.cdi import atomic_write, remove_stale_temp_files
from nvdra.core.checkpoint import Checkpoint, ClaimState, DeviceRecord, PreparedClaim, encode_checkpoint
from nvdra.core.devices import Inventory
from nvdra.core.effects import EffectRecord, effect_to_json
from nvdra.core.errors import CheckpointError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.core.resourceslice import GPU_DRIVER_NAME
from nvdra.core.sharing import MpsPlan, TimeSlice
from nvdra.plugins.gpu.cdi import CDI_CLASS, CDI_VENDOR
from nvdra.plugins.gpu.config import PluginConfig

if TYPE_CHECKING:  # the MIG and VFIO modules load only when an upstream checkpoint has such devices
    from nvdra.plugins.gpu.mig import MigCreate

log = logging.getLogger(__name__)

UPSTREAM_SUFFIX = ".upstream"
_MIG_NAME = re.compile(r"^gpu-(\d+)-mig-(.+)-(\d+)-(\d+)$")  # upstream-driver §3.2
_GPU_NAME = re.compile(r"^gpu-(\d+)$")
_KINDS = ("gpu", "mig", "vfio")

JsonObject = Mapping[str, Any]


@attrs.frozen(kw_only=True)
class AdoptionContext:
    """What conversion needs to know about this node and the gates it runs with."""

    uuid_by_minor: Mapping[int, str] = attrs.field(factory=dict)  # full GPUs (PrepareStarted entries)
    dynamic_mig: bool = False
    timeslicing: bool = False


@attrs.frozen(kw_only=True)
class AdoptionReport:
    """What adoption did: the claims it took over, where the original went, what it could not convert."""

    claims: tuple[str, ...]
    kept_as: Path
    warnings: tuple[str, ...] = ()


def is_upstream_checkpoint(doc: Any) -> bool:
    """Whether a decoded JSON document is an upstream checkpoint (has ``v1``/``v2``, is no nvdra file)."""
    return isinstance(doc, dict) and "kind" not in doc and ("v2" in doc or "v1" in doc)


def _obj(value: Any, where: str) -> JsonObject:
    if not isinstance(value, dict):
        raise CheckpointError(f"upstream checkpoint {where}: expected an object, got {value!r}")
    return value


def _pick(obj: JsonObject, names: tuple[str, ...], typ: type, where: str, default: Any = None) -> Any:
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, typ):
                raise CheckpointError(
                    f"upstream checkpoint {where}.{name}: expected {typ.__name__}, got {value!r}"
                )
            return value
    if default is not None:
        return default
    raise CheckpointError(f"upstream checkpoint {where}: missing {names[0]}")


def _device_record(dev: JsonObject, where: str) -> DeviceRecord:
    share = dev.get("ShareID", dev.get("shareID"))
    return DeviceRecord(
        requests=tuple(str(r) for r in _pick(dev, ("Requests", "requests"), list, where)),
        pool_name=_pick(dev, ("PoolName", "poolName"), str, where),
        device_name=_pick(dev, ("DeviceName", "deviceName"), str, where),
        cdi_device_ids=tuple(str(i) for i in _pick(dev, ("CDIDeviceIDs", "cdiDeviceIDs"), list, where, [])),
        share_id=str(share) if share else None,
    )


def _mig_record(name: str, parent: str, where: str, warnings: list[str]) -> MigCreate | None:
    m = _MIG_NAME.match(name)
    if m is None:
        warnings.append(f"{where}: MIG device name {name!r} has no profile id and placement; not undone")
        return None
    from nvdra.plugins.gpu.mig import MigCreate

    return MigCreate(device=name, parent=parent, profile_id=int(m[3]), start=int(m[4]))


def _timeslice_record(gpus: list[str]) -> TimeSlice:
    return TimeSlice(gpus=tuple(sorted(gpus)), interval=0)


class _Converter:
    def __init__(self, ctx: AdoptionContext) -> None:
        self.ctx = ctx
        self.warnings: list[str] = []

    def completed(
        self, uid: str, entry: JsonObject, where: str
    ) -> tuple[list[DeviceRecord], list[EffectRecord]]:
        devices: list[DeviceRecord] = []
        mig: list[EffectRecord] = []
        vfio: list[EffectRecord] = []
        sharing: list[EffectRecord] = []
        groups = _pick(entry, ("preparedDevices",), list, where, [])
        for g, group_obj in enumerate(groups):
            at = f"{where}.preparedDevices[{g}]"
            group = _obj(group_obj, at)
            full_gpus: list[str] = []
            uuids: list[str] = []
            for d, item_obj in enumerate(_pick(group, ("devices",), list, at, [])):
                item_at = f"{at}.devices[{d}]"
                item = _obj(item_obj, item_at)
                kinds = [k for k in _KINDS if item.get(k) is not None]
                if len(kinds) != 1:
                    raise CheckpointError(
                        f"upstream checkpoint {item_at}: expected one of {_KINDS}, got {sorted(item)}"
                    )
                kind = kinds[0]
                body = _obj(item[kind], f"{item_at}.{kind}")
                record = _device_record(
                    _obj(body.get("device"), f"{item_at}.{kind}.device"), f"{item_at}.{kind}.device"
                )
                devices.append(record)
                if kind == "gpu":
                    uuid = _pick(
                        _obj(body.get("info"), f"{item_at}.gpu.info"), ("uuid",), str, f"{item_at}.gpu.info"
                    )
                    full_gpus.append(uuid)
                    uuids.append(uuid)
                elif kind == "mig":
                    concrete = _obj(body.get("concrete"), f"{item_at}.mig.concrete")
                    uuids.append(str(concrete.get("migUUID", "")))
                    if self.ctx.dynamic_mig:
                        parent = _pick(concrete, ("parentUUID",), str, f"{item_at}.mig.concrete")
                        rec = _mig_record(record.device_name, parent, item_at, self.warnings)
                        if rec is not None:
                            mig.append(rec)
                else:
                    info = _obj(body.get("info"), f"{item_at}.vfio.info")
                    address = _pick(info, ("pciBusID",), str, f"{item_at}.vfio.info")
                    from nvdra.plugins.gpu.vfio import VfioBind

                    vfio.append(VfioBind(device=record.device_name, address=address))
            if self.ctx.timeslicing and full_gpus:
                sharing.append(_timeslice_record(full_gpus))
            daemon = _obj(group.get("configState") or {}, f"{at}.configState").get("mpsControlDaemonID")
            if daemon:
                sharing.append(
                    MpsPlan(
                        id=str(daemon),
                        uuids=tuple(sorted(u for u in uuids if u)),
                        compute_mode_gpus=tuple(sorted(full_gpus)),
                    )
                )
        return devices, [*mig, *vfio, *sharing]

    def started(
        self, uid: str, entry: JsonObject, where: str
    ) -> tuple[list[DeviceRecord], list[EffectRecord]]:
        status = _obj(entry.get("status") or {}, f"{where}.status")
        allocation = _obj(status.get("allocation") or {}, f"{where}.status.allocation")
        results = _pick(
            _obj(allocation.get("devices") or {}, f"{where}.status.allocation.devices"),
            ("results",),
            list,
            where,
            [],
        )
        devices: list[DeviceRecord] = []
        mig: list[EffectRecord] = []
        full_gpus: list[str] = []
        for i, r_obj in enumerate(results):
            r = _obj(r_obj, f"{where}.status.allocation.devices.results[{i}]")
            if r.get("driver") != GPU_DRIVER_NAME:
                continue
            name = str(r.get("device", ""))
            devices.append(
                DeviceRecord(
                    requests=(str(r.get("request", "")).split("/", 1)[0],),
                    pool_name=str(r.get("pool", "")),
                    device_name=name,
                    cdi_device_ids=(f"{CDI_VENDOR}/{CDI_CLASS}={uid}-{name}",),
                    admin_access=r.get("adminAccess") is True,
                )
            )
            gpu, m = _GPU_NAME.match(name), _MIG_NAME.match(name)
            if gpu is not None and int(gpu[1]) in self.ctx.uuid_by_minor:
                full_gpus.append(self.ctx.uuid_by_minor[int(gpu[1])])
            elif m is not None and self.ctx.dynamic_mig:
                parent = self.ctx.uuid_by_minor.get(int(m[1]))
                if parent is None:
                    self.warnings.append(f"{where}: no GPU with minor {m[1]} on this node for {name!r}")
                    continue
                rec = _mig_record(name, parent, where, self.warnings)
                if rec is not None:
                    mig.append(rec)
        sharing = [_timeslice_record(full_gpus)] if self.ctx.timeslicing and full_gpus else []
        return devices, [*mig, *sharing]


def convert_upstream(doc: JsonObject, ctx: AdoptionContext) -> tuple[Checkpoint, tuple[str, ...]]:
    """nvdra's checkpoint for an upstream one, and warnings about what could not be converted.

    Raises:
        CheckpointError: the document is not an upstream checkpoint of the layout above.
    """
    if not is_upstream_checkpoint(doc):
        raise CheckpointError("not an upstream checkpoint (no v1/v2 section)")
    converter = _Converter(ctx)
    v2 = doc.get("v2")
    section = _obj(v2 if v2 is not None else doc.get("v1"), "v2" if v2 is not None else "v1")
    boot_id = _pick(section, ("nodeBootID",), str, "v2", "") if v2 is not None else ""
    claims: dict[str, PreparedClaim] = {}
    for uid, entry_obj in _pick(
        section, ("preparedClaims",), dict, "v2" if v2 is not None else "v1", {}
    ).items():
        where = f"preparedClaims[{uid}]"
        entry = _obj(entry_obj, where)
        raw_state = entry.get("checkpointState", "PrepareCompleted") if v2 is not None else "PrepareCompleted"
        if raw_state not in tuple(ClaimState):
            raise CheckpointError(f"upstream checkpoint {where}.checkpointState: unknown state {raw_state!r}")
        state = ClaimState(raw_state)
        convert = converter.started if state is ClaimState.PREPARE_STARTED else converter.completed
        devices, records = convert(uid, entry, where)
        claims[uid] = PreparedClaim(
            uid=uid,
            namespace=str(entry.get("namespace") or ""),
            name=str(entry.get("name") or ""),
            state=state,
            devices=tuple(devices),
            applied=tuple(effect_to_json(r) for r in records),
        )
    return Checkpoint(node_boot_id=boot_id, claims=claims), tuple(converter.warnings)


def adopt_upstream_checkpoint(path: Path, ctx: AdoptionContext) -> AdoptionReport | None:
    """Convert ``path`` in place if it is an upstream checkpoint; None when it is not (or is absent).

    Crash-safe: the original is first kept as ``<path>.upstream``, then ``path`` is replaced atomically;
    a crash in between leaves the upstream file at ``path``, converted again on the next start.
    A file that looks upstream but does not convert is left alone (the store sets it aside as corrupt).
    """
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not is_upstream_checkpoint(doc):
        return None
    try:
        checkpoint, warnings = convert_upstream(doc, ctx)
    except CheckpointError as exc:
        log.error("cannot adopt the upstream plugin's checkpoint %s: %s", path, exc)
        return None
    kept = path.with_name(path.name + UPSTREAM_SUFFIX)
    atomic_write(kept, raw, mode=0o600, error_cls=CheckpointError)
    atomic_write(path, encode_checkpoint(checkpoint), mode=0o600, error_cls=CheckpointError)
    for warning in warnings:
        log.warning("adopting upstream checkpoint: %s", warning)
    log.warning(
        "adopted %d claims from the upstream plugin's checkpoint (original kept as %s): %s",
        len(checkpoint.claims),
        kept,
        ", ".join(str(c) for c in checkpoint.claims.values()) or "none",
    )
    return AdoptionReport(claims=tuple(sorted(checkpoint.claims)), kept_as=kept, warnings=warnings)


def recover_plugin_dir(
    config: PluginConfig, inventory: Inventory, gates: FeatureGates
) -> AdoptionReport | None:
    """Before the checkpoint is loaded: sweep temp files a crash left, adopt an upstream checkpoint."""
    config.plugin_dir.mkdir(parents=True, exist_ok=True)
    for path in remove_stale_temp_files(config.plugin_dir):
        log.warning("removed %s, left by a write that a crash interrupted", path)
    ctx = AdoptionContext(
        uuid_by_minor={g.minor: g.uuid for g in inventory.gpus},
        dynamic_mig=gates.enabled(Gate.DYNAMIC_MIG),
        timeslicing=gates.enabled(Gate.TIME_SLICING_SETTINGS),
    )
    return adopt_upstream_checkpoint(config.checkpoint_path, ctx)
