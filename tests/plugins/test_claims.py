"""The claim bookkeeping both drivers share: references, entries, answers, the orphan-spec sweep."""

from __future__ import annotations

from nvdra.core.checkpoint import Checkpoint, ClaimState, DeviceRecord
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.claims import claim_entry, claim_ref, prepare_failed, prepared_devices, sweep_orphan_specs

REF = ClaimRef(namespace="ns", name="c", uid="u1")
DEVICE = DeviceRecord(
    requests=("gpu",), pool_name="n1", device_name="gpu-0", cdi_device_ids=("k8s.x/claim=u1",), share_id="s"
)


class Specs:
    def __init__(self, *uids: str) -> None:
        self.uids = set(uids)
        self.removed: list[str] = []

    def claim_uids(self) -> set[str]:
        return set(self.uids)

    def remove(self, claim_uid: str) -> None:
        self.uids.discard(claim_uid)
        self.removed.append(claim_uid)


def test_claim_ref_reads_the_metadata_and_tolerates_its_absence() -> None:
    assert claim_ref({"metadata": {"namespace": "ns", "name": "c", "uid": "u1"}}) == REF
    assert claim_ref({}) == ClaimRef(namespace="", name="", uid="")


def test_entry_and_answers() -> None:
    """The entry carries the reference, state, devices and effects; the answers say what the kubelet reads."""
    entry = claim_entry(REF, ClaimState.PREPARE_STARTED, [DEVICE], [{"kind": "k"}])
    assert (entry.uid, entry.namespace, entry.name, entry.state) == (
        "u1",
        "ns",
        "c",
        ClaimState.PREPARE_STARTED,
    )
    assert entry.devices == (DEVICE,) and entry.applied == ({"kind": "k"},)
    (prepared,) = prepared_devices(entry.devices)
    assert (prepared.device_name, prepared.cdi_device_ids, prepared.share_id) == (
        "gpu-0",
        ("k8s.x/claim=u1",),
        "s",
    )
    assert prepare_failed(REF, "no").error == "error preparing devices for claim ns/c:u1: no"


def test_sweep_removes_only_specs_no_entry_owns() -> None:
    specs = Specs("u1", "u3", "u2")
    checkpoint = Checkpoint().with_claim(claim_entry(REF, ClaimState.PREPARE_COMPLETED, [DEVICE]))
    assert sweep_orphan_specs(specs, checkpoint) == ["u2", "u3"]
    assert specs.uids == {"u1"} and specs.removed == ["u2", "u3"]
