"""The checkpoint round-trips and refuses to half-read a damaged file."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvdra.core.checkpoint import (
    Checkpoint,
    CheckpointEncoder,
    DeviceRecord,
    PreparedClaim,
    decode_checkpoint,
    encode_checkpoint,
)
from nvdra.core.errors import CheckpointError

names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)
devices = st.builds(
    DeviceRecord,
    requests=st.lists(names, max_size=2).map(tuple),
    pool_name=names,
    device_name=names,
    cdi_device_ids=st.lists(names, max_size=2).map(tuple),
    share_id=st.none() | names,
    admin_access=st.booleans(),
)


def claims_of(
    text: st.SearchStrategy[str], applied: st.SearchStrategy[dict[str, Any]], most_devices: int
) -> st.SearchStrategy[PreparedClaim]:
    """Claims whose uid, namespace and name are ``text``, with up to two ``applied`` effect records."""
    return st.builds(
        PreparedClaim,
        uid=text,
        namespace=text,
        name=text,
        state=st.sampled_from(["PrepareStarted", "PrepareCompleted"]),
        devices=st.lists(devices, max_size=most_devices).map(tuple),
        applied=st.lists(applied, max_size=2).map(tuple),
    )


claims = claims_of(names, st.dictionaries(names, names, max_size=2), most_devices=3)


@given(boot=names, entries=st.lists(claims, max_size=4))
def test_round_trip(boot: str, entries: list[PreparedClaim]) -> None:
    """decode(encode(cp)) == cp for any checkpoint."""
    cp = Checkpoint(node_boot_id=boot)
    for c in entries:
        cp = cp.with_claim(c)
    assert decode_checkpoint(encode_checkpoint(cp)) == cp


def _whole_document(cp: Checkpoint) -> bytes:
    """The file as one json.dumps of the whole document writes it (the format before the per-claim
    assembly; files written by earlier versions are these bytes with ``indent=1`` and ASCII only)."""
    data = {
        "nodeBootID": cp.node_boot_id,
        "claims": {
            uid: {
                "state": c.state.value,
                "namespace": c.namespace,
                "name": c.name,
                "devices": [
                    {
                        "requests": list(d.requests),
                        "poolName": d.pool_name,
                        "deviceName": d.device_name,
                        "cdiDeviceIDs": list(d.cdi_device_ids),
                        **({"shareID": d.share_id} if d.share_id is not None else {}),
                        **({"adminAccess": True} if d.admin_access else {}),
                    }
                    for d in c.devices
                ],
                "applied": [dict(a) for a in c.applied],
            }
            for uid, c in cp.claims.items()
        },
    }
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    doc = {
        "kind": "nvdra.checkpoint",
        "version": 1,
        "checksum": "sha256:" + hashlib.sha256(canonical).hexdigest(),
        "data": data,
    }
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False).encode() + b"\n"


odd_text = st.text(max_size=8)  # newlines, quotes, non-ASCII: JSON escapes them inside strings
odd_claims = claims_of(
    odd_text,
    st.dictionaries(odd_text, st.none() | st.integers() | odd_text | st.lists(odd_text, max_size=2)),
    most_devices=2,
)


@given(boot=odd_text, entries=st.lists(odd_claims, max_size=4), drop=st.integers(0, 3))
def test_bytes_equal_the_whole_document_dump_cached_or_not(
    boot: str, entries: list[PreparedClaim], drop: int
) -> None:
    """The per-claim assembly writes the very bytes of one dump of the whole document, and so does the
    caching encoder across a sequence of checkpoints that share claims (as successive saves do)."""
    encoder = CheckpointEncoder()
    cp = Checkpoint(node_boot_id=boot)
    assert encoder.encode(cp) == encode_checkpoint(cp) == _whole_document(cp)
    for c in entries:
        cp = cp.with_claim(c)
        assert encoder.encode(cp) == encode_checkpoint(cp) == _whole_document(cp)
    cp = cp.without(*[c.uid for c in entries[:drop]])
    assert encoder.encode(cp) == _whole_document(cp)
    assert decode_checkpoint(encoder.encode(cp)) == cp


def _sample() -> bytes:
    claim = PreparedClaim(
        uid="u1",
        namespace="ns",
        name="c",
        state="PrepareCompleted",
        devices=(DeviceRecord(requests=("gpu",), pool_name="n1", device_name="gpu-0"),),
    )
    return encode_checkpoint(Checkpoint(node_boot_id="b").with_claim(claim))


def test_checksum_mismatch_is_detected() -> None:
    """Editing the payload without the checksum makes the checkpoint unreadable, not half-read."""
    doc = json.loads(_sample())
    doc["data"]["claims"]["u1"]["name"] = "other"
    with pytest.raises(CheckpointError, match="checksum"):
        decode_checkpoint(json.dumps(doc).encode())


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"kind": "x"}', b"\xff\xfe"])
def test_garbage_is_rejected(raw: bytes) -> None:
    """Truncated or foreign content raises CheckpointError."""
    with pytest.raises(CheckpointError):
        decode_checkpoint(raw)


def test_truncated_file_is_rejected() -> None:
    """Every strict prefix of a valid checkpoint is rejected."""
    raw = _sample()
    for cut in range(0, len(raw) - 2, 7):
        with pytest.raises(CheckpointError):
            decode_checkpoint(raw[:cut])


def test_unknown_version_is_rejected() -> None:
    """A checkpoint from a newer format version is refused with its version named."""
    doc = json.loads(_sample())
    doc["version"] = 99
    with pytest.raises(CheckpointError, match="99"):
        decode_checkpoint(json.dumps(doc).encode())


def test_holder_of_counts_half_done_claims_but_not_admin_access() -> None:
    """A device is held by any claim that recorded it, half-done ones included, unless with admin access."""
    dev = (DeviceRecord(requests=(), pool_name="p", device_name="gpu-1"),)
    admin = (DeviceRecord(requests=(), pool_name="p", device_name="gpu-1", admin_access=True),)
    cp = Checkpoint().with_claim(
        PreparedClaim(uid="m", namespace="n", name="m", state="PrepareCompleted", devices=admin)
    )
    assert cp.holder_of("gpu-1") is None
    cp = cp.with_claim(PreparedClaim(uid="a", namespace="n", name="a", state="PrepareStarted", devices=dev))
    holder = cp.holder_of("gpu-1")
    assert holder is not None
    assert holder.uid == "a"
    assert cp.without("a").holder_of("gpu-1") is None
    assert decode_checkpoint(encode_checkpoint(cp)) == cp
