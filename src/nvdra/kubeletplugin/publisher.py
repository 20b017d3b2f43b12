"""``ResourceSlicePublisher``: keep this node's ResourceSlices equal to what the driver wants published.

After the Go ``resourceslice.Controller`` (protocols.md §8), without an informer: every reconcile lists
this driver's slices of this node and repairs the difference, on :meth:`~ResourceSlicePublisher.update`,
on a periodic resync (a slice wiped by the kubelet or deleted by hand comes back) and after errors.

Invariants, per pool:
- the layout is the one the server's Kubernetes version accepts (:func:`counter_placement`, read once
  from ``/version``): from 1.35 a slice never carries both devices and shared counters, nor more than 8
  counter sets; on 1.33 and 1.34 each counter set sits in the one slice holding every device that
  consumes it (within 32 shared counters and 1024 consumed counters per slice); before 1.33 a pool with
  counters is refused with a ConfigError naming the server version. Never more than 128 devices per
  slice (64 when one of them has taints or consumesCounters): desired slices are split;
- every ``consumesCounters`` entry names a counter set of the pool and counters of that set;
- slice *i* is named with generateName ``<%05x i>-<driver>-<node>-`` (1.36 naming, which also makes list
  order the allocation priority) and matched to existing slices by that index prefix;
- slices of an older pool generation, and current ones no desired slice matches, are deleted (with a
  UID precondition); the generation is bumped only when more than one update or any create is needed
  (or raised to the driver-given value), and then every slice carries it with ``resourceSliceCount``;
- comparison is semantic (quantities by value, taints' server-set ``timeAdded`` ignored); when the
  server drops fields it does not know (a feature gate off), the result is adopted and reported once,
  so there is no update loop;
- transient errors (KubeUnavailable, KubeConflict) are retried with tenacity, each try re-listing.
"""

from __future__ import annotations

__all__ = [
    "CounterPlacement",
    "DroppedFieldsError",
    "PoolPlan",
    "PoolTarget",
    "PublisherStatistics",
    "ResourceSlicePublisher",
    "RetryPolicy",
    "counter_placement",
    "plan_pool",
    "split_pool",
]

import enum
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from nvdra.core.errors import ConfigError, KubeApiError, KubeConflict, KubeUnavailable
from nvdra.core.quantity import parse_quantity
from nvdra.kubeletplugin.types import DriverResources, KubeApi, Pool, Slice

JsonObject = dict[str, Any]
_log = logging.getLogger(__name__)
MAX_DEVICES = 128
MAX_ADVANCED_DEVICES = 64  # when a device has taints or consumesCounters
MAX_COUNTER_SETS = 8
# Kubernetes 1.33 and 1.34, where counter sets sit beside their consumers: per slice, counters in all
# sets and counters consumed by all devices; per device, counters consumed.
MAX_SHARED_COUNTERS_WITH_DEVICES = 32
MAX_DEVICE_COUNTERS_WITH_DEVICES = 1024
MAX_COUNTERS_PER_DEVICE_WITH_DEVICES = 32
_INDEX = re.compile(r"^([0-9a-f]{5})-")
_QUANTITY_KEYS = frozenset({"value", "default", "min", "max", "step"})


class DroppedFieldsError(KubeApiError):
    """The API server stored less than was written: a field's feature gate is off on the server."""


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a reconcile retries transient errors, and when a failed one is tried again."""

    wait: wait_base = attrs.field(factory=lambda: tenacity.wait_exponential(multiplier=0.1, max=5.0))
    stop: stop_base = attrs.field(factory=lambda: tenacity.stop_after_attempt(6))
    after_error: float = 5.0  # seconds until the next reconcile once retries are exhausted


@attrs.frozen(kw_only=True)
class PublisherStatistics:
    """Counters since the publisher was made; ``generations`` is the last published one per pool."""

    syncs: int
    creates: int
    updates: int
    deletes: int
    errors: int
    generations: Mapping[str, int]


@attrs.frozen(kw_only=True)
class PoolPlan:
    """The writes that bring one pool to its desired state, in the order to apply them."""

    generation: int
    deletes: tuple[JsonObject, ...]  # existing slices
    updates: tuple[tuple[int, JsonObject], ...]  # (slice index, full body)
    creates: tuple[tuple[int, JsonObject], ...]  # (slice index, body with generateName)
    delete_first: bool  # no generation bump: drop obsolete slices before the pool's count changes

    @property
    def empty(self) -> bool:
        """Whether nothing needs writing."""
        return not (self.deletes or self.updates or self.creates)


class CounterPlacement(enum.Enum):
    """Where a server accepts shared counters (KEP-4815 partitionable devices)."""

    UNSUPPORTED = "unsupported"
    """Kubernetes 1.32: ResourceSlices have no ``sharedCounters`` nor ``consumesCounters``."""
    WITH_DEVICES = "with-devices"
    """1.33 and 1.34: a counter set is scoped to its slice; its consumers must sit in that slice."""
    SEPARATE = "separate"
    """1.35 on: counter sets in slices of their own, usable by every device of the pool."""


def counter_placement(server: tuple[int, int]) -> CounterPlacement:
    """The placement a Kubernetes ``(major, minor)`` server accepts."""
    if server >= (1, 35):
        return CounterPlacement.SEPARATE
    if server >= (1, 33):
        return CounterPlacement.WITH_DEVICES
    return CounterPlacement.UNSUPPORTED


def _advanced(device: JsonObject) -> bool:
    return bool(device.get("taints") or device.get("consumesCounters"))


def _split_devices(devices: Sequence[JsonObject]) -> list[Slice]:
    """Greedy chunks in order, each within its limit (64 once it holds an advanced device)."""
    chunks: list[Slice] = []
    chunk: list[JsonObject] = []
    advanced = False
    for device in devices:
        limit = MAX_ADVANCED_DEVICES if advanced or _advanced(device) else MAX_DEVICES
        if len(chunk) >= limit:
            chunks.append(Slice(devices=tuple(chunk)))
            chunk, advanced = [], False
        chunk.append(device)
        advanced = advanced or _advanced(device)
    if chunk:
        chunks.append(Slice(devices=tuple(chunk)))
    return chunks


def _consumed(device: JsonObject) -> int:
    """How many counters ``device`` consumes, over all its consumesCounters entries."""
    return sum(len(c.get("counters") or {}) for c in device.get("consumesCounters") or [])


def _check_counters(pool_name: str, pool: Pool) -> dict[str, JsonObject]:
    """The pool's counter sets by name, after checking names are unique and every reference resolves.

    Raises:
        ConfigError: a duplicate counter set, or a consumesCounters entry naming an unknown set or counter.
    """
    sets: dict[str, JsonObject] = {}
    for desired in pool.slices:
        for counter_set in desired.shared_counters:
            name = str(counter_set.get("name"))
            if name in sets:
                raise ConfigError(f"pools[{pool_name}]", name, "counter set names unique within the pool")
            sets[name] = counter_set
    for desired in pool.slices:
        for device in desired.devices:
            for i, use in enumerate(device.get("consumesCounters") or []):
                path = f"pools[{pool_name}].devices[{device.get('name')}].consumesCounters[{i}]"
                known = sets.get(str(use.get("counterSet")))
                if known is None:
                    raise ConfigError(f"{path}.counterSet", use.get("counterSet"), f"one of {sorted(sets)}")
                missing = sorted(set(use.get("counters") or {}) - set(known.get("counters") or {}))
                if missing:
                    raise ConfigError(
                        f"{path}.counters",
                        missing,
                        f"counters of set {known['name']}: {sorted(known['counters'])}",
                    )
    return sets


def _counter_groups(devices: Sequence[JsonObject]) -> list[tuple[list[str], list[JsonObject]]]:
    """Devices grouped so that every counter set's consumers share a group (in first-device order).

    Returns ``(counter set names, devices)`` per group; a device consuming nothing is a group alone.
    """
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for device in devices:
        names = [str(c.get("counterSet")) for c in device.get("consumesCounters") or []]
        for other in names[1:]:
            parent[root(other)] = root(names[0])
    groups: dict[str, tuple[list[str], list[JsonObject]]] = {}
    order: list[tuple[list[str], list[JsonObject]]] = []
    for device in devices:
        names = [str(c.get("counterSet")) for c in device.get("consumesCounters") or []]
        if not names:
            order.append(([], [device]))
            continue
        key = root(names[0])
        if key not in groups:
            groups[key] = ([], [])
            order.append(groups[key])
        group_sets, group_devices = groups[key]
        group_devices.append(device)
        group_sets.extend(n for n in names if n not in group_sets)
    return order


def _split_with_devices(pool_name: str, pool: Pool, sets: Mapping[str, JsonObject]) -> list[Slice]:
    """The Kubernetes 1.33/1.34 layout: each counter set in the slice of all devices consuming it.

    Driver-given device slices stay apart; inside one, groups of devices sharing counter sets are packed
    in order into as few slices as the per-slice limits allow. Counter sets no device consumes are left
    out (they mean nothing outside the slice of their consumers).
    """
    order = {name: i for i, name in enumerate(sets)}
    owner: dict[str, int] = {}
    out: list[Slice] = []

    def emit(devices: list[JsonObject], names: list[str]) -> None:
        if devices:
            chosen = tuple(sets[n] for n in sorted(names, key=order.__getitem__))
            out.append(Slice(devices=tuple(devices), shared_counters=chosen))

    for index, desired in enumerate(pool.slices):
        devices: list[JsonObject] = []
        names: list[str] = []
        shared = consumed = 0
        advanced = False
        for group_sets, group_devices in _counter_groups(desired.devices):
            for name in group_sets:
                if owner.setdefault(name, index) != index:
                    raise ConfigError(
                        f"pools[{pool_name}].sharedCounters[{name}]",
                        name,
                        "a counter set consumed by devices of one driver slice only (before Kubernetes "
                        "1.35 a counter set and all its consumers must share a ResourceSlice)",
                    )
            for device in group_devices:
                if _consumed(device) > MAX_COUNTERS_PER_DEVICE_WITH_DEVICES:
                    raise ConfigError(
                        f"pools[{pool_name}].devices[{device.get('name')}].consumesCounters",
                        _consumed(device),
                        f"at most {MAX_COUNTERS_PER_DEVICE_WITH_DEVICES} counters per device "
                        "before Kubernetes 1.35",
                    )
            g_shared = sum(len(sets[n].get("counters") or {}) for n in group_sets)
            g_consumed = sum(_consumed(d) for d in group_devices)
            g_advanced = any(_advanced(d) for d in group_devices)
            g_limit = MAX_ADVANCED_DEVICES if g_advanced else MAX_DEVICES
            if (
                len(group_devices) > g_limit
                or g_shared > MAX_SHARED_COUNTERS_WITH_DEVICES
                or g_consumed > MAX_DEVICE_COUNTERS_WITH_DEVICES
            ):
                raise ConfigError(
                    f"pools[{pool_name}].sharedCounters{group_sets}",
                    f"{len(group_devices)} devices, {g_shared} shared, {g_consumed} consumed counters",
                    f"one ResourceSlice before Kubernetes 1.35: at most {g_limit} devices, "
                    f"{MAX_SHARED_COUNTERS_WITH_DEVICES} shared and {MAX_DEVICE_COUNTERS_WITH_DEVICES} "
                    "consumed counters (a counter set and all its consumers must share a slice)",
                )
            limit = MAX_ADVANCED_DEVICES if advanced or g_advanced else MAX_DEVICES
            if devices and (
                len(devices) + len(group_devices) > limit
                or shared + g_shared > MAX_SHARED_COUNTERS_WITH_DEVICES
                or consumed + g_consumed > MAX_DEVICE_COUNTERS_WITH_DEVICES
            ):
                emit(devices, names)
                devices, names, shared, consumed, advanced = [], [], 0, 0, False
            devices.extend(group_devices)
            names.extend(group_sets)
            shared, consumed = shared + g_shared, consumed + g_consumed
            advanced = advanced or g_advanced
        emit(devices, names)
    return out


def split_pool(
    pool: Pool, placement: CounterPlacement = CounterPlacement.SEPARATE, *, pool_name: str = ""
) -> list[Slice]:
    """The slices to publish for a pool, laid out for ``placement``, every slice within limits.

    A pool with nothing in it still gets one empty slice, so that consumers see the pool exists.

    Raises:
        ConfigError: a counter reference does not resolve, the server has no shared counters at all
            (``UNSUPPORTED``), or a counter set with its consumers does not fit one slice before 1.35.
    """
    sets = _check_counters(pool_name, pool)
    consumers = any(d.get("consumesCounters") for s in pool.slices for d in s.devices)
    if placement is CounterPlacement.UNSUPPORTED and (sets or consumers):
        raise ConfigError(
            f"pools[{pool_name}].sharedCounters",
            sorted(sets),
            "no shared counters: the API server is older than Kubernetes 1.33, and partitionable "
            "devices (DynamicMIG, --publish-fabric-partitions) need 1.33+ with the "
            "DRAPartitionableDevices feature gate",
        )
    if placement is CounterPlacement.WITH_DEVICES:
        return _split_with_devices(pool_name, pool, sets) or [Slice()]
    out: list[Slice] = []
    for desired in pool.slices:
        counters = desired.shared_counters
        for i in range(0, len(counters), MAX_COUNTER_SETS):
            out.append(Slice(shared_counters=tuple(counters[i : i + MAX_COUNTER_SETS])))
        out.extend(_split_devices(desired.devices))
    return out or [Slice()]


def _check_pool(pool_name: str, slices: Sequence[Slice]) -> None:
    """Reject a pool the scheduler could not use: duplicate device or counter-set names."""
    for what, names in (
        ("device", [d.get("name") for s in slices for d in s.devices]),
        ("counter set", [c.get("name") for s in slices for c in s.shared_counters]),
    ):
        seen: set[object] = set()
        for name in names:
            if name in seen:
                raise ConfigError(f"pools[{pool_name}]", name, f"{what} names unique within the pool")
            seen.add(name)


_CANONICAL_KEYS = _QUANTITY_KEYS | {"validValues"}


@functools.lru_cache(maxsize=4096)
def _quantity_key(value: str) -> Any:
    """A quantity string's comparison key (its normalized value); the string itself if it is none.
    Cached: a DynamicMIG node's slices spell the same few dozen quantities thousands of times."""
    try:
        return ("quantity", parse_quantity(value).normalize())
    except ValueError:
        return value


def _canonical(value: Any, key: str = "") -> Any:
    """A comparison key: quantities by value, taints without the server-set ``timeAdded``."""
    if isinstance(value, dict):
        return {k: _canonical(v, k) for k, v in value.items() if k != "timeAdded"}
    if isinstance(value, list):
        return [_canonical(v, key) for v in value]
    if isinstance(value, str) and key in _CANONICAL_KEYS:
        return _quantity_key(value)
    return value


def _same(sent: Any, stored: Any) -> bool:
    """Whether two specs are equal up to quantity spelling and ``timeAdded``: plainly equal specs
    (the usual case) are, without building their comparison keys."""
    return bool(sent == stored or _canonical(sent) == _canonical(stored))


def _generation(obj: JsonObject) -> int:
    return int(obj.get("spec", {}).get("pool", {}).get("generation", 0))


@attrs.frozen(kw_only=True)
class PoolTarget:
    """Who publishes a pool, and how its slice bodies look."""

    driver: str
    node_name: str
    pool_name: str
    owner: JsonObject

    def spec(self, content: Slice, generation: int, count: int) -> JsonObject:
        """The v1 ``spec`` of a slice with this content at this pool generation and size."""
        spec: JsonObject = {
            "driver": self.driver,
            "pool": {"name": self.pool_name, "generation": generation, "resourceSliceCount": count},
            "nodeName": self.node_name,
        }
        if content.devices:
            spec["devices"] = [dict(d) for d in content.devices]
        if content.shared_counters:
            spec["sharedCounters"] = [dict(c) for c in content.shared_counters]
        return spec

    def create_body(self, index: int, spec: JsonObject) -> JsonObject:
        """A new slice named by its index (1.36 naming), owned by the Node."""
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {
                "generateName": f"{index:05x}-{self.driver}-{self.node_name}-",
                "ownerReferences": [self.owner],
            },
            "spec": spec,
        }

    @staticmethod
    def update_body(existing: JsonObject, spec: JsonObject) -> JsonObject:
        """The existing object (metadata, resourceVersion) with the new spec."""
        return {**existing, "spec": spec}


def plan_pool(
    target: PoolTarget,
    slices: Sequence[Slice],
    existing: Sequence[JsonObject],
    *,
    driver_generation: int | None = None,
    unchanged: Callable[[int, JsonObject, JsonObject], bool],
) -> PoolPlan:
    """Decide the writes for one pool (pure: no API calls).

    Args:
        target: who publishes the pool (driver, node, pool name, owner reference).
        slices: the desired slices, already split (:func:`split_pool`).
        existing: this pool's slices as listed from the server.
        driver_generation: the generation the driver asks for, if any.
        unchanged: ``(index, desired spec, existing object) -> bool``, the semantic comparison.
    """
    latest = max((_generation(s) for s in existing), default=0)
    obsolete = [s for s in existing if _generation(s) < latest]
    matched: dict[int, JsonObject] = {}
    for obj in sorted((s for s in existing if _generation(s) == latest), key=lambda s: s["metadata"]["name"]):
        m = _INDEX.match(obj["metadata"]["name"])
        index = int(m.group(1), 16) if m else -1
        if 0 <= index < len(slices) and index not in matched:
            matched[index] = obj
        else:
            obsolete.append(obj)
    missing = [i for i in range(len(slices)) if i not in matched]
    count = len(slices)

    def changed_at(generation: int) -> list[int]:
        return [
            i
            for i in sorted(matched)
            if not unchanged(i, target.spec(slices[i], generation, count), matched[i])
        ]

    generation, changed = latest, changed_at(latest)
    if driver_generation is not None and driver_generation > latest:
        generation = driver_generation
    elif missing or len(changed) > 1:
        generation = latest + 1
    if generation != latest:
        changed = changed_at(generation)
    return PoolPlan(
        generation=generation,
        deletes=tuple(obsolete),
        updates=tuple(
            (i, target.update_body(matched[i], target.spec(slices[i], generation, count))) for i in changed
        ),
        creates=tuple((i, target.create_body(i, target.spec(slices[i], generation, count))) for i in missing),
        delete_first=generation == latest,
    )


class ResourceSlicePublisher:
    """Publishes a driver's :class:`DriverResources` for one node, in a background thread.

    ``update()`` never blocks and coalesces; ``sync_now()`` reconciles once in the caller's thread.
    """

    def __init__(
        self,
        kube: KubeApi,
        *,
        driver_name: str,
        node_name: str,
        node_uid: str | None = None,
        retry: RetryPolicy | None = None,
        resync_period: float = 30.0,
        on_error: Callable[[BaseException, str], None] | None = None,
        placement: CounterPlacement | None = None,
    ) -> None:
        """Make a stopped publisher.

        Args:
            kube: the API access (background calls there should be rate-limited).
            driver_name: ``spec.driver`` of every slice.
            node_name: the node the slices belong to (``spec.nodeName``, owner, name part).
            node_uid: the Node's UID for the owner reference; looked up once via ``get_node`` if None.
            retry: retry and back-off policy (tests pass ``wait=tenacity.wait_none()``).
            resync_period: seconds between drift checks when nothing changes.
            on_error: called with background errors (a ``DraDriver.handle_error``); default: logged.
            placement: where shared counters go; None: from the server's version, read at the first sync.
        """
        self._kube = kube
        self._driver = driver_name
        self._node = node_name
        self._node_uid = node_uid
        self._retry = retry or RetryPolicy()
        self._resync = resync_period
        self._on_error = on_error or (lambda exc, msg: _log.error("%s: %s", msg, exc))
        self._cond = threading.Condition()
        self._desired: DriverResources | None = None
        self._dirty = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sync_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._adopted: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._stats = {"syncs": 0, "creates": 0, "updates": 0, "deletes": 0, "errors": 0}
        self._generations: dict[str, int] = {}
        self._placement = placement

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (publishing begins with the first :meth:`update`)."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="nvdra-slice-publisher", daemon=True)
            self._thread.start()

    def update(self, resources: DriverResources) -> None:
        """Set what should be published; returns at once. Later calls replace earlier pending ones."""
        with self._cond:
            self._desired = resources
            self._dirty = True
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread. Published slices stay (the kubelet wipes them when needed)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def sync_now(self) -> None:
        """Reconcile once in this thread, with retries.

        Raises:
            NvdraError: the last error when retries are exhausted, or a non-transient one.
        """
        with self._cond:
            self._dirty = False
        self._sync_with_retry()

    def statistics(self) -> PublisherStatistics:
        """A snapshot of the counters."""
        with self._stats_lock:
            return PublisherStatistics(**self._stats, generations=dict(self._generations))

    # --- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        deadline = time.monotonic() + self._resync
        while True:
            with self._cond:
                while not self._stopping.is_set() and not self._dirty and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                if self._stopping.is_set():
                    return
                self._dirty = False
            try:
                self._sync_with_retry()
                deadline = time.monotonic() + self._resync
            except Exception as exc:  # report and come back later: publishing must never die
                if self._stopping.is_set():
                    return  # the retry was cut short by stop(): not an error worth reporting
                self._on_error(exc, f"publishing ResourceSlices of {self._driver} on {self._node}")
                # A pool the server cannot take (ConfigError) stays so until the driver changes it: wait
                # for an update() or the resync instead of repeating the same error every few seconds.
                wait = self._resync if isinstance(exc, ConfigError) else self._retry.after_error
                deadline = time.monotonic() + wait

    def _sync_with_retry(self) -> None:
        retrying = tenacity.Retrying(
            wait=self._retry.wait,
            stop=self._retry.stop | tenacity.stop_when_event_set(self._stopping),
            retry=tenacity.retry_if_exception_type((KubeUnavailable, KubeConflict)),
            sleep=self._sleep,
            reraise=True,
        )
        with self._sync_lock:
            try:
                for attempt in retrying:
                    with attempt:
                        self._sync_once()
            except Exception:
                self._count("errors")
                raise
            finally:
                self._count("syncs")

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # a back-off ends early when the publisher stops

    def _owner(self) -> JsonObject:
        if self._node_uid is None:
            self._node_uid = str(self._kube.get_node(self._node)["metadata"]["uid"])
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "name": self._node,
            "uid": self._node_uid,
            "controller": True,
        }

    def placement(self) -> CounterPlacement:
        """Where shared counters go on this server (its ``/version`` is read once, on first use)."""
        if self._placement is None:
            server = self._kube.server_version()
            self._placement = counter_placement(server)
            _log.info(
                "Kubernetes %d.%d: shared counters are published %s",
                *server,
                self._placement.value.replace("-", " "),
            )
        return self._placement

    def _sync_once(self) -> None:
        with self._cond:
            desired = self._desired
        if desired is None:
            return
        placement = self.placement()
        owner = self._owner()
        by_pool: dict[str, list[JsonObject]] = {}
        for obj in self._kube.list_resource_slices(driver=self._driver, node_name=self._node):
            by_pool.setdefault(obj["spec"]["pool"]["name"], []).append(obj)
        for name in sorted(set(by_pool) - set(desired.pools)):
            for obj in by_pool[name]:
                self._delete(obj)
            with self._stats_lock:
                self._generations.pop(name, None)
        for name, pool in sorted(desired.pools.items()):
            slices = split_pool(pool, placement, pool_name=name)
            _check_pool(name, slices)
            target = PoolTarget(driver=self._driver, node_name=self._node, pool_name=name, owner=owner)
            plan = plan_pool(
                target,
                slices,
                by_pool.get(name, []),
                driver_generation=pool.generation,
                unchanged=functools.partial(self._unchanged, name),
            )
            self._apply(name, plan)

    def _unchanged(self, pool: str, index: int, spec: JsonObject, existing: JsonObject) -> bool:
        stored = existing.get("spec", {})
        if _same(spec, stored):
            return True
        return bool(self._adopted.get((pool, index)) == (_canonical(spec), _canonical(stored)))

    def _apply(self, pool: str, plan: PoolPlan) -> None:
        if plan.delete_first:
            for obj in plan.deletes:
                self._delete(obj)
        for index, body in plan.updates:
            self._record(pool, index, body, self._kube.update_resource_slice(body))
            self._count("updates")
        for index, body in plan.creates:
            self._record(pool, index, body, self._kube.create_resource_slice(body))
            self._count("creates")
        if not plan.delete_first:
            for obj in plan.deletes:
                self._delete(obj)
        with self._stats_lock:
            self._generations[pool] = plan.generation

    def _count(self, what: str) -> None:
        with self._stats_lock:
            self._stats[what] += 1

    def _delete(self, obj: JsonObject) -> None:
        self._kube.delete_resource_slice(obj["metadata"]["name"], uid=obj["metadata"].get("uid"))
        self._count("deletes")

    def _record(self, pool: str, index: int, sent: JsonObject, stored: JsonObject) -> None:
        """Adopt what the server stored when it differs from what was sent, and say so once."""
        if _same(sent["spec"], stored.get("spec", {})):
            return
        want, have = _canonical(sent["spec"]), _canonical(stored.get("spec", {}))
        if self._adopted.get((pool, index)) == (want, have):
            return
        self._adopted[(pool, index)] = (want, have)
        name = stored.get("metadata", {}).get("name", "")
        self._on_error(
            DroppedFieldsError(
                f"ResourceSlice {name} (pool {pool}, slice {index}) was stored without some fields: "
                "a feature gate (DRADeviceTaints, DRAPartitionableDevices, DRADeviceBindingConditions, "
                "DRAConsumableCapacity) is probably off on the API server"
            ),
            "publishing ResourceSlices",
        )
