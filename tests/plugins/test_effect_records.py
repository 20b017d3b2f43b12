"""Typed effect records: each kind's JSON is what nvdra wrote before records were typed, and reads back."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import attrs
import pytest

from nvdra.core.checkpoint import Checkpoint, ClaimState, PreparedClaim, decode_checkpoint, encode_checkpoint
from nvdra.core.config import IommuBackendPolicy
from nvdra.core.effects import EffectCodec, EffectRecord, effect_to_json
from nvdra.core.errors import CheckpointError, ConfigError
from nvdra.core.sharing import MpsPlan, TimeSlice
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.computedomain.driver import DaemonDir, NodeLabel
from nvdra.plugins.gpu.fabric import FabricPartition, FabricReassert
from nvdra.plugins.gpu.metadata import DeviceMetadata, MetadataDevice
from nvdra.plugins.gpu.mig import MigCreate
from nvdra.plugins.gpu.vfio import VfioBind

CODEC = EffectCodec(
    [
        TimeSlice,
        MpsPlan,
        MigCreate,
        VfioBind,
        FabricPartition,
        FabricReassert,
        DeviceMetadata,
        DaemonDir,
        NodeLabel,
    ]
)

# Each record beside the JSON object the untyped planners wrote for it (key for key, value for value).
CASES: list[tuple[EffectRecord, dict[str, Any]]] = [
    (DaemonDir(domain="cd-1"), {"kind": "daemon-dir", "domain": "cd-1"}),
    (NodeLabel(domain="cd-1", node="n1"), {"kind": "node-label", "domain": "cd-1", "node": "n1"}),
    (
        TimeSlice(gpus=("GPU-a", "GPU-b"), interval=2),
        {"kind": "timeslice", "gpus": ["GPU-a", "GPU-b"], "interval": 2},
    ),
    (
        MpsPlan(
            id="uid-1-abcde",
            uuids=("GPU-a",),
            compute_mode_gpus=("GPU-a",),
            active_thread_percentage=None,
            pinned_memory_mib={"GPU-a": 1024},
        ),
        {
            "kind": "mps",
            "id": "uid-1-abcde",
            "uuids": ["GPU-a"],
            "computeModeGpus": ["GPU-a"],
            "activeThreadPercentage": None,
            "pinnedMemoryLimits": {"GPU-a": "1024M"},
        },
    ),
    (
        MigCreate(device="gpu-0-mig-1g.10gb-19-4", parent="GPU-a", profile_id=19, start=4),
        {
            "kind": "mig.create",
            "device": "gpu-0-mig-1g.10gb-19-4",
            "parent": "GPU-a",
            "profileId": 19,
            "start": 4,
        },
    ),
    (
        VfioBind(device="gpu-vfio-0", address="0000:1b:00.0", minor=0, api_device=True),
        {
            "kind": "vfio-pci",
            "device": "gpu-vfio-0",
            "address": "0000:1b:00.0",
            "minor": 0,
            "backendPolicy": "LegacyOnly",
            "apiDevice": True,
        },
    ),
    (
        VfioBind(
            device="gpu-0",
            address="0000:07:00.0",
            nvswitch=True,
            backend_policy=IommuBackendPolicy.PREFER_IOMMUFD,
        ),
        {
            "kind": "vfio-pci",
            "device": "gpu-0",
            "address": "0000:07:00.0",
            "minor": None,
            "nvswitch": True,
            "backendPolicy": "PreferIommuFD",
            "apiDevice": False,
        },
    ),
    (
        FabricPartition(
            claim="uid-1",
            partition_id=1,
            size=4,
            module_ids=(1, 2, 3, 4),
            devices=("gpu-0", "gpu-1", "gpu-2", "gpu-3"),
            model="SharedNVSwitch",
            activate=True,
            bandwidth_gbps=900,
        ),
        {
            "kind": "fabric-partition",
            "claim": "uid-1",
            "partitionId": 1,
            "size": 4,
            "moduleIds": [1, 2, 3, 4],
            "devices": ["gpu-0", "gpu-1", "gpu-2", "gpu-3"],
            "model": "SharedNVSwitch",
            "activate": True,
            "bandwidthGBps": 900,
        },
    ),
    (
        DeviceMetadata(
            claim=ClaimRef(namespace="ns", name="c", uid="uid-1"),
            request="gpu",
            devices=(
                MetadataDevice(
                    driver="gpu.nvidia.com", pool="n1", device="gpu-vfio-0", attributes={"iommuGroup": 12}
                ),
            ),
        ),
        {
            "kind": "device-metadata",
            "claim": {"uid": "uid-1", "namespace": "ns", "name": "c"},
            "request": "gpu",
            "devices": [
                {
                    "driver": "gpu.nvidia.com",
                    "pool": "n1",
                    "device": "gpu-vfio-0",
                    "attributes": {"iommuGroup": 12},
                }
            ],
        },
    ),
]


@pytest.mark.parametrize(("record", "wire"), CASES, ids=lambda c: getattr(c, "KIND", ""))
def test_each_kind_writes_the_json_it_always_wrote_and_reads_it_back(
    record: EffectRecord, wire: dict[str, Any]
) -> None:
    """Same keys and values as before typing (so the checkpoint bytes are too), and a lossless read."""
    assert effect_to_json(record) == wire
    assert json.dumps(effect_to_json(record), sort_keys=True) == json.dumps(wire, sort_keys=True)
    assert CODEC.from_json(wire) == record


def test_a_checkpoint_of_typed_records_is_byte_for_byte_the_untyped_one() -> None:
    """A claim whose ``applied`` came from records encodes to the very bytes of one built from the dicts."""
    typed = PreparedClaim(
        uid="u", namespace="ns", name="c", state=ClaimState.PREPARE_STARTED,
        applied=tuple(effect_to_json(r) for r, _ in CASES),
    )  # fmt: skip
    untyped = PreparedClaim(
        uid="u", namespace="ns", name="c", state="PrepareStarted", applied=tuple(w for _, w in CASES)
    )
    assert encode_checkpoint(Checkpoint(claims={"u": typed})) == encode_checkpoint(
        Checkpoint(claims={"u": untyped})
    )
    decoded = decode_checkpoint(encode_checkpoint(Checkpoint(claims={"u": typed})))
    assert [CODEC.from_json(a) for a in decoded.claims["u"].applied] == [r for r, _ in CASES]


def test_claim_states_are_an_enum_written_as_upstream_names() -> None:
    """The wire string becomes the member; the file holds the name; an unknown state is refused."""
    claim = PreparedClaim(uid="u", namespace="ns", name="c", state="PrepareCompleted")
    assert claim.state is ClaimState.PREPARE_COMPLETED
    raw = encode_checkpoint(Checkpoint(claims={"u": claim}))
    assert json.loads(raw)["data"]["claims"]["u"]["state"] == "PrepareCompleted"
    assert decode_checkpoint(raw).claims["u"].state is ClaimState.PREPARE_COMPLETED
    with pytest.raises(CheckpointError, match="'Prepared' is not one of PrepareStarted, PrepareCompleted"):
        PreparedClaim(uid="u", namespace="ns", name="c", state="Prepared")


def test_older_and_newer_records_read_with_defaults_and_unknown_keys_ignored() -> None:
    """An older record lacks defaulted fields; a newer one has keys this version does not know."""
    old_vfio = {"kind": "vfio-pci", "device": "gpu-vfio-0", "address": "0000:1b:00.0"}
    assert CODEC.from_json(old_vfio) == VfioBind(device="gpu-vfio-0", address="0000:1b:00.0")
    newer = {"kind": "timeslice", "gpus": ["GPU-a"], "interval": 0, "addedLater": {"x": 1}}
    assert CODEC.from_json(newer) == TimeSlice(gpus=("GPU-a",), interval=0)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"kind": "teleport"},
            r"record.kind: unknown effect kind 'teleport' \(known: daemon-dir, device-metadata, ",
        ),
        ({"kind": "timeslice", "gpus": ["GPU-a"]}, r"record.interval \(timeslice record\): missing field"),
        (
            {"kind": "timeslice", "gpus": ["GPU-a"], "interval": "2"},
            r"record.interval .*expected an integer, got '2'",
        ),
        (
            {"kind": "timeslice", "gpus": ["GPU-a", 7], "interval": 2},
            r"record.gpus\[1\] .*expected a string, got 7",
        ),
        (
            {"kind": "mig.create", "device": "d", "parent": "p", "profileId": True, "start": 0},
            r"profileId .*got True",
        ),
        (
            {
                "kind": "mps",
                "id": "x",
                "uuids": [],
                "computeModeGpus": [],
                "pinnedMemoryLimits": {"GPU-a": "1G"},
            },
            r"record.pinnedMemoryLimits .*limit of GPU-a: expected \"<MiB>M\" \(e.g. \"1024M\"\), got '1G'",
        ),
        (
            {"kind": "vfio-pci", "device": "d", "address": "a", "backendPolicy": "Iommu"},
            r"record.backendPolicy .*expected one of LegacyOnly, PreferIommuFD, got 'Iommu'",
        ),
    ],
)
def test_a_malformed_record_is_one_checkpoint_error_naming_field_and_value(
    obj: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        CODEC.from_json(obj)


@attrs.frozen(kw_only=True)
class OtherTimeSlice(EffectRecord):
    KIND: ClassVar[str] = "timeslice"
    gpus: tuple[str, ...]


def test_a_kind_is_registered_once() -> None:
    """Two record types of one kind (or one without a kind) are refused when the codec is built."""
    with pytest.raises(ConfigError, match="duplicate kind"):
        EffectCodec([TimeSlice, OtherTimeSlice])
    with pytest.raises(ConfigError, match="a record class with a KIND"):
        EffectCodec([EffectRecord])
