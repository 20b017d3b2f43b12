"""Structured-parameters allocation as the Kubernetes scheduler does it (pure; no I/O).

The search follows ``k8s.io/dynamic-resource-allocation/structured``: claims one after the other, in
each claim the requests in order, in each request one device after the other. For each device the
candidates are tried in pool/slice/device order, starting after the previous device of the same
request (so combinations, not permutations, are tried); a candidate must not be in use (unless the
request has admin access), must match the class selectors and then the request selectors, must fit
the pool's shared counters, must have its NoSchedule/NoExecute taints tolerated, and must keep every
claim constraint satisfiable. A ``firstAvailable`` request tries its subrequests in order; an
``allocationMode: All`` request needs every matching device of complete pools. Dead ends backtrack;
the first full solution wins, which makes the answer deterministic and biased to slice order.

Invariants: the inputs are never modified; a returned allocation satisfies every selector,
constraint, counter and taint rule (the property tests check it against a brute-force search).
"""

from __future__ import annotations

__all__ = ["Allocator", "Outcome", "capacity_refusal", "lookup_attribute", "taint_blocks"]

import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from nvdra.alloc._cel import CelError, DeviceInput, Selector, compile_selector
from nvdra.alloc.capacity import Consumption, capacity_consumption, format_capacity, shares_device
from nvdra.alloc.model import (
    MAX_RESULTS,
    AllocationInputError,
    Candidate,
    ClaimSpec,
    DeviceId,
    PoolInfo,
    RequestSpec,
    candidates,
    gather_pools,
    parse_claim,
)
from nvdra.alloc.result import allocation_result
from nvdra.alloc.taintrules import with_taint_rules

DEFAULT_MAX_STEPS = 200_000  # the scheduler bounds a filter by time (10 s); this bounds it by work


class _Stop(Exception):
    """Internal: abort the search (budget spent or an allocation-wide error)."""


@attrs.frozen
class Outcome:
    """What :meth:`Allocator.allocate` found: one ``status.allocation`` per claim, or why not."""

    allocations: tuple[dict[str, Any], ...] | None
    error: str = ""  # an input or CEL error that aborts allocation as the scheduler would
    steps: int = 0
    exhausted: bool = False  # the step budget ran out before the search finished

    @property
    def ok(self) -> bool:
        return self.allocations is not None


def lookup_attribute(device: Mapping[str, Any], driver: str, name: str) -> Mapping[str, Any] | None:
    """A device's attribute by fully qualified name (``domain/id``; the driver's domain may be omitted
    on the device), as the constraints see it."""
    attrs_ = device.get("attributes") or {}
    if name in attrs_:
        return attrs_[name]  # type: ignore[no-any-return]
    domain, sep, ident = name.partition("/")
    if sep and domain == driver and ident in attrs_:
        return attrs_[ident]  # type: ignore[no-any-return]
    return None


def attribute_set(attr: Mapping[str, Any]) -> frozenset[tuple[str, Any]]:
    """A DeviceAttribute as a set of typed values: ``int: 1`` and ``ints: [1]`` both give {(int, 1)}."""
    out: set[tuple[str, Any]] = set()
    for key, value in attr.items():
        kind = key[:-1] if key in ("ints", "bools", "strings", "versions") else key
        for v in value if isinstance(value, list) else [value]:
            out.add((kind, v))
    return frozenset(out)


def _tolerates(tol: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    if tol.get("key") and tol.get("key") != taint.get("key"):
        return False
    if tol.get("effect") and tol.get("effect") != taint.get("effect"):
        return False
    op = tol.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (tol.get("value") or "") == (taint.get("value") or "")


def capacity_refusal(
    device: Mapping[str, Any], spec: RequestSpec, already: Mapping[str, Decimal] | None = None
) -> str | None:
    """Why ``device`` cannot grant what the request consumes of its capacities, or None.

    ``already``: what earlier allocations consumed of the device (see :mod:`nvdra.alloc.capacity`).
    Admin access consumes nothing, so only its asking for capacities the device lacks can refuse it.
    """
    consumption, why = capacity_consumption(device, spec.capacity, None if spec.admin_access else already)
    return None if consumption is not None else why


def taint_blocks(
    device: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The first NoSchedule/NoExecute taint no toleration covers (other effects never block)."""
    for taint in device.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
            _tolerates(t, taint) for t in tolerations
        ):
            return taint  # type: ignore[no-any-return]
    return None


def _consumption(device: Mapping[str, Any]) -> list[tuple[str, str, Decimal]]:
    from nvdra.core.quantity import parse_quantity

    return [
        (str(c["counterSet"]), name, parse_quantity(v["value"]))
        for c in device.get("consumesCounters") or []
        for name, v in (c.get("counters") or {}).items()
    ]


class Allocator:
    """Allocates claims against one node's view of the cluster.

    Args:
        slices: ResourceSlice objects (v1 dicts), of every node: those not for ``node_name`` are skipped.
        classes: DeviceClass objects by name (or a sequence of them).
        node_name: the node to allocate on; ``node_labels`` are for slices with a ``nodeSelector``.
        allocated: devices already held by allocated claims (see :func:`~nvdra.alloc.allocated_devices`).
        consumed: what allocated claims consumed of shared devices (see
            :func:`~nvdra.alloc.consumed_capacity`): a device with ``allowMultipleAllocations`` is never
            held, its capacities are used up instead.
        taint_rules: DeviceTaintRule objects; their taints join the selected devices' slice taints.
        max_results: devices per claim (the API's 32).
        max_steps: search steps before giving up (the scheduler gives up after a time limit).
    """

    def __init__(
        self,
        slices: Iterable[Mapping[str, Any]],
        classes: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
        *,
        node_name: str,
        node_labels: Mapping[str, str] | None = None,
        allocated: Iterable[DeviceId] = (),
        consumed: Mapping[DeviceId, Mapping[str, Decimal]] | None = None,
        taint_rules: Sequence[Mapping[str, Any]] = (),
        max_results: int = MAX_RESULTS,
        max_steps: int = DEFAULT_MAX_STEPS,
    ) -> None:
        if not isinstance(classes, Mapping):
            classes = {str(c["metadata"]["name"]): c for c in classes}
        self.classes: Mapping[str, Mapping[str, Any]] = classes
        self.node_name = node_name
        if taint_rules:  # a rule's taint counts as if the driver had put it in the slice (KEP-5055)
            slices = with_taint_rules(slices, taint_rules)
        self.pools: list[PoolInfo] = gather_pools(slices, node_name=node_name, node_labels=node_labels)
        self.candidates: list[Candidate] = candidates(self.pools, node_name, dict(node_labels or {}))
        self.in_use: frozenset[DeviceId] = frozenset(allocated)
        self.consumed: Mapping[DeviceId, Mapping[str, Decimal]] = dict(consumed or {})
        self.max_results = max_results
        self.max_steps = max_steps
        self._inputs: dict[int, DeviceInput] = {}
        self._domains: frozenset[str] = frozenset()
        self._available = {id(p): self._available_counters(p) for p in self.pools}

    # -- per-device checks (independent of the search state) ---------------------------------

    def _available_counters(self, pool: PoolInfo) -> dict[tuple[str, str], Decimal]:
        left = {(cs, name): v for cs, counters in pool.counter_sets.items() for name, v in counters.items()}
        for c in self.candidates:
            if c.pool is pool and c.id in self.in_use:
                for key in _consumption(c.device):
                    if (key[0], key[1]) in left:
                        left[key[0], key[1]] -= key[2]
        return left

    def class_of(self, spec: RequestSpec) -> Mapping[str, Any]:
        """The DeviceClass a request names.

        Raises:
            AllocationInputError: no such class.
        """
        cls = self.classes.get(spec.class_name)
        if cls is None:
            known = ", ".join(sorted(self.classes)) or "none"
            raise AllocationInputError(
                f'request {spec.name}: DeviceClass "{spec.class_name}" not found (known: {known})'
            )
        return cls

    def selectors(self, spec: RequestSpec) -> list[tuple[str, int, Selector]]:
        """(``class``/``request``, index, compiled selector) in evaluation order: class first."""
        class_sel = (self.class_of(spec).get("spec") or {}).get("selectors") or []
        out = [
            ("class", i, compile_selector(str((s.get("cel") or {}).get("expression", ""))))
            for i, s in enumerate(class_sel)
        ]
        return out + [("request", i, compile_selector(e)) for i, e in enumerate(spec.selectors)]

    def device_input(self, c: Candidate) -> DeviceInput:
        """The CEL ``device`` value of a candidate (built once)."""
        found = self._inputs.get(c.order)
        if found is None:
            found = self._inputs[c.order] = DeviceInput(c.id[0], c.device, self._domains)
        return found

    def prepare(self, claims: Sequence[ClaimSpec]) -> None:
        """Compile every selector up front (so every device input knows every indexed domain)."""
        domains = set(self._domains)
        for claim in claims:
            for req in claim.requests:
                for spec in req.specs:
                    domains.update(d for _, _, s in self.selectors(spec) for d in s.domains)
        if not domains <= self._domains:
            self._domains, self._inputs = frozenset(domains), {}

    # -- the search -----------------------------------------------------------------------------

    def allocate(self, claims: Sequence[Mapping[str, Any] | ClaimSpec]) -> Outcome:
        """Allocate every claim together (as for one pod); all or nothing.

        Returns an :class:`Outcome`; input problems (unknown class, CEL compile or runtime errors,
        too many devices) come back as ``error`` rather than raising, as the scheduler reports them.
        """
        specs = [c if isinstance(c, ClaimSpec) else parse_claim(c) for c in claims]
        search = _Search(self, specs)
        try:
            self.prepare(specs)
            found = search.run()
        except (AllocationInputError, CelError) as exc:
            return Outcome(allocations=None, error=str(exc), steps=search.steps)
        except _Stop as exc:
            return Outcome(allocations=None, error=str(exc), steps=search.steps, exhausted=search.exhausted)
        if not found:
            return Outcome(allocations=None, steps=search.steps)
        return Outcome(allocations=tuple(search.results(i) for i in range(len(specs))), steps=search.steps)


class _Search:
    """The mutable state of one :meth:`Allocator.allocate` call."""

    def __init__(self, alloc: Allocator, claims: Sequence[ClaimSpec]) -> None:
        self.a = alloc
        self.claims = claims
        self.steps = 0
        self.exhausted = False
        self.allocating: dict[DeviceId, set[int]] = {}
        self.consumed: dict[int, dict[tuple[str, str], Decimal]] = {id(p): {} for p in alloc.pools}
        self.chosen: list[list[tuple[RequestSpec, Candidate]]] = [[] for _ in claims]
        # per claim, aligned with chosen: what a shared device's result consumes (None: not shared)
        self.shares: list[list[Consumption | None]] = [[] for _ in claims]
        self.placing: dict[DeviceId, Consumption] = {}  # consumed by this run's placements
        self.picked_sub: dict[tuple[int, int], int] = {}
        self.matches: dict[tuple[int, int, int, int], bool] = {}
        self.all_devices: dict[tuple[int, int, int], list[Candidate]] = {}
        # constraint state per claim: (first value or None, count) / multiset of values
        self.cstate: list[list[list[Any]]] = [[[None, 0] for _ in c.constraints] for c in claims]

    def run(self) -> bool:
        for ci, claim in enumerate(self.claims):
            minimum = 0
            for ri, req in enumerate(claim.requests):
                needs = [self._needs(ci, ri, si, spec) for si, spec in enumerate(req.specs)]
                minimum += min(needs) if needs else 0
            if minimum > self.a.max_results:
                raise AllocationInputError(
                    f"claim {claim.name or '<unnamed>'}: number of requested devices {minimum} exceeds "
                    f"the claim limit of {self.a.max_results}"
                )
        return self.one(0, 0, 0, 0)

    def _needs(self, ci: int, ri: int, si: int, spec: RequestSpec) -> int:
        self.a.class_of(spec)
        if not spec.all_devices:
            return spec.count
        devices = []
        for c in self.a.candidates:
            if c.pool.incomplete or c.pool.invalid_reason:
                what = "is currently being updated" if c.pool.incomplete else "is currently invalid"
                pool = f"{c.pool.driver}/{c.pool.name}"
                raise AllocationInputError(
                    f"request {spec.name}: asks for all devices, but resource pool {pool} {what}"
                )
            if self.selectable(ci, ri, si, spec, c):
                devices.append(c)
        self.all_devices[ci, ri, si] = devices
        return len(devices)

    def selectable(self, ci: int, ri: int, si: int, spec: RequestSpec, c: Candidate) -> bool:
        key = (ci, ri, si, c.order)
        found = self.matches.get(key)
        if found is None:
            device = self.a.device_input(c)
            found = True
            for source, i, sel in self.a.selectors(spec):
                try:
                    ok = device.evaluate(sel)
                except CelError as exc:
                    owner = f"class {spec.class_name}" if source == "class" else f"request {spec.name}"
                    raise _Stop(f"{owner}: selector #{i} on device {'/'.join(c.id)}: {exc}") from exc
                if not ok:
                    found = False
                    break
            self.matches[key] = found
        return found

    def one(self, ci: int, ri: int, si: int, di: int, *, in_sub: bool = False, start: int = 0) -> bool:
        """Place device ``di`` of (sub)request ``si`` of request ``ri`` of claim ``ci``, and the rest.

        ``start`` is the first candidate to try: devices of one request are taken in slice order.
        """
        self.steps += 1
        if self.steps > self.a.max_steps:
            self.exhausted = True
            raise _Stop(f"gave up after {self.a.max_steps} search steps (the scheduler would time out)")
        if ci >= len(self.claims):
            return True
        claim = self.claims[ci]
        if ri >= len(claim.requests):
            return self.one(ci + 1, 0, 0, 0)
        req = claim.requests[ri]
        if req.first_available and not in_sub:
            return self._one_of_first_available(ci, ri, len(req.specs))
        spec = req.specs[si]
        if spec.all_devices:
            return self._one_of_all(ci, ri, si, di, spec, in_sub=in_sub)
        if di >= spec.count:
            return self.one(ci, ri + 1, 0, 0)
        if len(self.chosen[ci]) + spec.count - di > self.a.max_results:
            return False
        for c in self.a.candidates[start:]:
            if c.pool.incomplete or c.pool.invalid_reason or not self.selectable(ci, ri, si, spec, c):
                continue
            undo = self.take(ci, spec, c)
            if undo is None:
                continue
            if self.one(ci, ri, si, di + 1, in_sub=in_sub, start=c.order + 1):
                return True
            undo()
        return False

    def _one_of_first_available(self, ci: int, ri: int, subrequests: int) -> bool:
        """``firstAvailable``: the first subrequest with which everything after it fits wins."""
        for sub in range(subrequests):
            if self.one(ci, ri, sub, 0, in_sub=True):
                self.picked_sub[ci, ri] = sub
                return True
        return False

    def _one_of_all(self, ci: int, ri: int, si: int, di: int, spec: RequestSpec, *, in_sub: bool) -> bool:
        """``allocationMode: All``: the devices are known; each must be usable, in order."""
        devices = self.all_devices[ci, ri, si]
        if not devices:
            return False
        if di >= len(devices):
            return self.one(ci, ri + 1, 0, 0)
        undo = self.take(ci, spec, devices[di])
        if undo is None:
            return False
        if self.one(ci, ri, si, di + 1, in_sub=in_sub):
            return True
        undo()
        return False

    def take(self, ci: int, spec: RequestSpec, c: Candidate) -> Any:
        """Tentatively allocate ``c``; return an undo function, or None when it cannot be used."""
        holders = self.allocating.get(c.id) or set()
        shared = shares_device(c.device)
        if spec.admin_access and ci in holders:
            return None
        if not spec.admin_access and (c.id in self.a.in_use or (holders and not shared)):
            return None
        consumption = _consumption(c.device)
        used = self.consumed[id(c.pool)]
        available = self.a._available[id(c.pool)]
        for cs, name, value in consumption:
            if (cs, name) in available and used.get((cs, name), Decimal(0)) + value > available[cs, name]:
                return None
        if taint_blocks(c.device, spec.tolerations) is not None:
            return None
        fits, share = self._share(spec, c, shared)
        if not fits:
            return None
        added: list[int] = []
        for k, con in enumerate(self.claims[ci].constraints):
            if not con.applies(spec):
                continue
            if not self._constraint_add(
                self.cstate[ci][k], con.distinct, lookup_attribute(c.device, c.id[0], con.attribute)
            ):
                for j in added:
                    self._constraint_remove(self.cstate[ci][j], self.claims[ci].constraints[j].distinct, c)
                return None
            added.append(k)
        for cs, name, value in consumption:
            used[cs, name] = used.get((cs, name), Decimal(0)) + value
        self.allocating.setdefault(c.id, set()).add(ci)
        self.chosen[ci].append((spec, c))
        self.shares[ci].append(share)
        self._place(c.id, share, 1)

        def undo() -> None:
            for j in added:
                self._constraint_remove(self.cstate[ci][j], self.claims[ci].constraints[j].distinct, c)
            for cs, name, value in consumption:
                used[cs, name] -= value
            self.allocating[c.id].discard(ci)
            self.chosen[ci].pop()
            self.shares[ci].pop()
            self._place(c.id, share, -1)

        return undo

    def _place(self, device: DeviceId, share: Consumption | None, sign: int) -> None:
        """Add (``sign`` 1) or take back (-1) a shared device's consumption in this run."""
        if share is not None:
            placing = self.placing.setdefault(device, {})
            for name, value in share.items():
                placing[name] = placing.get(name, Decimal(0)) + sign * value

    def _share(self, spec: RequestSpec, c: Candidate, shared: bool) -> tuple[bool, Consumption | None]:
        """Whether the request's capacity fits ``c``, and what it consumes there if ``c`` is shared
        (only a shared device records consumption; admin access consumes nothing)."""
        already = None
        if shared and not spec.admin_access:
            already = dict(self.a.consumed.get(c.id) or {})
            for name, value in (self.placing.get(c.id) or {}).items():
                already[name] = already.get(name, Decimal(0)) + value
        share, _ = capacity_consumption(c.device, spec.capacity, already)
        if share is None:
            return False, None
        return True, share if shared and not spec.admin_access else None

    @staticmethod
    def _constraint_add(state: list[Any], distinct: bool, attr: Mapping[str, Any] | None) -> bool:
        """KEP-6072 set semantics (a scalar is a one-element set): ``matchAttribute`` needs a non-empty
        intersection over all devices, ``distinctAttribute`` pairwise disjoint values. Without list
        attributes this is plain equality / uniqueness, as before the feature."""
        if attr is None:
            return False
        value = attribute_set(attr)
        if not value:
            return False
        if distinct:
            if any(value & seen for seen in state[2:]):
                return False
            state.append(value)
            return True
        common = value if not state[1] else state[0] & value
        if not common:
            return False
        state.append(state[0])  # the intersection before this device, restored by the remove
        state[0], state[1] = common, state[1] + 1
        return True

    def _constraint_remove(self, state: list[Any], distinct: bool, c: Candidate) -> None:
        # Adds and removes are strictly nested in the search: undo the most recent add.
        if distinct:
            state.pop()
        else:
            state[0] = state.pop()
            state[1] -= 1

    def results(self, ci: int) -> dict[str, Any]:
        out = allocation_result(
            self.claims[ci],
            ci,
            self.chosen[ci],
            self.picked_sub,
            class_of=self.a.class_of,
            node_name=self.a.node_name,
        )
        claim = self.claims[ci]
        for i, (result, share) in enumerate(zip(out["devices"]["results"], self.shares[ci], strict=True)):
            if share is None:
                continue
            # The scheduler draws a random UID; a digest of the placement keeps this allocator deterministic.
            where = f"{result['driver']}/{result['pool']}/{result['device']}"
            seed = f"{claim.namespace}/{claim.name}/{ci}/{i}/{where}"
            result["shareID"] = str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
            result["consumedCapacity"] = {k: format_capacity(v) for k, v in sorted(share.items())}
        return out
