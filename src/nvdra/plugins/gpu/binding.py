"""Binding conditions for VFIO devices (nvdra gate ``DeviceBindingConditions``, alpha; KEP-5007,
Kubernetes 1.34+ with DRADeviceBindingConditions and DRAResourceClaimDeviceStatus).

Binding a GPU to ``vfio-pci`` takes seconds and can fail (a process still holds ``/dev/nvidiaN``). With
the gate, each VFIO device is published with ``bindingConditions: [gpu.nvidia.com/VfioBound]`` and
``bindingFailureConditions: [gpu.nvidia.com/VfioBindFailed]``, so the scheduler holds the pod's binding
until the device is ready instead of the kubelet's prepare failing and backing off.

:class:`Binder` is the loop in the plugin that makes them true: for every claim allocated a VFIO
device of this node that carries the condition and has no verdict yet, it binds the GPU to vfio-pci
(the executor prepare uses; prepare later finds it bound and records it for unprepare) and sets
``VfioBound`` True in the claim's ``status.devices``; a failure sets ``VfioBound`` False with the
reason and is retried on the next pass, up to ``max_attempts``, then ``VfioBindFailed`` True (the
scheduler then deallocates and tries elsewhere). A GPU bound for a claim that goes away before it is
prepared is bound back to nvidia; once the claim is prepared the checkpoint owns the binding. What it
bound is kept in ``binder.json`` in the plugin directory (written before each bind), so a restart
still cleans up; so are the devices made ready and the claims prepare took over, which are not bound
again when unprepare clears their status while they stay allocated.

:class:`Binder` is generic over the condition kinds (:class:`ConditionKinds`): the SharedNVSwitch
partition devices use it too (:mod:`nvdra.plugins.gpu.fabric.activation`).
"""

from __future__ import annotations

__all__ = [
    "BIND_FAILED",
    "BOUND",
    "VFIO_CONDITIONS",
    "Binder",
    "BindingConditionsView",
    "ConditionKinds",
    "binding_views",
    "start_binder",
]

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from nvdra.core.effects import EffectRecord
from nvdra.core.errors import ClaimError, KubeApiError, NvdraError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.kubeletplugin.objects import RESOURCE_CLAIMS, ObjectApi
from nvdra.kubeletplugin.types import DriverResources
from nvdra.plugins.devicestatus import ClaimStatusWriter
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.driver import DeviceView

log = logging.getLogger(__name__)

BOUND = "gpu.nvidia.com/VfioBound"
BIND_FAILED = "gpu.nvidia.com/VfioBindFailed"


@attrs.frozen(kw_only=True)
class ConditionKinds:
    """The condition types a :class:`Binder` sets, their reasons, and what a success message says."""

    ready: str
    failed: str
    ready_reason: str
    failed_reason: str
    done: str  # "<device> <done>" is the ready condition's message


VFIO_CONDITIONS = ConditionKinds(
    ready=BOUND,
    failed=BIND_FAILED,
    ready_reason="Bound",
    failed_reason="BindFailed",
    done="is bound to vfio-pci",
)


@attrs.frozen
class BindingConditionsView:
    """Publishes ``kinds``' binding conditions on every device of ``device_type`` (``vfio`` by default;
    the fabric binder uses it for partition devices, with ``bindsToNode``)."""

    device_type: str = "vfio"
    kinds: ConditionKinds = VFIO_CONDITIONS
    binds_to_node: bool = False

    def allocatable(self) -> Mapping[str, AllocatableDevice]:
        """No extra devices."""
        return {}

    def decorate(self, resources: DriverResources, held: Collection[str]) -> DriverResources:
        """Those devices with ``bindingConditions``, ``bindingFailureConditions`` (and ``bindsToNode``)."""
        fields: dict[str, Any] = {
            "bindingConditions": [self.kinds.ready],
            "bindingFailureConditions": [self.kinds.failed],
        }
        if self.binds_to_node:
            fields = {"bindsToNode": True, **fields}

        def one(d: Mapping[str, Any]) -> dict[str, Any]:
            if ((d.get("attributes") or {}).get("type") or {}).get("string") != self.device_type:
                return dict(d)
            return {**d, **fields}

        return resources.with_devices(lambda devices: map(one, devices))

    def refuse(self, name: str, held: Collection[str]) -> str | None:
        """Never."""
        return None


@attrs.define
class _State:
    """``binder.json``: claim UID -> devices bound for it (written before the bind) and those made ready,
    until it is prepared or goes away; the UIDs handed to prepare while they stay allocated (after
    unprepare their status no longer says the device is ready: that is no new request)."""

    bound: dict[str, list[str]] = attrs.field(factory=dict)
    ready: dict[str, list[str]] = attrs.field(factory=dict)
    handed: set[str] = attrs.field(factory=set)


def _condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@attrs.define(kw_only=True, eq=False)
class Binder:
    """Makes the VFIO binding conditions of this node's allocated claims true (see the module docstring).

    Args:
        api: claims are listed and their status written here.
        driver_name, node_name: whose results (the node's pool) to act on.
        bind, unbind: called with (claim UID, device name): bind a VFIO device to vfio-pci / back to
            nvidia (or, for another kind, make the device ready / undo that); raise on failure.
        prepared: the UIDs of the claims the checkpoint holds (the binding is theirs then).
        state_path: where the bindings made for unprepared claims are kept.
        max_attempts: binds tried per device before the failure condition is set.
        kinds: the condition types and reasons (default: the VFIO ones).
        handover: called with (claim UID, device) once the checkpoint holds the claim, before the
            binder forgets what it bound for it (the fabric binder deactivates a partition that the
            claim's prepare did not take over).
    """

    api: ObjectApi = attrs.field(kw_only=False)
    driver_name: str
    node_name: str
    _bind: Callable[[str, str], None]
    _unbind: Callable[[str, str], None]
    _prepared: Callable[[], Collection[str]]
    state_path: Path
    max_attempts: int = 3
    kinds: ConditionKinds = VFIO_CONDITIONS
    _handover: Callable[[str, str], None] | None = None
    _attempts: dict[tuple[str, str], int] = attrs.field(init=False, factory=dict)
    _status: ClaimStatusWriter = attrs.field(init=False)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)

    @_status.default
    def _status_writer(self) -> ClaimStatusWriter:
        return ClaimStatusWriter(self.api, driver_name=self.driver_name)

    # -- state ------------------------------------------------------------------------------------

    def _load(self) -> _State:
        """What was bound for which claim (a file of the first layout, only ``bound`` as the mapping
        itself, is read too)."""
        try:
            data = dict(json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError, TypeError) as exc:
            log.error(
                "cannot read %s (%s): bindings made for unprepared claims are forgotten", self.state_path, exc
            )
            return _State()
        if "bound" not in data:
            data = {"bound": data}

        def uids(key: str) -> dict[str, list[str]]:
            return {str(k): [str(d) for d in v] for k, v in dict(data.get(key) or {}).items()}

        return _State(
            bound=uids("bound"), ready=uids("ready"), handed={str(u) for u in data.get("handedOver") or []}
        )

    def _save(self, state: _State) -> None:
        def uids(mapping: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
            return {k: list(v) for k, v in sorted(mapping.items()) if v}

        data = {"bound": uids(state.bound), "ready": uids(state.ready), "handedOver": sorted(state.handed)}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_path)

    # -- one pass ---------------------------------------------------------------------------------

    def _waiting(self, claim: Mapping[str, Any]) -> list[str]:
        """This node's VFIO devices of the claim whose binding has no verdict in its status yet."""
        allocation = (claim.get("status") or {}).get("allocation") or {}
        verdicts = {
            d.get("device"): {c.get("type"): c.get("status") for c in d.get("conditions") or []}
            for d in (claim.get("status") or {}).get("devices") or []
            if d.get("driver") == self.driver_name and d.get("pool") == self.node_name
        }
        out = []
        for r in (allocation.get("devices") or {}).get("results") or []:
            if r.get("driver") != self.driver_name or r.get("pool") != self.node_name:
                continue
            if self.kinds.ready not in (r.get("bindingConditions") or []):
                continue
            seen = verdicts.get(r.get("device"), {})
            if seen.get(self.kinds.ready) != "True" and seen.get(self.kinds.failed) != "True":
                out.append(str(r["device"]))
        return out

    def reconcile_once(self) -> None:
        """Bind what waits, report it, and bind back what no claim needs any more."""
        claims = self.api.list_objects(RESOURCE_CLAIMS)
        live = {str(c["metadata"]["uid"]): c for c in claims if (c.get("status") or {}).get("allocation")}
        state = self._load()
        prepared = set(self._prepared())
        for uid, claim in sorted(live.items()):
            if uid in prepared or uid in state.handed:
                continue  # prepare's now (after unprepare its status is cleared: not a new request)
            for device in self._waiting(claim):
                if device in state.ready.get(uid, ()):
                    continue  # made ready already (its status was cleared since, or not written yet)
                if device not in state.bound.setdefault(uid, []):
                    state.bound[uid].append(device)
                self._save(state)  # intent first: a crash between here and the bind is cleaned up
                if self._bind_one(claim, uid, device):
                    state.ready.setdefault(uid, []).append(device)
        self._release(state, prepared, live)
        state.handed &= set(live)
        self._save(state)

    def _release(self, state: _State, prepared: Collection[str], live: Collection[str]) -> None:
        """Forget what prepare took over (after ``handover``); undo what went away unprepared."""
        for uid in sorted(set(state.bound)):
            if uid in prepared:
                state.handed.add(uid)
                state.ready.pop(uid, None)
                for device in state.bound.pop(uid):  # the checkpoint owns the binding now
                    if self._handover is not None:
                        self._handover(uid, device)
            elif uid not in live:
                state.ready.pop(uid, None)
                for device in state.bound.pop(uid):
                    log.info("claim %s went away before prepare: undoing %s", uid, device)
                    try:
                        self._unbind(uid, device)
                    except (NvdraError, OSError) as exc:
                        log.error("cannot undo %s: %s; will retry", device, exc)
                        state.bound.setdefault(uid, []).append(device)

    def _bind_one(self, claim: Mapping[str, Any], uid: str, device: str) -> bool:
        """Bind and report; whether it is bound."""
        key = (uid, device)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        try:
            self._bind(uid, device)
        except (NvdraError, OSError) as exc:
            last = self._attempts[key] >= self.max_attempts
            log.warning(
                "binding %s for claim %s failed (attempt %d): %s", device, uid, self._attempts[key], exc
            )
            kinds = self.kinds
            conditions = [_condition(kinds.ready, "False", kinds.failed_reason, str(exc))]
            if last:
                conditions.append(
                    _condition(
                        kinds.failed, "True", kinds.failed_reason, f"{self.max_attempts} attempts: {exc}"
                    )
                )
            self._report(claim, device, conditions)
            return False
        kinds = self.kinds
        self._report(
            claim, device, [_condition(kinds.ready, "True", kinds.ready_reason, f"{device} {kinds.done}")]
        )
        return True

    def _report(self, claim: Mapping[str, Any], device: str, conditions: list[dict[str, str]]) -> None:
        entries = [
            {"driver": self.driver_name, "pool": self.node_name, "device": d, "conditions": conditions}
            for d in [device]
        ]
        keep = [
            dict(e)
            for e in (claim.get("status") or {}).get("devices") or []
            if e.get("driver") == self.driver_name and e.get("device") != device
        ]
        self._status.write(claim, [*keep, *entries])

    # -- loop ---------------------------------------------------------------------------------------

    def start(self, period_s: float = 1.0) -> None:
        """Run :meth:`reconcile_once` every ``period_s`` on a daemon thread until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.reconcile_once()
                except (KubeApiError, OSError) as exc:
                    log.warning("binding conditions: %s; retrying", exc)
                self._stop.wait(period_s)

        self._thread = threading.Thread(target=loop, name="nvdra-binder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def binding_views(gates: FeatureGates) -> list[BindingConditionsView]:
    """The view publishing VFIO binding conditions, when DeviceBindingConditions and PassthroughSupport
    are on (without passthrough there is no VFIO device to condition)."""
    on = gates.enabled(Gate.DEVICE_BINDING_CONDITIONS) and gates.enabled(Gate.PASSTHROUGH_SUPPORT)
    return [BindingConditionsView()] if on else []


def start_binder(
    config: PluginConfig,
    gates: FeatureGates,
    api: ObjectApi,
    views: Sequence[DeviceView],
    prepared: Callable[[], Collection[str]],
    *,
    period_s: float = 1.0,
) -> Binder | None:
    """The running binder of a plugin whose VFIO devices carry binding conditions (else None): it binds
    with the executor prepare uses, for the VFIO devices the passthrough view publishes."""
    if not binding_views(gates):
        return None
    from nvdra.plugins.gpu.vfio import VfioExecutor, passthrough_host, vfio_bind_records

    devices: dict[str, AllocatableDevice] = {}
    for view in views:
        devices.update({n: d for n, d in view.allocatable().items() if d.type == "vfio"})
    executor = VfioExecutor(passthrough_host(config))

    def record(name: str) -> EffectRecord:
        device = devices.get(name)
        if device is None:
            raise ClaimError(
                f"{name} is not a VFIO device of this node (known: {', '.join(sorted(devices))})"
            )
        return vfio_bind_records([device])[0]

    def bind(_uid: str, name: str) -> None:
        executor.apply(record(name))

    binder = Binder(
        api,
        driver_name=config.driver_name,
        node_name=config.node_name,
        bind=bind,
        unbind=lambda _uid, name: executor.undo(record(name)),
        prepared=prepared,
        state_path=config.plugin_dir / "binder.json",
    )
    binder.start(period_s)
    return binder
