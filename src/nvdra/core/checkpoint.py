"""The prepared-claims checkpoint: model and (de)serialisation, pure.

The checkpoint is what lets an unprepare undo a prepare after a plugin restart: the kubelet does not
re-send prepares for claims it already prepared, and the ResourceClaim may be gone by unprepare time.

File format (JSON, one object)::

    {"kind": "nvdra.checkpoint", "version": 1,
     "checksum": "sha256:<hex of the canonical JSON of data>",
     "data": {"nodeBootID": "...",
              "claims": {"<claimUID>": {"state": "PrepareStarted" | "PrepareCompleted",
                                        "namespace": "...", "name": "...",
                                        "devices": [{"requests": [...], "poolName": "...",
                                                     "deviceName": "...", "cdiDeviceIDs": [...],
                                                     "shareID": "..." (optional),
                                                     "adminAccess": true (optional)}],
                                        "applied": [{...}, ...]}}}}

Invariants owned here:
- ``decode_checkpoint(encode_checkpoint(c)) == c``;
- a checkpoint whose checksum does not match, or that is not valid JSON of this shape, raises
  :class:`CheckpointError` — it is never half-read;
- ``applied`` holds one JSON record per side effect performed for the claim, in the order performed,
  so that unprepare can undo them in reverse. Records are opaque here (the JSON boundary); their owners
  type them (:mod:`nvdra.core.effects`);
- ``state`` is a :class:`ClaimState`; a claim built with its wire string gets the member, and the file
  holds the member's value, so the JSON is what it was when states were strings.

Compatibility ("an older checkpoint"): within a version, fields are only ever *added*, and every added
field has a default, so a file an older nvdra wrote decodes unchanged: an entry without ``applied``
(written before effects were recorded) has no effects to undo; without ``shareID``/``adminAccess`` it
has none. A change that old files cannot be read with bumps ``version``; a file of another version is
refused (the store moves it aside), never half-read. The upstream Go plugin's layout is converted by
:mod:`nvdra.plugins.gpu.upstream`.
"""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_VERSION",
    "Checkpoint",
    "CheckpointEncoder",
    "ClaimState",
    "DeviceRecord",
    "PreparedClaim",
    "decode_checkpoint",
    "encode_checkpoint",
]

import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs

from nvdra.core.errors import CheckpointError

CHECKPOINT_VERSION = 1
_KIND = "nvdra.checkpoint"


class ClaimState(enum.StrEnum):
    """Where a claim's prepare got to (upstream's names, as the file holds them)."""

    PREPARE_STARTED = "PrepareStarted"  # intent durable; effects and spec may be half done
    PREPARE_COMPLETED = "PrepareCompleted"


def _state(value: ClaimState | str) -> ClaimState:
    try:
        return ClaimState(value)
    except ValueError:
        allowed = ", ".join(s.value for s in ClaimState)
        raise CheckpointError(f"claim state {value!r} is not one of {allowed}") from None


@attrs.frozen(kw_only=True)
class DeviceRecord:
    """A device as it was returned to the kubelet for a claim."""

    requests: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...] = ()
    share_id: str | None = None
    admin_access: bool = False  # admin access does not hold the device against other claims


@attrs.frozen(kw_only=True)
class PreparedClaim:
    """One claim's entry: where its prepare got to, what it returned, what it did."""

    uid: str
    namespace: str
    name: str
    state: ClaimState = attrs.field(converter=_state)
    devices: tuple[DeviceRecord, ...] = ()
    applied: tuple[Mapping[str, Any], ...] = ()

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.uid}"


@attrs.frozen(kw_only=True)
class Checkpoint:
    """All prepared (or half-prepared) claims of one plugin, stamped with the node's boot id."""

    node_boot_id: str = ""
    claims: Mapping[str, PreparedClaim] = attrs.field(factory=dict)

    def with_claim(self, claim: PreparedClaim) -> Checkpoint:
        """A copy with ``claim`` added or replaced."""
        return attrs.evolve(self, claims={**self.claims, claim.uid: claim})

    def without(self, *uids: str) -> Checkpoint:
        """A copy without these claims (unknown UIDs are ignored)."""
        drop = set(uids)
        return attrs.evolve(self, claims={u: c for u, c in self.claims.items() if u not in drop})

    def holder_of(self, device_name: str) -> PreparedClaim | None:
        """The claim that holds ``device_name`` (without admin access), if any.

        A half-done (``PrepareStarted``) claim holds its devices too: its CDI spec may exist, and until
        it is retried or rolled back at start no other claim may get them.
        """
        for claim in self.claims.values():
            if any(d.device_name == device_name and not d.admin_access for d in claim.devices):
                return claim
        return None


def _device_to_json(d: DeviceRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requests": list(d.requests),
        "poolName": d.pool_name,
        "deviceName": d.device_name,
        "cdiDeviceIDs": list(d.cdi_device_ids),
    }
    if d.share_id is not None:
        out["shareID"] = d.share_id
    if d.admin_access:
        out["adminAccess"] = True
    return out


def _claim_to_json(c: PreparedClaim) -> dict[str, Any]:
    return {
        "state": c.state.value,
        "namespace": c.namespace,
        "name": c.name,
        "devices": [_device_to_json(d) for d in c.devices],
        "applied": [dict(a) for a in c.applied],
    }


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def encode_checkpoint(cp: Checkpoint) -> bytes:
    """Serialise with a checksum over the canonical JSON of the payload.

    The bytes are those of ``json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False)`` of the whole
    document (plus a newline), UTF-8, with the checksum over ``json.dumps(data, sort_keys=True,
    separators=(",", ":"))``; they are assembled from each claim's own two texts (:func:`_claim_texts`)
    so that :class:`CheckpointEncoder` can keep those between writes. (Files written with ``indent=1``
    before, or by hand, read the same: only the data and its checksum are read.)
    """
    return _document(cp.node_boot_id, [(uid, *_claim_texts(c)) for uid, c in sorted(cp.claims.items())])


class CheckpointEncoder:
    """:func:`encode_checkpoint`, remembering each claim's texts between calls.

    A :class:`PreparedClaim` is immutable, and a checkpoint written after a call shares every claim the
    call did not touch with the one written before it, so only the new entries are encoded again
    (~10 µs a claim). Keeps the texts of the claims of the last checkpoint encoded only. Not
    thread-safe (the store's callers serialize).
    """

    def __init__(self) -> None:
        self._texts: dict[int, tuple[PreparedClaim, str, str]] = {}

    def encode(self, cp: Checkpoint) -> bytes:
        """The bytes :func:`encode_checkpoint` returns for ``cp``."""
        texts: dict[int, tuple[PreparedClaim, str, str]] = {}
        parts = []
        for uid, claim in sorted(cp.claims.items()):
            known = self._texts.get(id(claim))
            if known is None or known[0] is not claim:  # the object itself: an id may be reused
                known = (claim, *_claim_texts(claim))
            texts[id(claim)] = known
            parts.append((uid, known[1], known[2]))
        self._texts = texts
        return _document(cp.node_boot_id, parts)


_CLAIM_INDENT = "\n" + " " * 6  # a claim object sits at depth 3 of the indented document


def _pretty(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)``, in C: orjson writes the same
    text for what a checkpoint holds (strings, integers, booleans, null, lists and objects); what it
    refuses (an integer beyond 64 bits in an opaque record) goes to the standard library."""
    import orjson  # on the first save, not when a plugin starts (tests/plugins/test_plugin_loads_no_store.py)

    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)


def _claim_texts(c: PreparedClaim) -> tuple[str, str]:
    """A claim's canonical JSON and its indented JSON as it appears inside the document.

    The canonical text is :func:`_canonical`'s; orjson writes the same bytes when they are ASCII (it
    never escapes other characters, the standard library always does), so it writes it when it can.
    """
    import orjson  # on the first save, not when a plugin starts

    obj = _claim_to_json(c)
    try:
        compact = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits in an opaque record
        compact = "\u00ff"  # not ASCII: the standard library's text is taken
    if not compact.isascii():
        compact = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return compact, _pretty(obj).replace("\n", _CLAIM_INDENT)


def _document(boot_id: str, claims: list[tuple[str, str, str]]) -> bytes:
    """The file from each claim's (uid, canonical, indented) texts, in uid order (JSON escapes every
    newline inside a string, so re-indenting a claim's lines is exact)."""
    canonical = ",".join(f"{json.dumps(uid)}:{c}" for uid, c, _ in claims)
    data = '{"claims":{' + canonical + '},"nodeBootID":' + json.dumps(boot_id) + "}"
    checksum = "sha256:" + hashlib.sha256(data.encode()).hexdigest()
    if claims:
        body = ",\n      ".join(f"{_pretty(uid)}: {p}" for uid, _, p in claims)
        pretty = "{\n      " + body + "\n    }"
    else:
        pretty = "{}"
    return (
        f'{{\n  "checksum": "{checksum}",\n  "data": {{\n    "claims": {pretty},\n    "nodeBootID": '
        f'{_pretty(boot_id)}\n  }},\n  "kind": {_pretty(_KIND)},\n  "version": {CHECKPOINT_VERSION}\n}}\n'
    ).encode()


def _req(obj: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ):
        raise CheckpointError(f"checkpoint {where}.{key}: expected {typ.__name__}, got {value!r}")
    return value


def _device_from_json(obj: Any, where: str) -> DeviceRecord:
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {where}: expected an object, got {obj!r}")
    share = obj.get("shareID")
    return DeviceRecord(
        requests=tuple(str(r) for r in _req(obj, "requests", list, where)),
        pool_name=_req(obj, "poolName", str, where),
        device_name=_req(obj, "deviceName", str, where),
        cdi_device_ids=tuple(str(i) for i in _req(obj, "cdiDeviceIDs", list, where)),
        share_id=str(share) if share is not None else None,
        admin_access=obj.get("adminAccess") is True,
    )


def _claim_from_json(uid: str, obj: Any) -> PreparedClaim:
    where = f"claims[{uid}]"
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {where}: expected an object, got {obj!r}")
    try:
        state = _state(_req(obj, "state", str, where))
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {where}.state: {exc}") from None
    applied = obj.get("applied", [])  # absent in files written before effects were recorded
    if not isinstance(applied, list):
        raise CheckpointError(f"checkpoint {where}.applied: expected list, got {applied!r}")
    if not all(isinstance(a, dict) for a in applied):
        raise CheckpointError(f"checkpoint {where}.applied: every entry must be an object")
    return PreparedClaim(
        uid=uid,
        namespace=_req(obj, "namespace", str, where),
        name=_req(obj, "name", str, where),
        state=state,
        devices=tuple(
            _device_from_json(d, f"{where}.devices[{i}]")
            for i, d in enumerate(_req(obj, "devices", list, where))
        ),
        applied=tuple(applied),
    )


def decode_checkpoint(raw: bytes) -> Checkpoint:
    """Parse and verify a checkpoint.

    Raises:
        CheckpointError: not JSON, wrong kind or version, checksum mismatch, or a malformed entry.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != _KIND:
        raise CheckpointError("checkpoint is not an nvdra checkpoint (missing kind 'nvdra.checkpoint')")
    if doc.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint version {doc.get('version')!r} is not supported "
            f"(this nvdra reads {CHECKPOINT_VERSION})"
        )
    data = doc.get("data")
    if not isinstance(data, dict):
        raise CheckpointError("checkpoint has no data object")
    expected = "sha256:" + hashlib.sha256(_canonical(data)).hexdigest()
    if doc.get("checksum") != expected:
        raise CheckpointError(
            f"checkpoint checksum mismatch: stored {doc.get('checksum')!r}, computed {expected!r}"
        )
    claims_obj = _req(data, "claims", dict, "data")
    return Checkpoint(
        node_boot_id=_req(data, "nodeBootID", str, "data"),
        claims={uid: _claim_from_json(uid, c) for uid, c in claims_obj.items()},
    )
