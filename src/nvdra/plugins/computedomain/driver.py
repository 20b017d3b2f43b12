"""The ``compute-domain.nvidia.com`` DRA driver: prepare daemon and channel claims on one node.

Devices: ``daemon-0`` and ``channel-0`` in the node's pool. A claim holds exactly one of them.

- **Daemon claim** (the domain's IMEX daemon pod): create ``<plugin dir>/domains/<cdUID>/`` with the
  config template, and hand the container env ``CLIQUE_ID``, ``COMPUTE_DOMAIN_UUID``/``NAME``/``NAMESPACE``,
  the ``/imexd`` bind mount and, in a clique, the ``fabric-imex-mgmt`` device. Unprepare removes the
  directory once no daemon claim of the domain is left on the node.
- **Channel claim** (a workload pod): the claim must be in the domain's namespace (permanent error
  otherwise) and ``channel-0`` must not be held by another claim; the node gets the domain's label
  (so the DaemonSet puts a daemon here), then the prepare waits — bounded by ``ready_timeout_s``,
  retrying API errors with backoff — until this node's daemon is Ready in its clique (and, when
  ``spec.numNodes`` > 0, until the whole domain is Ready); then the channel node(s) are injected with
  the major from ``/proc/devices``. A node without a clique gets no device node (its daemon idles).
  Unprepare removes the node label if it still names the domain.

Crash safety as in the GPU driver: ``PrepareStarted`` is checkpointed before the node is labelled, so a
restart or an unprepare can undo it; CDI specs without an entry are removed at start.
Calls are not serialized by the toolkit: a channel prepare may wait for its daemon while the daemon's
own claim is prepared; the driver's lock guards only the checkpoint.
"""

from __future__ import annotations

__all__ = ["ComputeDomainDriver", "NotReady", "cd_devices"]

import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from nvdra.core.checkpoint import Checkpoint, ClaimState, DeviceRecord, PreparedClaim
from nvdra.core.config import (
    AllocatedDevice,
    ComputeDomainChannelConfig,
    ComputeDomainDaemonConfig,
    DeviceType,
    resolve_configs,
)
from nvdra.core.effects import EffectCodec, EffectRecord, effect_to_json
from nvdra.core.errors import ClaimError, KubeApiError, KubeConflict, KubeNotFound, NvdraError, UserError
from nvdra.core.featuregates import FeatureGates, Gate
from nvdra.imex import CD_DRIVER_NAME, DOMAIN_LABEL, channel_ids, clique_object_name
from nvdra.imex.config import TEMPLATE_VALUES
from nvdra.kubeletplugin.objects import NODES
from nvdra.kubeletplugin.types import ClaimRef, DriverResources, JsonObject, Pool, PrepareResult, Slice
from nvdra.plugins.claims import CheckpointedDriver, claim_ref
from nvdra.plugins.computedomain.cdi import CdClaimSpecs
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS, CdKube
from nvdra.plugins.state import CheckpointStore, LoadReport

log = logging.getLogger(__name__)

_TYPES = {"daemon-0": DeviceType.DAEMON, "channel-0": DeviceType.CHANNEL}


class NotReady(Exception):
    """The local daemon is not Ready yet (retryable: the kubelet calls again)."""


@attrs.frozen(kw_only=True)
class DaemonDir(EffectRecord):
    """The domain's IMEX config directory in the plugin dir (removed with its last daemon claim here)."""

    KIND: ClassVar[str] = "daemon-dir"
    domain: str  # the ComputeDomain's UID


@attrs.frozen(kw_only=True)
class NodeLabel(EffectRecord):
    """This node's ComputeDomain label (removed on undo if it still names the domain)."""

    KIND: ClassVar[str] = "node-label"
    domain: str
    node: str


_CODEC = EffectCodec([DaemonDir, NodeLabel])


def cd_devices() -> tuple[JsonObject, ...]:
    """The published devices: ``daemon-0`` and ``channel-0`` (attributes ``type`` and ``id``)."""
    return tuple(
        {"name": name, "attributes": {"type": {"string": kind.value}, "id": {"int": 0}}}
        for name, kind in _TYPES.items()
    )


@attrs.define(kw_only=True, eq=False)
class ComputeDomainDriver(CheckpointedDriver):
    """Implements :class:`nvdra.kubeletplugin.types.DraDriver` for ComputeDomains.

    ``host_imex``: host-managed IMEX (``--imex-mode=hostManaged``): says why the node's own IMEX daemon
    is not ready ("" when it is); no daemon device then, no node label, no daemon wait.
    """

    node_name: str
    clique_id: str
    gates: FeatureGates
    _store: CheckpointStore
    _specs: CdClaimSpecs
    _kube: CdKube
    namespace: str
    domains_dir: Path
    ready_timeout_s: float = 45.0
    _sleep: Callable[[float], None] = time.sleep
    host_imex: Callable[[], str] | None = None
    _stopping: threading.Event = attrs.field(init=False, factory=threading.Event)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _checkpoint: Checkpoint = attrs.field(init=False)
    _where: dict[str, tuple[str, str]] = attrs.field(init=False, factory=dict)  # UID -> (ns, name), fixed

    @_checkpoint.default
    def _empty_checkpoint(self) -> Checkpoint:
        return Checkpoint(node_boot_id=self._store.boot_id)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LoadReport:
        """Load the checkpoint and remove CDI specs no entry owns."""
        with self._lock:
            cp, report = self._store.load()
            self._store.save(cp)
            self._checkpoint = cp
            self._sweep_specs(self._specs, cp)
        return report

    def stop(self) -> None:
        """End every channel prepare's wait for its daemon now (retryable error): on SIGTERM the gRPC
        server drains in-flight calls, and a wait of up to ``ready_timeout_s`` would outlast the grace."""
        self._stopping.set()

    def resources(self) -> DriverResources:
        """One pool named after the node with ``daemon-0`` and ``channel-0`` (host-managed: the channel)."""
        devices = cd_devices()
        if self.host_imex is not None:
            devices = tuple(d for d in devices if d["name"] != "daemon-0")
        return DriverResources(pools={self.node_name: Pool(slices=(Slice(devices=devices),))})

    def spec_path(self, claim_uid: str) -> Path:
        """Where the CDI spec of ``claim_uid`` is (or would be) written."""
        return self._specs.path(claim_uid)

    # -- prepare ---------------------------------------------------------------------------------

    def prepare_resource_claims(self, claims: Sequence[Mapping[str, Any]]) -> dict[str, PrepareResult]:
        """Prepare each claim; a failure of one does not affect the others."""
        results: dict[str, PrepareResult] = {}
        for claim in claims:
            ref = claim_ref(claim)
            try:
                results[ref.uid] = self._prepare(ref, claim)
            except UserError as exc:
                results[ref.uid] = self._failed(ref, f"permanent error: {exc}")
            except NotReady as exc:
                results[ref.uid] = self._failed(ref, f"retryable error: {exc}")
            except (NvdraError, OSError) as exc:
                results[ref.uid] = self._failed(ref, f"retryable error: {exc}")
        return results

    def _prepare(self, ref: ClaimRef, claim: Mapping[str, Any]) -> PrepareResult:
        done = self._checkpoint.claims.get(ref.uid)
        if done is not None and done.state is ClaimState.PREPARE_COMPLETED:
            return PrepareResult(devices=self._prepared(done.devices))
        allocation = (claim.get("status") or {}).get("allocation") or {}
        mine = [
            r
            for r in (allocation.get("devices") or {}).get("results") or []
            if r.get("driver") == CD_DRIVER_NAME
        ]
        if len(mine) != 1:
            raise ClaimError(f"the allocation must hold exactly one {CD_DRIVER_NAME} device, got {len(mine)}")
        result = mine[0]
        name, pool = str(result.get("device", "")), str(result.get("pool", ""))
        if pool != self.node_name or name not in _TYPES:
            raise ClaimError(
                f"device {pool}/{name} is not published by node {self.node_name} (daemon-0, channel-0)"
            )
        if self.host_imex is not None and name == "daemon-0":
            raise ClaimError("ComputeDomain daemon claims are not supported when imex.mode=hostManaged")
        request = str(result.get("request", ""))
        groups = resolve_configs(
            (allocation.get("devices") or {}).get("config") or [],
            [AllocatedDevice(request=request, device=name, device_type=_TYPES[name])],
            driver=CD_DRIVER_NAME,
            gates=self.gates,
        )
        config = groups[0].config
        holder = self._checkpoint.holder_of(name)
        if holder is not None and holder.uid != ref.uid:
            raise ClaimError(f"device {name} is already prepared for claim {holder}")
        record = DeviceRecord(
            requests=(request.split("/", 1)[0],),
            pool_name=pool,
            device_name=name,
            cdi_device_ids=(self._specs.device_id(ref.uid, name),),
        )
        if isinstance(config, ComputeDomainChannelConfig):
            return self._prepare_channel(ref, config, record)
        assert isinstance(config, ComputeDomainDaemonConfig)
        return self._prepare_daemon(ref, config, record)

    def _domain(self, uid: str) -> JsonObject:
        """The ComputeDomain with this UID (looked up by listing once, then by name)."""
        where = self._where.get(uid)
        if where is not None:
            try:
                cd = self._kube.get_object(COMPUTE_DOMAINS, where[1], where[0])
                if cd["metadata"]["uid"] == uid:
                    return cd
            except KubeNotFound:
                pass
        for cd in self._kube.list_objects(COMPUTE_DOMAINS):
            if cd["metadata"]["uid"] == uid:
                self._where[uid] = (cd["metadata"]["namespace"], cd["metadata"]["name"])
                return cd
        raise NotReady(f"ComputeDomain with UID {uid} not found")

    def _save(self, entry: PreparedClaim) -> None:
        with self._lock:
            cp = self._checkpoint.with_claim(entry)
            self._store.save(cp)
            self._checkpoint = cp

    def _prepare_daemon(
        self, ref: ClaimRef, config: ComputeDomainDaemonConfig, record: DeviceRecord
    ) -> PrepareResult:
        cd = self._domain(config.domain_id)
        domain_dir = self.domains_dir / config.domain_id
        applied = (effect_to_json(DaemonDir(domain=config.domain_id)),)
        self._save(self._claim_entry(ref, ClaimState.PREPARE_STARTED, (record,), applied))
        domain_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        template = "".join(f"{k}={v}\n" for k, v in sorted(TEMPLATE_VALUES.items()))
        (domain_dir / "imexd.cfg.tmpl").write_text(template)
        env = (
            f"CLIQUE_ID={self.clique_id}",
            f"COMPUTE_DOMAIN_UUID={config.domain_id}",
            f"COMPUTE_DOMAIN_NAME={cd['metadata']['name']}",
            f"COMPUTE_DOMAIN_NAMESPACE={cd['metadata']['namespace']}",
        )
        edits = self._specs.daemon_edits(env=env, domain_dir=domain_dir, fabric_mgmt=bool(self.clique_id))
        self._specs.write(ref.uid, [(record.device_name, edits)])
        self._save(self._claim_entry(ref, ClaimState.PREPARE_COMPLETED, (record,), applied))
        return PrepareResult(devices=self._prepared((record,)))

    def _prepare_channel(
        self, ref: ClaimRef, config: ComputeDomainChannelConfig, record: DeviceRecord
    ) -> PrepareResult:
        cd = self._domain(config.domain_id)
        if cd["metadata"]["namespace"] != ref.namespace:
            raise ClaimError(
                f"claim namespace {ref.namespace!r} differs from the ComputeDomain's namespace "
                f"{cd['metadata']['namespace']!r}"
            )
        if self.host_imex is not None:
            return self._prepare_host_channel(ref, config, record, self.host_imex)
        applied = (effect_to_json(NodeLabel(domain=config.domain_id, node=self.node_name)),)
        # A retry (the daemon was not Ready yet) finds its intent recorded: no second durable write.
        if ref.uid not in self._checkpoint.claims:
            self._save(self._claim_entry(ref, ClaimState.PREPARE_STARTED, (record,), applied))
        self._label_node(config.domain_id)
        self._wait_ready(config.domain_id, cd)
        ids = channel_ids(config.allocation_mode)
        if self.clique_id:
            self._specs.write(ref.uid, [(record.device_name, self._specs.channel_edits(ids))])
        else:
            record = DeviceRecord(
                requests=record.requests, pool_name=record.pool_name, device_name=record.device_name
            )
        self._save(self._claim_entry(ref, ClaimState.PREPARE_COMPLETED, (record,), applied))
        return PrepareResult(devices=self._prepared((record,)))

    def _prepare_host_channel(
        self,
        ref: ClaimRef,
        config: ComputeDomainChannelConfig,
        record: DeviceRecord,
        check: Callable[[], str],
    ) -> PrepareResult:
        """Host-managed IMEX: on a clique node the host daemon must say READY; then the channel is
        injected. Nothing is changed on the node or the cluster, so nothing is recorded to undo."""
        ids = channel_ids(config.allocation_mode)
        if self.clique_id:
            why = check()
            if why:
                raise NotReady(why)
            self._specs.write(ref.uid, [(record.device_name, self._specs.channel_edits(ids))])
        else:  # not in an NVLink clique: no channel device to inject, the claim still succeeds (upstream)
            record = DeviceRecord(
                requests=record.requests, pool_name=record.pool_name, device_name=record.device_name
            )
        self._save(self._claim_entry(ref, ClaimState.PREPARE_COMPLETED, (record,)))
        return PrepareResult(devices=self._prepared((record,)))

    def _set_node_label(self, uid: str, *, add: bool) -> None:
        """Add (or remove, if it still names ``uid``) this node's domain label.

        A merge patch of ``metadata.labels`` alone — the only change the chart's admission policy lets
        a plugin make to its own Node — under the node's resourceVersion, so a concurrent relabel is
        never overwritten; a 409 (the kubelet updated the node) re-reads it, up to three times.
        """
        for attempt in range(3):
            node = self._kube.get_node(self.node_name)
            current = ((node.get("metadata") or {}).get("labels") or {}).get(DOMAIN_LABEL)
            if (current == uid) == add:  # already labelled, or no longer ours to remove
                return
            if add and current:
                raise ClaimError(f"node {self.node_name} is already in ComputeDomain {current}")
            patch = {
                "metadata": {
                    "labels": {DOMAIN_LABEL: uid if add else None},
                    "resourceVersion": node["metadata"]["resourceVersion"],
                }
            }
            try:
                self._kube.patch_object(NODES, self.node_name, patch)
                return
            except KubeConflict:
                if attempt == 2:
                    raise

    def _label_node(self, uid: str) -> None:
        self._set_node_label(uid, add=True)

    def _ready_once(self, uid: str, cd: JsonObject | None = None) -> str:
        """ "" when this node's daemon (and, with numNodes, the domain) is Ready; else why not.

        ``cd``: the domain as this prepare just read it (the first check needs no second GET of an
        object whose status lists every node); later checks read it again.
        """
        cd = self._domain(uid) if cd is None else cd
        if (
            int((cd.get("spec") or {}).get("numNodes") or 0) > 0
            and (cd.get("status") or {}).get("status") != "Ready"
        ):
            return f"ComputeDomain {cd['metadata']['namespace']}/{cd['metadata']['name']} is not Ready yet"
        if self.clique_id and self.gates.enabled(Gate.COMPUTE_DOMAIN_CLIQUES):
            try:
                clique = self._kube.get_object(
                    CLIQUES, clique_object_name(uid, self.clique_id), self.namespace
                )
            except KubeNotFound:
                return "no daemon of this ComputeDomain registered in this node's clique yet"
            entries = clique.get("daemons") or []
        else:
            entries = [dict(n, nodeName=n.get("name")) for n in (cd.get("status") or {}).get("nodes") or []]
        mine = [e for e in entries if e.get("nodeName") == self.node_name]
        if not mine or mine[0].get("status") != "Ready":
            return f"the IMEX daemon on node {self.node_name} is not Ready yet"
        return ""

    def _wait_ready(self, uid: str, cd: JsonObject | None = None) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        delay = 0.25
        first: JsonObject | None = cd
        while True:
            try:
                why = self._ready_once(uid, first)
            except (KubeApiError, NotReady) as exc:
                why = str(exc)
            first = None
            if not why:
                return
            if self._stopping.is_set():
                raise NotReady(f"{why}; the plugin is stopping")
            if time.monotonic() + delay > deadline:
                raise NotReady(why)
            if self._sleep is time.sleep:
                self._stopping.wait(delay)
            else:
                self._sleep(delay)
            delay = min(delay * 2, 3.0)

    # -- unprepare -------------------------------------------------------------------------------

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> dict[str, str]:
        """Undo prepares recorded in the checkpoint; unknown claims succeed."""
        errors = {ref.uid: "" for ref in claims}
        for ref in claims:
            entry = self._checkpoint.claims.get(ref.uid)
            if entry is None:
                continue
            try:
                for record in _records(entry):
                    self._undo(record, ref.uid)
                self._specs.remove(ref.uid)
                with self._lock:
                    cp = self._checkpoint.without(ref.uid)
                    self._store.save(cp)
                    self._checkpoint = cp
            except (NvdraError, OSError) as exc:
                errors[ref.uid] = f"cannot unprepare claim {ref}: {exc}"
        return errors

    def _undo(self, record: EffectRecord, claim_uid: str) -> None:
        if isinstance(record, NodeLabel):
            self._set_node_label(record.domain, add=False)
        elif isinstance(record, DaemonDir):
            others = [
                c for c in self._checkpoint.claims.values() if c.uid != claim_uid and record in _records(c)
            ]
            if not others:
                shutil.rmtree(self.domains_dir / record.domain, ignore_errors=True)


def _records(claim: PreparedClaim) -> list[EffectRecord]:
    """A checkpoint entry's effect records, read back from their JSON (CheckpointError if malformed)."""
    where = f"claims[{claim.uid}].applied"
    return [_CODEC.from_json(a, f"{where}[{i}]") for i, a in enumerate(claim.applied)]
