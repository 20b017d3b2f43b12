"""``FakeKube``: an in-memory, thread-safe ``KubeApi`` with the API server's semantics.

It is the store behind :class:`~nvdra.kubeletplugin.testing_apiserver.ApiServer` too, so the rules here
are the ones a driver meets over HTTP. Invariants:
- objects are stored and returned in the v1 shape, as independent copies (callers cannot alias the store);
- every object, ResourceSlices included, lives in one :class:`~nvdra.kubeletplugin.objects.ObjectStore`
  and follows its rules (one cluster-wide ``resourceVersion``, optimistic concurrency, immutable
  fields, the status subresource, finalizers, watch); creates assign ``uid``, ``creationTimestamp``,
  ``metadata.generation`` and, for ``generateName``, a random 5-character suffix (base cut to 58 chars,
  as the API server's name generator does);
- a create of an existing name, an update with a stale ``resourceVersion`` or a delete with a wrong UID
  precondition is a 409 (:class:`KubeConflict`); a missing object is a 404;
- ResourceSlices are validated on create and update (:func:`validate_resource_slice`, 422) by the rules
  of the Kubernetes version the fake plays (``kubernetes_version``: no shared counters before 1.33,
  counter sets beside their consumers on 1.33/1.34, apart from devices from 1.35; a release's alpha DRA
  gates such as DRAPartitionableDevices count as on, as in the real-cluster scripts) and their
  ``spec.driver``, ``spec.pool.name`` and ``spec.nodeName`` are immutable;
- injected faults (:meth:`FakeKube.fail_next`) fire before any state change; every call is logged.
"""

from __future__ import annotations

__all__ = ["FakeKube", "KubeCall", "validate_resource_slice"]

import re
import threading
import uuid
from typing import Any, Unpack

import attrs

from nvdra.core.errors import KubeApiError, KubeNotFound
from nvdra.kubeletplugin._kube import error_for_status, pick_resource_version
from nvdra.kubeletplugin.objects import (
    NODES,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    ResourceType,
    Selectors,
    WatchOptions,
    WatchStream,
)
from nvdra.kubeletplugin.store.objectstore import ObjectStore
from nvdra.kubeletplugin.types import JsonObject

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ATTRIBUTE_TYPES = frozenset({"int", "bool", "string", "version"})
_ADVANCED_DEVICE_FIELDS = ("taints", "consumesCounters")
_NODE_SELECTION = ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")
_IMMUTABLE = (("driver",), ("pool", "name"), ("nodeName",))
_FIRST_RELEASE = {"v1beta1": (1, 32), "v1beta2": (1, 33), "v1": (1, 34)}


@attrs.frozen(kw_only=True)
class KubeCall:
    """One call the fake served: verb (get/list/create/update/delete), resource, object name."""

    verb: str
    resource: str
    name: str


def _invalid(name: str, problems: list[str]) -> KubeApiError:
    return KubeApiError(
        f'ResourceSlice.resource.k8s.io "{name}" is invalid: ' + "; ".join(problems), status=422
    )


def _validate_device(path: str, device: Any, problems: list[str]) -> None:
    name = device.get("name", "") if isinstance(device, dict) else ""
    if not _DNS_LABEL.match(name):
        problems.append(f"{path}.name: Invalid value: {name!r}: must be a DNS label")
        return
    attributes = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    if len(attributes) + len(capacity) > 32:
        problems.append(
            f"{path}: Too many: {len(attributes) + len(capacity)}: attributes+capacity must be <= 32"
        )
    for key, value in attributes.items():
        kinds = set(value) & _ATTRIBUTE_TYPES if isinstance(value, dict) else set()
        if len(kinds) != 1:
            problems.append(
                f"{path}.attributes[{key}]: Invalid value: exactly one of int, bool, string, version"
            )
        elif kinds & {"string", "version"} and len(str(value.get("string", value.get("version")))) > 64:
            problems.append(f"{path}.attributes[{key}]: Too long: may not be more than 64 bytes")


def _counter_problems(spec: JsonObject, devices: list[Any], version: tuple[int, int]) -> list[str]:
    """The shared-counter rules of Kubernetes ``version`` (KEP-4815 moved them in 1.35)."""
    problems: list[str] = []
    counters = spec.get("sharedCounters") or []
    uses = [
        (i, j, use)
        for i, d in enumerate(devices)
        if isinstance(d, dict)
        for j, use in enumerate(d.get("consumesCounters") or [])
    ]
    if version < (1, 33):
        if "sharedCounters" in spec:
            problems.append(
                'spec: unknown field "sharedCounters" (Kubernetes 1.32 has no partitionable devices)'
            )
        problems += [f'spec.devices[{i}]: unknown field "consumesCounters"' for i, j, _ in uses if j == 0]
        return problems
    for i, counter_set in enumerate(counters):
        if not counter_set.get("counters"):
            problems.append(f"spec.sharedCounters[{i}].counters: Required value")
        elif len(counter_set["counters"]) > 32:
            problems.append(f"spec.sharedCounters[{i}].counters: Too many: must have at most 32 items")
    if version < (1, 35):
        return problems + _slice_scoped_counter_problems(counters, uses)
    if devices and counters:
        problems.append("spec: Invalid value: only one of `sharedCounters` or `devices` is allowed")
    if len(counters) > 8:
        problems.append(f"spec.sharedCounters: Too many: {len(counters)}: must have at most 8 items")
    for i, d in enumerate(devices):
        if isinstance(d, dict) and len(d.get("consumesCounters") or []) > 2:
            problems.append(f"spec.devices[{i}].consumesCounters: Too many: must have at most 2 items")
    return problems


def _slice_scoped_counter_problems(counters: list[Any], uses: list[tuple[int, int, Any]]) -> list[str]:
    """Kubernetes 1.33 / 1.34: a counter set is scoped to its slice, and so are the references to it."""
    problems: list[str] = []
    sets = {str(c.get("name")): set(c.get("counters") or {}) for c in counters}
    total = sum(len(c) for c in sets.values())
    if total > 32:
        problems.append(
            f"spec.sharedCounters: Invalid value: {total}: "
            "the total number of shared counters must not exceed 32"
        )
    for i, j, use in uses:
        path = f"spec.devices[{i}].consumesCounters[{j}]"
        known = sets.get(str(use.get("counterSet")))
        if known is None:
            problems.append(
                f"{path}.counterSet: Invalid value: {use.get('counterSet')!r}: "
                "must reference a counterSet defined in the ResourceSlice sharedCounters"
            )
        elif set(use.get("counters") or {}) - known:
            problems.append(
                f"{path}.counters: Invalid value: "
                "must reference a counter defined in the ResourceSlice sharedCounters"
            )
    per_device: dict[int, int] = {}
    for i, _, use in uses:
        per_device[i] = per_device.get(i, 0) + len(use.get("counters") or {})
    problems += [
        f"spec.devices[{i}]: Invalid value: {n}: the total number of counters must not exceed 32"
        for i, n in sorted(per_device.items())
        if n > 32
    ]
    if sum(per_device.values()) > 1024:
        problems.append(
            f"spec.devices: Invalid value: {sum(per_device.values())}: "
            "the total number of counters in devices must not exceed 1024"
        )
    return problems


def validate_resource_slice(obj: JsonObject, *, kubernetes_version: tuple[int, int] = (1, 36)) -> None:
    """Apply the API server's ResourceSlice rules that a driver can break (v1 shape).

    ``kubernetes_version`` picks the rules of that release where they differ (shared counters, the
    64-device limit for devices with taints or counters, which came with 1.35).

    Raises:
        KubeApiError: status 422, every violated rule named with its field path.
    """
    spec = obj.get("spec") or {}
    problems: list[str] = []
    driver = spec.get("driver", "")
    if not driver or len(driver) > 63 or not _DNS_SUBDOMAIN.match(driver):
        problems.append(f"spec.driver: Invalid value: {driver!r}: must be a lower-case DNS subdomain <= 63")
    pool = spec.get("pool") or {}
    if not pool.get("name"):
        problems.append("spec.pool.name: Required value")
    if int(pool.get("resourceSliceCount", 0)) <= 0:
        problems.append("spec.pool.resourceSliceCount: Invalid value: must be greater than zero")
    if int(pool.get("generation", 0)) < 0:
        problems.append("spec.pool.generation: Invalid value: must be >= 0")
    chosen = [f for f in _NODE_SELECTION if spec.get(f) not in (None, False, "")]
    if len(chosen) != 1:
        problems.append(
            f"spec: Invalid value: exactly one of {list(_NODE_SELECTION)} is required, got {chosen}"
        )
    devices = spec.get("devices") or []
    problems += _counter_problems(spec, devices, kubernetes_version)
    advanced = any(d.get(f) for d in devices if isinstance(d, dict) for f in _ADVANCED_DEVICE_FIELDS)
    limit = 64 if advanced and kubernetes_version >= (1, 35) else 128
    if len(devices) > limit:
        problems.append(f"spec.devices: Too many: {len(devices)}: must have at most {limit} items")
    seen: set[str] = set()
    for i, device in enumerate(devices):
        _validate_device(f"spec.devices[{i}]", device, problems)
        name = device.get("name") if isinstance(device, dict) else None
        if name in seen:
            problems.append(f"spec.devices[{i}].name: Duplicate value: {name!r}")
        seen.add(str(name))
    if problems:
        raise _invalid(obj.get("metadata", {}).get("name", ""), problems)


@attrs.define
class _Fault:
    verb: str
    resource: str | None
    status: int
    remaining: int
    message: str


def _check_slice(new: JsonObject, old: JsonObject | None, kubernetes_version: tuple[int, int]) -> None:
    """The ResourceSlice validation of a create (``old`` None) or an update (immutable fields too)."""
    if old is not None:
        for path in _IMMUTABLE:
            before: Any = old.get("spec") or {}
            after: Any = new.get("spec") or {}
            for key in path:
                before = before.get(key) if isinstance(before, dict) else None
                after = after.get(key) if isinstance(after, dict) else None
            if before != after:
                raise _invalid(
                    new["metadata"].get("name", ""),
                    [f"spec.{'.'.join(path)}: Invalid value: {after!r}: field is immutable"],
                )
    validate_resource_slice(new, kubernetes_version=kubernetes_version)


class FakeKube:
    """In-memory ``KubeApi`` and ``ObjectApi`` over one :class:`ObjectStore`, with faults and a call log."""

    def __init__(
        self,
        *,
        served_versions: tuple[str, ...] = ("v1", "v1beta2", "v1beta1"),
        kubernetes_version: tuple[int, int] = (1, 36),
        strict_namespaces: bool = False,
    ) -> None:
        """Make an empty store.

        Args:
            served_versions: the ``resource.k8s.io`` versions this fake server serves (discovery).
            kubernetes_version: the release the fake plays (``/version``, ResourceSlice rules).
            strict_namespaces: refuse objects in namespaces that do not exist (see :class:`ObjectStore`).

        Raises:
            ValueError: ``served_versions`` names a version that release does not have.
        """
        for version in served_versions:
            first = _FIRST_RELEASE.get(version)
            if first is not None and tuple(kubernetes_version) < first:
                raise ValueError(
                    f"Kubernetes {kubernetes_version[0]}.{kubernetes_version[1]} has no "
                    f"resource.k8s.io/{version} (it came in {first[0]}.{first[1]})"
                )
        self.served_versions = tuple(served_versions)
        self.kubernetes_version = (int(kubernetes_version[0]), int(kubernetes_version[1]))
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._calls: list[KubeCall] = []
        self.objects = ObjectStore(on_call=self._logged, strict_namespaces=strict_namespaces)
        """Every object, ResourceSlices included: one revision counter, one watch history."""
        self.objects.add_validator(
            RESOURCE_SLICES, lambda new, old: _check_slice(new, old, self.kubernetes_version)
        )

    # --- test helpers ----------------------------------------------------------------------------

    def _logged(self, verb: str, resource: str, name: str) -> None:
        with self._lock:
            self._enter(verb, resource, name)

    def add_claim(self, claim: JsonObject) -> JsonObject:
        """Store a ResourceClaim (v1 shape); fills uid and resourceVersion when missing. Returns a copy."""
        return self.objects.put(RESOURCE_CLAIMS, claim)

    def add_node(
        self, name: str, *, labels: dict[str, str] | None = None, uid: str | None = None
    ) -> JsonObject:
        """Store a Node with the given labels (and UID, random by default). Returns a copy."""
        node = {"metadata": {"name": name, "uid": uid or str(uuid.uuid4()), "labels": dict(labels or {})}}
        return self.objects.put(NODES, node)

    def fail_next(
        self, verb: str, *, times: int = 1, status: int = 500, resource: str | None = None, message: str = ""
    ) -> None:
        """Make the next ``times`` calls of ``verb`` (on ``resource``, or any) fail with HTTP ``status``."""
        with self._lock:
            self._faults.append(_Fault(verb, resource, status, times, message or f"injected HTTP {status}"))

    def calls(self) -> tuple[KubeCall, ...]:
        """Every call served so far, oldest first."""
        with self._lock:
            return tuple(self._calls)

    def clear_calls(self) -> None:
        """Forget the call log."""
        with self._lock:
            self._calls.clear()

    def resource_slices(self) -> list[JsonObject]:
        """Every stored ResourceSlice (copies), sorted by name; not logged, never faulted."""
        return self.objects.all_objects(RESOURCE_SLICES)

    def _enter(self, verb: str, resource: str, name: str) -> None:
        """Log the call and fire an injected fault if one matches. Caller holds the lock."""
        self._calls.append(KubeCall(verb=verb, resource=resource, name=name))
        for fault in self._faults:
            if fault.verb == verb and fault.resource in (None, resource) and fault.remaining > 0:
                fault.remaining -= 1
                raise error_for_status(fault.status, fault.message)

    # --- KubeApi ---------------------------------------------------------------------------------

    def resource_api_version(self) -> str:
        """The newest served version among v1, v1beta2, v1beta1."""
        return pick_resource_version(self.served_versions)

    def server_version(self) -> tuple[int, int]:
        """The Kubernetes release this fake plays (its ResourceSlice rules, ``/version``)."""
        return self.kubernetes_version

    def get_resource_claim(self, namespace: str, name: str) -> JsonObject:
        """GET a stored ResourceClaim."""
        with self._lock:
            self._enter("get", "resourceclaims", f"{namespace}/{name}")
        # The store logs generic calls; this one is already logged with its namespace.
        return self.objects.peek(RESOURCE_CLAIMS, name, namespace)

    def get_node(self, name: str) -> JsonObject:
        """GET a stored Node."""
        return self.objects.get_object(NODES, name)

    def get_resource_slice(self, name: str) -> JsonObject:
        """GET one ResourceSlice by name."""
        return self.objects.get_object(RESOURCE_SLICES, name)

    def list_resource_slices(self, *, driver: str | None, node_name: str | None = None) -> list[JsonObject]:
        """LIST ResourceSlices whose ``spec.driver`` and ``spec.nodeName`` are as given (None: any)."""
        selector = ",".join(
            f"{field}={value}"
            for field, value in (("spec.driver", driver), ("spec.nodeName", node_name))
            if value is not None
        )
        return self.objects.list_objects(RESOURCE_SLICES, field_selector=selector)

    def create_resource_slice(self, body: JsonObject) -> JsonObject:
        """CREATE a ResourceSlice (``generateName`` allowed); 409 if the name exists, 422 if invalid."""
        return self.objects.create_object(RESOURCE_SLICES, body)

    def update_resource_slice(self, body: JsonObject) -> JsonObject:
        """UPDATE a ResourceSlice; 404 if missing, 409 on a stale resourceVersion or UID, 422 if invalid."""
        return self.objects.update_object(RESOURCE_SLICES, body)

    def delete_resource_slice(self, name: str, *, uid: str | None = None) -> None:
        """DELETE a ResourceSlice; 409 if ``uid`` does not match; a missing one is not an error."""
        self.objects.delete_object(RESOURCE_SLICES, name, uid=uid)

    def pop_resource_slice(self, name: str, *, uid: str | None = None) -> JsonObject:
        """DELETE a ResourceSlice and return it (what the API server answers); 404 if missing, 409 on UID."""
        removed = self.objects.delete_object(RESOURCE_SLICES, name, uid=uid, missing_ok=False)
        if removed is None:  # missing_ok=False raised already
            raise KubeNotFound(f'resourceslices.resource.k8s.io "{name}" not found', status=404)
        return removed

    # --- ObjectApi (everything lives in ``self.objects``) ----------------------------------------

    def get_object(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject:
        """GET one object."""
        return self.objects.get_object(rt, name, namespace)

    def list_objects(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> list[JsonObject]:
        """LIST objects, optionally label- and field-selected (see :meth:`ObjectStore.list_objects`)."""
        return self.objects.list_objects(rt, namespace, **selectors)

    def create_object(self, rt: ResourceType, body: JsonObject) -> JsonObject:
        """CREATE an object."""
        return self.objects.create_object(rt, body)

    def update_object(self, rt: ResourceType, body: JsonObject, *, status: bool = False) -> JsonObject:
        """UPDATE an object or its status."""
        return self.objects.update_object(rt, body, status=status)

    def patch_object(
        self, rt: ResourceType, name: str, patch: Any, namespace: str | None = None, **options: Any
    ) -> JsonObject:
        """PATCH an object (``patch_type``: ``merge``, ``json`` or ``strategic``), or its ``status``."""
        return self.objects.patch_object(rt, name, patch, namespace, **options)

    def delete_object(
        self, rt: ResourceType, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> None:
        """DELETE an object (marked only while it has finalizers); a missing one is not an error."""
        self.objects.delete_object(rt, name, namespace, uid=uid)

    def list_versioned(
        self, rt: ResourceType, namespace: str | None = None, **selectors: Unpack[Selectors]
    ) -> tuple[list[JsonObject], str]:
        """LIST with the list's resourceVersion (``selectors``: see :meth:`ObjectStore.list_versioned`)."""
        return self.objects.list_versioned(rt, namespace, **selectors)

    def watch_objects(
        self, rt: ResourceType, namespace: str | None = None, **options: Unpack[WatchOptions]
    ) -> WatchStream:
        """WATCH objects in memory (``options``: see :meth:`ObjectStore.watch_objects`)."""
        return self.objects.watch_objects(rt, namespace, **options)
