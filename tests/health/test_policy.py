"""The pure health policy: XID → taint, ignore list, no downgrade, recovery rules, slice decoration."""

from __future__ import annotations

from nvdra.core.health import (
    DEFAULT_IGNORED_XIDS,
    TAINT_GPU_LOST,
    TAINT_UNMONITORED,
    TAINT_XID,
    EventKind,
    HealthEvent,
    HealthPolicy,
    HealthState,
    parse_xids,
)

GPU = "GPU-00000000-0000-0000-0000-000000000003"
POLICY = HealthPolicy(quiet_period=60.0)


def xid(number: int, at: float = 0.0) -> HealthEvent:
    return HealthEvent(kind=EventKind.XID, gpu_uuid=GPU, at=at, xid=number)


def test_critical_xid_taints_no_schedule() -> None:
    """A non-ignored XID sets gpu.nvidia.com/xid=<xid>, effect NoSchedule; the device is unhealthy."""
    state = HealthState().apply(xid(79), ["gpu-3"], POLICY)
    (taint,) = state.of("gpu-3")
    assert (taint.key, taint.value, taint.effect) == (TAINT_XID, "79", "NoSchedule")
    assert not state.healthy("gpu-3")
    assert state.message("gpu-3") == "gpu.nvidia.com/xid=79:NoSchedule"


def test_ignored_xid_gives_effect_none() -> None:
    """Upstream's application XIDs are recorded with effect None; the device stays healthy."""
    for number in sorted(DEFAULT_IGNORED_XIDS):
        state = HealthState().apply(xid(number), ["gpu-3"], POLICY)
        assert [t.effect for t in state.of("gpu-3")] == ["None"]
        assert state.healthy("gpu-3")


def test_additional_xids_extend_the_ignore_list_and_skip_malformed_entries() -> None:
    """--additional-xids-to-ignore adds XIDs; malformed entries are reported and skipped."""
    assert parse_xids(" 48, x,79,,-2") == (frozenset({48, 79}), ("x", "-2"))
    policy = HealthPolicy.from_flags("48,bogus")
    assert policy.ignored_xids == DEFAULT_IGNORED_XIDS | {48}
    assert HealthState().apply(xid(48), ["gpu-3"], policy).healthy("gpu-3")


def test_a_later_ignored_xid_does_not_lower_the_effect() -> None:
    """One taint per key: XID 43 after XID 48 updates the value but keeps NoSchedule."""
    state = HealthState().apply(xid(48, 1.0), ["gpu-3"], POLICY).apply(xid(43, 2.0), ["gpu-3"], POLICY)
    (taint,) = state.of("gpu-3")
    assert (taint.value, taint.effect, taint.since) == ("43", "NoSchedule", 2.0)


def test_quiet_period_clears_xid_taints_only_when_over() -> None:
    """The XID taint stands until quiet_period seconds after the last XID, then is removed."""
    state = HealthState().apply(xid(79, 10.0), ["gpu-3"], POLICY)
    assert state.recover(69.9, POLICY) == state
    assert state.next_expiry(POLICY) == 70.0
    assert state.recover(70.0, POLICY).taints == {}
    assert state.recover(1e9, HealthPolicy(quiet_period=None)) == state


def test_gpu_lost_clears_when_the_gpu_answers_again() -> None:
    """gpu-lost stays past the quiet period and is removed by a RESPONSIVE event for that device."""
    lost = HealthEvent(kind=EventKind.GPU_LOST, gpu_uuid=None, at=0.0)
    state = HealthState().apply(lost, ["gpu-0", "gpu-3"], POLICY)
    assert [t.key for t in state.of("gpu-0")] == [TAINT_GPU_LOST]
    assert state.recover(1e6, POLICY) == state
    back = HealthEvent(kind=EventKind.RESPONSIVE, gpu_uuid=GPU, at=5.0)
    state = state.apply(back, ["gpu-3"], POLICY)
    assert state.healthy("gpu-3") and state.of("gpu-3") == ()
    assert not state.healthy("gpu-0")


def test_unmonitored_is_informational() -> None:
    """A GPU that cannot be monitored gets gpu.nvidia.com/unmonitored with effect None."""
    event = HealthEvent(kind=EventKind.UNMONITORED, gpu_uuid=GPU, at=0.0)
    state = HealthState().apply(event, ["gpu-3"], POLICY)
    assert [(t.key, t.effect) for t in state.of("gpu-3")] == [(TAINT_UNMONITORED, "None")]
    assert state.healthy("gpu-3")


def test_ecc_events_do_not_taint() -> None:
    """As upstream, ECC events alone change nothing (the XID that follows a fatal one does)."""
    event = HealthEvent(kind=EventKind.DOUBLE_BIT_ECC, gpu_uuid=GPU, at=0.0)
    assert HealthState().apply(event, ["gpu-3"], POLICY) == HealthState()


def test_decorate_sets_taints_on_matching_devices_only() -> None:
    """decorate() copies devices and adds the API taint objects to the tainted ones."""
    state = HealthState().apply(xid(79), ["gpu-3"], POLICY)
    devices = [{"name": "gpu-2", "attributes": {}}, {"name": "gpu-3", "attributes": {}}]
    out = state.decorate(devices)
    assert "taints" not in out[0]
    assert out[1]["taints"] == [{"key": TAINT_XID, "value": "79", "effect": "NoSchedule"}]
    assert "taints" not in devices[1]
