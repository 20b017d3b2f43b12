"""``nvdra explain``: allocate a claim offline as the scheduler would, and say why (not).

Inputs: YAML files holding ResourceClaims or ResourceClaimTemplates (and optionally DeviceClasses,
which join the class set); the node's ResourceSlices from a simulated profile (rendered with the GPU
driver's own code, with the chart's DeviceClasses) or from a live cluster (``--kubeconfig``, the
GPU and ComputeDomain drivers' slices of ``--node``, the cluster's own DeviceClasses, and every claim
the cluster has already allocated, whose devices are taken). Output follows kubectl: a table (``-o wide``
lists every candidate), or the claims with ``status.allocation`` filled as YAML/JSON.
"""

from __future__ import annotations

__all__ = [
    "ClusterView",
    "allocate_claim",
    "cluster_slices",
    "cluster_view",
    "load_documents",
    "render",
    "simulated_slices",
    "slice_rows",
]

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from nvdra.alloc import (
    Allocator,
    Diagnosis,
    allocated_devices,
    builtin_device_classes,
    consumed_capacity,
    diagnose,
)
from nvdra.core.errors import UserError
from nvdra.core.featuregates import FeatureGates
from nvdra.plugins.gpu.config import DRIVER_NAME
from nvdra.tool.devices import node_publication, slice_objects
from nvdra.tool.inputs import POD_SPEC_PATHS
from nvdra.tool.output import format_table

CLAIM_KINDS = ("ResourceClaim", "ResourceClaimTemplate")
CD_DRIVER = "compute-domain.nvidia.com"


class InputFileError(UserError, ValueError):
    """A file given on the command line is unreadable or holds no usable object."""


def load_documents(paths: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """Every object of every input (files, directories, ``-`` for stdin) as (``file:line``, object);
    ``List`` kinds are expanded (:mod:`nvdra.tool.inputs`).

    Raises:
        InputFileError: an input is unreadable (one line per input that is).
    """
    from nvdra.tool.inputs import load_sources, read_sources

    sources, problems = read_sources([str(p) for p in paths])
    docs, parse_problems = load_sources(sources)
    problems += parse_problems
    if problems:
        raise InputFileError("\n".join(str(p) for p in problems))
    return [(f"{d.source.label}:{d.line}", d.obj) for d in docs]


@attrs.frozen
class ClaimGroup:
    """Claims allocated together: those of one pod (its templates instantiated), or the claims and
    templates no pod of the input uses."""

    title: str
    claims: list[dict[str, Any]]


# A PodTemplate makes no pods by itself: explain only the kinds that run them.
_POD_SPECS = {kind: where for kind, where in POD_SPEC_PATHS.items() if kind != "PodTemplate"}


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _pod_claims(
    entries: Sequence[Mapping[str, Any]],
    *,
    namespace: str,
    name: str,
    title: str,
    claims: Mapping[tuple[str, str], Mapping[str, Any]],
    templates: Mapping[tuple[str, str], Mapping[str, Any]],
    used: set[tuple[str, str, str]],
    notes: list[str],
) -> list[dict[str, Any]]:
    """The claims one pod's ``resourceClaims`` entries stand for (templates turned into claims)."""
    mine: list[dict[str, Any]] = []
    for entry in entries:
        by_name, by_template = entry.get("resourceClaimName"), entry.get("resourceClaimTemplateName")
        if by_name:
            found = claims.get((namespace, str(by_name)))
            used.add(("ResourceClaim", namespace, str(by_name)))
            if found is None:
                notes.append(f"{title}: ResourceClaim {namespace}/{by_name} is not in the input")
            else:
                mine.append(dict(found))
        elif by_template:
            template = templates.get((namespace, str(by_template)))
            used.add(("ResourceClaimTemplate", namespace, str(by_template)))
            if template is None:
                notes.append(f"{title}: ResourceClaimTemplate {namespace}/{by_template} is not in the input")
                continue
            mine.append(
                {
                    "apiVersion": template.get("apiVersion", "resource.k8s.io/v1"),
                    "kind": "ResourceClaim",
                    "metadata": {"name": f"{name}-{entry.get('name')}", "namespace": namespace},
                    "spec": dict((template.get("spec") or {}).get("spec") or {}),
                }
            )
    return mine


def claim_groups(
    objects: Sequence[Mapping[str, Any]], *, classes: Sequence[Mapping[str, Any]] = ()
) -> tuple[list[ClaimGroup], list[str]]:
    """Follow Pods and workloads to the claims and claim templates they name.

    Each pod (a workload: each replica of its template, ``<name>-<i>``) is a group of the claims it
    uses, a template turned into the claim the ResourceClaim controller would make
    (``<pod>-<entry>``), and the claim the scheduler makes for extended resources in its containers'
    limits that one of ``classes`` serves (KEP-5004, :mod:`nvdra.alloc.extended`). Claims and
    templates no pod uses form a last group. Returns the groups and notes (claims the input lacks).
    """
    from nvdra.alloc.extended import extended_resource_claim
    from nvdra.imex.objects import workload_claim_template

    claims = {_key(o): o for o in objects if o.get("kind") == "ResourceClaim"}
    templates = {_key(o): o for o in objects if o.get("kind") == "ResourceClaimTemplate"}
    for cd in (o for o in objects if o.get("kind") == "ComputeDomain"):
        # the channel template the ComputeDomain controller creates for the domain's workloads
        meta = {"uid": "assigned-by-the-api-server", **(cd.get("metadata") or {})}
        try:
            made = workload_claim_template({**cd, "metadata": meta})
        except (KeyError, TypeError, AttributeError):
            continue
        templates.setdefault(_key(made), made)
    used: set[tuple[str, str, str]] = set()
    groups: list[ClaimGroup] = []
    notes: list[str] = []
    for obj in objects:
        where = _POD_SPECS.get(str(obj.get("kind")))
        if where is None:
            continue
        spec: Any = obj
        for part in where:
            spec = spec.get(part) if isinstance(spec, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        entries = spec.get("resourceClaims") or []
        namespace, name = _key(obj)
        pods = _pod_names(obj, name)
        for replica, pod in enumerate(pods, 1):
            title = f"{obj.get('kind')} {namespace}/{name}"
            title += f" (pod {pod}, replica {replica} of {len(pods)})" if len(pods) > 1 else ""
            extended = extended_resource_claim(spec, classes, pod_name=pod, namespace=namespace)
            mine = [extended] if extended else []
            mine += _pod_claims(
                entries,
                namespace=namespace,
                name=pod,
                title=f"{obj.get('kind')} {namespace}/{name}",
                claims=claims,
                templates=templates,
                used=used,
                notes=notes,
            )
            if mine:
                groups.append(ClaimGroup(title=title, claims=mine))
    rest = [
        dict(o)
        for o in objects
        if o.get("kind") in CLAIM_KINDS and (str(o.get("kind")), *_key(o)) not in used
    ]
    if rest:
        groups.append(ClaimGroup(title="claims no pod of the input uses" if groups else "", claims=rest))
    return groups, list(dict.fromkeys(notes))


MAX_REPLICAS = 64
"""Replicas of one workload explained (each is a pod with claims of its own from the templates)."""


def _pod_names(obj: Mapping[str, Any], name: str) -> list[str]:
    """The pods a Pod or workload stands for on one node: ``name``, or ``<name>-<i>`` per replica
    (``spec.replicas``; a Job's ``parallelism``; one for a DaemonSet or CronJob)."""
    raw = obj.get("spec")
    spec: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    kind = obj.get("kind")
    count: Any = 1
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        count = spec.get("replicas", 1)
    elif kind == "Job":
        count = spec.get("parallelism", 1)
    count = min(count, MAX_REPLICAS) if isinstance(count, int) and count > 0 else 1
    if count > 1 and _one_per_node(spec):
        count = 1  # a required podAntiAffinity on the hostname: the other replicas go to other nodes
    return [name] if count == 1 else [f"{name}-{i}" for i in range(count)]


def _one_per_node(spec: Mapping[str, Any]) -> bool:
    """Whether the pod template keeps its replicas on different nodes (a required podAntiAffinity on
    ``kubernetes.io/hostname`` that selects the template's own labels)."""
    raw = spec.get("template")
    template: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    labels = ((template.get("metadata") or {}).get("labels")) or {}
    affinity = ((template.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}
    for term in affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
        wanted = ((term.get("labelSelector") or {}).get("matchLabels")) or {}
        if (
            term.get("topologyKey") == "kubernetes.io/hostname"
            and wanted
            and wanted.items() <= labels.items()
        ):
            return True
    return False


def simulated_slices(profile: str, gates: FeatureGates, node_name: str) -> list[dict[str, Any]]:
    """The ResourceSlices a simulated node publishes: what ``nvdra devices --simulate`` shows, the
    plugin's own publication (gates from ``gates`` and the environment, VFIO devices, ...)."""
    from nvdra.kubeletplugin.types import DriverResources, Pool, Slice
    from nvdra.plugins.computedomain.driver import cd_devices

    published = node_publication(profile, node_name=node_name, feature_gates=gates.to_spec())
    gpu = slice_objects(published.resources, driver=DRIVER_NAME, node_name=node_name)
    # The chart runs the ComputeDomain plugin beside it on every GPU node: its daemon and channel.
    cd = DriverResources(pools={node_name: Pool(slices=(Slice(devices=cd_devices()),))})
    return gpu + slice_objects(cd, driver=CD_DRIVER, node_name=node_name)


def cluster_slices(kubeconfig: str, node_name: str | None) -> list[dict[str, Any]]:
    """The GPU and ComputeDomain drivers' ResourceSlices of a live cluster (of one node, if given)."""
    from nvdra.kubeletplugin import KubernetesKubeApi

    api = KubernetesKubeApi.from_kubeconfig(kubeconfig)
    return [
        s
        for driver in (DRIVER_NAME, CD_DRIVER)
        for s in api.list_resource_slices(driver=driver, node_name=node_name)
    ]


@attrs.frozen(kw_only=True)
class ClusterView:
    """What the scheduler sees of a live cluster for one node."""

    slices: list[dict[str, Any]]
    classes: list[dict[str, Any]]
    """The cluster's DeviceClasses (they replace the chart's built-in copies)."""
    allocated: list[dict[str, Any]]
    """ResourceClaims that already hold an allocation (their devices are in use)."""
    node_labels: dict[str, str]
    taint_rules: list[dict[str, Any]] = attrs.field(factory=list)
    """The cluster's DeviceTaintRules (empty where the server has none)."""


def cluster_view(kubeconfig: str, node_name: str) -> ClusterView:
    """Read ``node_name``'s slices, the DeviceClasses and the allocated claims through the generic
    ``ObjectApi``, at the ``resource.k8s.io`` version the cluster serves."""
    from nvdra.core.errors import KubeNotFound
    from nvdra.kubeletplugin import KubernetesKubeApi
    from nvdra.kubeletplugin.objects import DEVICE_CLASSES, RESOURCE_CLAIMS

    api = KubernetesKubeApi.from_kubeconfig(kubeconfig)
    version = api.resource_api_version()
    slices = [
        s
        for driver in (DRIVER_NAME, CD_DRIVER)
        for s in api.list_resource_slices(driver=driver, node_name=node_name)
    ]
    classes = api.list_objects(attrs.evolve(DEVICE_CLASSES, version=version))
    claims = api.list_objects(attrs.evolve(RESOURCE_CLAIMS, version=version))
    try:
        labels = (api.get_node(node_name).get("metadata") or {}).get("labels") or {}
    except KubeNotFound as exc:
        raise InputFileError(f"--node {node_name}: no such node in the cluster") from exc
    from nvdra.core.errors import UserError
    from nvdra.tool.taint import find_rule_type

    try:
        rules = api.list_objects(find_rule_type(api))
    except UserError:  # no DeviceTaintRule API on this server: no rules
        rules = []
    return ClusterView(
        slices=slices,
        classes=classes,
        allocated=[c for c in claims if (c.get("status") or {}).get("allocation")],
        node_labels=dict(labels),
        taint_rules=rules,
    )


def _same_claim(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two claim objects name the same claim (UID, else namespace and name)."""
    ma, mb = a.get("metadata") or {}, b.get("metadata") or {}
    if ma.get("uid") and ma.get("uid") == mb.get("uid"):
        return True
    return bool(ma.get("name")) and (ma.get("namespace") or "default", ma.get("name")) == (
        mb.get("namespace") or "default",
        mb.get("name"),
    )


def slice_rows(slices: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One table row per device of the given slices (node, pool, device, type, product, memory)."""

    def attr(d: Mapping[str, Any], key: str) -> str:
        value = (d.get("attributes") or {}).get(key) or {}
        return str(next(iter(value.values()), "")) if value else ""

    rows = []
    for sl in slices:
        spec = sl["spec"]
        for d in spec.get("devices") or []:
            rows.append(
                {
                    "NODE": str(spec.get("nodeName") or ""),
                    "DRIVER": str(spec["driver"]),
                    "POOL": str(spec["pool"]["name"]),
                    "DEVICE": str(d["name"]),
                    "TYPE": attr(d, "type"),
                    "PRODUCT": attr(d, "productName"),
                    "PROFILE": attr(d, "profile"),
                    "MEMORY": str(((d.get("capacity") or {}).get("memory") or {}).get("value", "")),
                }
            )
    return rows


def table(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Left-aligned columns, empty columns dropped, kubectl style."""
    if not rows:
        return []
    cols = [c for c in rows[0] if any(r[c] for r in rows)]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    return [
        "   ".join(line[c].ljust(widths[c]) for c in cols).rstrip()
        for line in [dict(zip(cols, cols, strict=True)), *rows]
    ]


def allocate_claim(
    claim: Mapping[str, Any],
    slices: Sequence[Mapping[str, Any]],
    *,
    node_name: str,
    allocated_claims: Iterable[Mapping[str, Any]] = (),
    classes: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The claim with ``status.allocation`` filled by the allocator (what the scheduler would write).

    Raises:
        UserError: no allocation exists; the message gives the first reason per request.
    """
    from nvdra.alloc import allocated_devices, consumed_capacity

    allocated_claims = list(allocated_claims)
    alloc = Allocator(
        slices,
        classes or builtin_device_classes(),
        node_name=node_name,
        allocated=allocated_devices(allocated_claims),
        consumed=consumed_capacity(allocated_claims),
    )
    outcome = alloc.allocate([claim])
    if outcome.allocations is None:
        raise AllocationFailed(outcome.error or "no allocation satisfies the claim")
    return {**claim, "status": {**(claim.get("status") or {}), "allocation": outcome.allocations[0]}}


class AllocationFailed(UserError):
    """No allocation exists for a claim."""


def _detail_lines(diag: Diagnosis, wide: bool) -> list[str]:
    lines: list[str] = []
    for req in diag.requests:
        lines.append(
            f"\nclaim {req.claim or '<unnamed>'}, request {req.request}: needs {req.needs}, "
            f"{req.eligible} eligible of {len(req.verdicts)} devices"
        )
        if req.chosen:
            lines.append(f"  allocated: {', '.join(d.rsplit('/', 1)[1] for d in req.chosen)}")
        groups: dict[tuple[str, tuple[str, ...], str], list[str]] = {}
        for v in req.verdicts:
            if v.ok and not wide:
                continue
            # wide: one line per device; otherwise devices failing for the same reason share a line
            key = (v.reason, v.details, v.device if wide else "")
            groups.setdefault(key, []).append(v.device.rsplit("/", 1)[1])
        for (reason, details, _), devices in groups.items():
            shown = ", ".join(devices[:6]) + (f" (+{len(devices) - 6} more)" if len(devices) > 6 else "")
            lines.append(f"  {shown}: {reason}")
            lines.extend(
                "      " + " ".join(d.split()) if d.startswith("expression:") else f"      {d}"
                for d in details
            )
    return lines


def render(
    diag: Diagnosis,
    claims: Sequence[Mapping[str, Any]],
    output: str,
    echo: Callable[[str], None],
    *,
    no_headers: bool = False,
) -> None:
    """Print a diagnosis: ``table``/``wide`` (reasons), or the allocated claims as a ``List`` in
    ``yaml``/``json``. Without an allocation there is no object to print: the reasons are printed."""
    if output in ("yaml", "json") and diag.outcome.allocations is not None:
        from nvdra.tool.output import as_list

        listed = as_list(
            [
                {**c, "status": {**(c.get("status") or {}), "allocation": a}}
                for c, a in zip(claims, diag.outcome.allocations, strict=True)
            ]
        )
        echo(
            json.dumps(listed, indent=2)
            if output == "json"
            else yaml.safe_dump(listed, sort_keys=False).rstrip()
        )
        return
    _render_table(diag, output, echo, no_headers=no_headers)


def _render_table(
    diag: Diagnosis, output: str, echo: Callable[[str], None], *, no_headers: bool = False
) -> None:
    rows = []
    for req in diag.requests:
        for device in req.chosen:
            driver, pool, name = device.split("/", 2)
            rows.append(
                {"CLAIM": req.claim, "REQUEST": req.request, "DRIVER": driver, "POOL": pool, "DEVICE": name}
            )
    if diag.outcome.ok:
        for line in format_table(rows, no_headers=no_headers):
            echo(line)
    else:
        echo("NO ALLOCATION" + (f": {diag.outcome.error}" if diag.outcome.error else ""))
    if not diag.outcome.ok or output == "wide":
        for line in _detail_lines(diag, wide=output == "wide"):
            echo(line)
        for f in diag.findings:
            if f != diag.outcome.error:
                echo(f"\n{f}")
    echo(f"\n({diag.outcome.steps} search steps)")


def explain_claims(
    docs: Sequence[tuple[str, dict[str, Any]]],
    slices: Sequence[Mapping[str, Any]],
    *,
    node_name: str,
    extra_classes: Iterable[Mapping[str, Any]] = (),
    builtin: bool = True,
    allocated_claims: Sequence[Mapping[str, Any]] = (),
    node_labels: Mapping[str, str] | None = None,
    taint_rules: Sequence[Mapping[str, Any]] = (),
) -> tuple[Diagnosis, list[dict[str, Any]]]:
    """Diagnose every claim in ``docs`` together (as for one pod); DeviceClasses in ``docs`` join in.

    ``allocated_claims`` hold their devices (a claim in ``docs`` that is among them is re-allocated:
    its own allocation does not count against it). ``taint_rules`` (DeviceTaintRules, KEP-5055) add
    their taints to the devices they select, as the scheduler does.
    """
    classes: dict[str, Mapping[str, Any]] = dict(builtin_device_classes()) if builtin else {}
    for c in extra_classes:
        classes[str(c["metadata"]["name"])] = c
    claims = []
    for _, doc in docs:
        if doc.get("kind") == "DeviceClass":
            classes[str(doc["metadata"]["name"])] = doc
        elif doc.get("kind") in CLAIM_KINDS:
            claims.append(doc)
    if not claims:
        raise InputFileError("no ResourceClaim or ResourceClaimTemplate in the given files")
    held = [c for c in allocated_claims if not any(_same_claim(c, mine) for mine in claims)]
    alloc = Allocator(
        slices,
        classes,
        node_name=node_name,
        node_labels=node_labels,
        allocated=allocated_devices(held),
        consumed=consumed_capacity(held),
        taint_rules=taint_rules,
    )
    return diagnose(alloc, claims), claims


def _progress(message: str) -> None:
    """A progress line on stderr (kept off stdout so -o yaml/json stay machine-readable)."""
    import sys

    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def live_devices(kubeconfig: str | None, node: str | None, output: str, echo: Callable[[str], None]) -> None:
    """``nvdra devices --kubeconfig``: a live cluster's GPU and ComputeDomain devices."""
    if kubeconfig is None:
        raise InputFileError("give --simulate PROFILE or --kubeconfig PATH")
    _progress(f"listing ResourceSlices{f' of node {node}' if node else ''} …")
    slices = cluster_slices(kubeconfig, node)
    if output == "json":
        echo(json.dumps(slices, indent=2))
    elif output == "yaml":
        echo(yaml.safe_dump_all(slices, sort_keys=False).rstrip())
    else:
        for line in table(slice_rows(slices)) or ["no devices published"]:
            echo(line)


def run_explain(
    claim_files: Sequence[str],
    *,
    profile: str | None,
    kubeconfig: str | None,
    node: str | None,
    class_files: Sequence[str],
    gates: FeatureGates,
    output: str,
    echo: Callable[[str], None],
    no_headers: bool = False,
) -> bool:
    """``nvdra explain``: True when every claim got an allocation."""
    if kubeconfig is not None and profile is not None:
        raise InputFileError("give either --simulate or --kubeconfig, not both")
    extra = [doc for _, doc in load_documents(class_files) if doc.get("kind") == "DeviceClass"]
    view: ClusterView | None = None
    if kubeconfig is not None:
        if not node:
            raise InputFileError("--kubeconfig needs --node (the node to allocate on)")
        _progress(f"reading ResourceSlices of node {node}, DeviceClasses and allocated claims …")
        view = cluster_view(kubeconfig, node)
        slices, node_name = view.slices, node
        _progress(f"{len(view.classes)} DeviceClasses, {len(view.allocated)} allocated claims in the cluster")
    else:
        node_name = node or "node"
        slices = simulated_slices(profile or "dgx-h100", gates, node_name)
    _progress(f"allocating against {sum(len(s['spec'].get('devices') or []) for s in slices)} devices …")
    objects, converted = _current_api([doc for _, doc in load_documents(claim_files)])
    for note in converted:
        echo(f"note: {note}")
    classes = [*(view.classes if view else []), *extra]
    classes += [o for o in objects if o.get("kind") == "DeviceClass"]
    served = [*(builtin_device_classes().values() if view is None else ()), *classes]
    groups, notes = claim_groups(objects, classes=served)
    if not groups:
        raise InputFileError(
            "no ResourceClaim, ResourceClaimTemplate, or Pod or workload using one in the input"
        )
    for note in notes:
        echo(f"note: {note}")
    ok, allocated = _allocate_groups(
        groups,
        slices,
        node_name=node_name,
        classes=classes,
        taint_rules=[o for o in objects if o.get("kind") == "DeviceTaintRule"],
        view=view,
        output=output,
        echo=echo,
        no_headers=no_headers,
    )
    if output in ("yaml", "json"):
        from nvdra.tool.output import as_list

        listed = as_list(allocated)
        echo(
            json.dumps(listed, indent=2)
            if output == "json"
            else yaml.safe_dump(listed, sort_keys=False).rstrip()
        )
    return ok


def _current_api(objects: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects of a removed ``resource.k8s.io`` version (v1alpha2, v1alpha3) replaced by their
    ``v1`` equivalent — so a classic claim is not read as one asking for nothing — with a note each."""
    from nvdra.tool.validate import REMOVED_VERSIONS, v1_equivalent, v1alpha3_equivalent

    out, notes = [], []
    for obj in objects:
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        if group != "resource.k8s.io" or version not in REMOVED_VERSIONS:
            out.append(obj)
            continue
        converted = v1_equivalent(obj) if version == "v1alpha2" else v1alpha3_equivalent(obj)
        name = f"{obj.get('kind')} {'/'.join(_key(obj))}"
        if converted is None:
            notes.append(f"{name}: resource.k8s.io/{version} was removed; left out (no v1 equivalent)")
            continue
        out.append(converted[0])
        notes.append(
            f"{name}: resource.k8s.io/{version} was removed in Kubernetes {REMOVED_VERSIONS[version]}; "
            "explained as its resource.k8s.io/v1 equivalent (nvdra validate --fix writes it)"
        )
    return out, notes


def _allocate_groups(
    groups: Sequence[ClaimGroup],
    slices: Sequence[Mapping[str, Any]],
    *,
    node_name: str,
    classes: Sequence[Mapping[str, Any]],
    view: ClusterView | None,
    output: str,
    echo: Callable[[str], None],
    no_headers: bool = False,
    taint_rules: Sequence[Mapping[str, Any]] = (),
) -> tuple[bool, list[dict[str, Any]]]:
    """Allocate group after group, each against what the earlier ones took; a claim shared by two
    pods is allocated once. Returns whether all got devices, and the allocated claims.
    ``taint_rules``: DeviceTaintRules of the input, besides the cluster's."""
    held: list[Mapping[str, Any]] = list(view.allocated if view else ())
    rules = [*(view.taint_rules if view else ()), *taint_rules]
    done: set[tuple[str, str]] = set()
    allocated: list[dict[str, Any]] = []
    ok = True
    for group in groups:
        todo = [c for c in group.claims if _key(c) not in done]
        if group.title and output not in ("yaml", "json"):
            shared = [f"{ns}/{n}" for ns, n in (_key(c) for c in group.claims) if (ns, n) in done]
            echo(f"== {group.title}" + (f" (shares {', '.join(shared)}, allocated above)" if shared else ""))
        if not todo:
            continue
        diag, claims = explain_claims(
            [("", c) for c in todo],
            slices,
            node_name=node_name,
            extra_classes=classes,
            builtin=view is None,
            allocated_claims=held,
            node_labels=view.node_labels if view else None,
            taint_rules=rules,
        )
        if output not in ("yaml", "json") or diag.outcome.allocations is None:
            render(diag, claims, "wide" if output == "wide" else "table", echo, no_headers=no_headers)
        ok = ok and diag.outcome.ok
        for claim, allocation in zip(claims, diag.outcome.allocations or [], strict=False):
            filled = {**claim, "status": {**(claim.get("status") or {}), "allocation": allocation}}
            done.add(_key(claim))
            allocated.append(filled)
            held.append(filled)
    return ok, allocated
