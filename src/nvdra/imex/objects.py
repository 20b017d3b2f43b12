"""The Kubernetes objects of a ComputeDomain, rendered as JSON (pure): names, labels, templates.

Names and labels are upstream's (upstream-driver §6.1), so tools that know upstream find them:
the DaemonSet and the daemon ResourceClaimTemplate ``computedomain-daemon-<cdUID>`` in the driver
namespace, the workload template ``spec.channel.resourceClaimTemplate.name`` in the domain's namespace,
label ``resource.nvidia.com/computeDomain=<cdUID>`` on all of them and on the nodes in use, finalizer
``resource.nvidia.com/computeDomain``.
"""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "CD_DRIVER_NAME",
    "CHANNEL_CLASS",
    "CLIQUE_LABEL",
    "DAEMON_CLASS",
    "DOMAIN_LABEL",
    "FINALIZER",
    "TARGET_LABEL",
    "daemon_claim_template",
    "daemon_set",
    "daemon_set_name",
    "domain_uid",
    "workload_claim_template",
]

from collections.abc import Mapping
from typing import Any

JsonObject = dict[str, Any]

API_VERSION = "resource.nvidia.com/v1beta1"
CD_DRIVER_NAME = "compute-domain.nvidia.com"
DOMAIN_LABEL = "resource.nvidia.com/computeDomain"
CLIQUE_LABEL = "resource.nvidia.com/computeDomain.cliqueID"
TARGET_LABEL = "resource.nvidia.com/computeDomainTarget"
FINALIZER = "resource.nvidia.com/computeDomain"
DAEMON_CLASS = "compute-domain-daemon.nvidia.com"
CHANNEL_CLASS = "compute-domain-default-channel.nvidia.com"
_DAEMON_CLAIM = "compute-domain-daemon"


def domain_uid(cd: Mapping[str, Any]) -> str:
    """The ComputeDomain's UID."""
    return str(cd["metadata"]["uid"])


def daemon_set_name(uid: str) -> str:
    """``computedomain-daemon-<cdUID>`` (also the daemon ResourceClaimTemplate's name)."""
    return f"computedomain-daemon-{uid}"


def _meta(name: str, namespace: str, uid: str, target: str | None) -> JsonObject:
    labels = {DOMAIN_LABEL: uid}
    if target:
        labels[TARGET_LABEL] = target
    return {"name": name, "namespace": namespace, "labels": labels, "finalizers": [FINALIZER]}


def _opaque(kind: str, fields: JsonObject) -> JsonObject:
    return {
        "requests": [],
        "opaque": {
            "driver": CD_DRIVER_NAME,
            "parameters": {"apiVersion": API_VERSION, "kind": kind, **fields},
        },
    }


def _template(meta: JsonObject, request: str, device_class: str, config: JsonObject) -> JsonObject:
    # Rendered in the v1 shape: the API adapter sends it at the resource.k8s.io version the server
    # serves (v1beta1 flattens the request's `exactly`), see nvdra.kubeletplugin._kube.
    config = dict(config, requests=[request])
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": meta,
        "spec": {
            "metadata": {"labels": dict(meta["labels"])},
            "spec": {
                "devices": {
                    "requests": [{"name": request, "exactly": {"deviceClassName": device_class}}],
                    "config": [config],
                }
            },
        },
    }


def workload_claim_template(cd: Mapping[str, Any]) -> JsonObject:
    """The workload channel template, in the domain's namespace (``ComputeDomainChannelConfig``)."""
    uid, spec = domain_uid(cd), cd.get("spec") or {}
    channel = spec.get("channel") or {}
    from nvdra.core.config import ChannelAllocationMode  # loaded on use: see nvdra.imex.channels

    mode = channel.get("allocationMode") or ChannelAllocationMode.SINGLE.value
    meta = _meta(channel["resourceClaimTemplate"]["name"], cd["metadata"]["namespace"], uid, "Workload")
    config = _opaque("ComputeDomainChannelConfig", {"domainID": uid, "allocationMode": mode})
    return _template(meta, "channel", CHANNEL_CLASS, config)


def daemon_claim_template(cd: Mapping[str, Any], namespace: str) -> JsonObject:
    """The daemon template, in the driver namespace (``ComputeDomainDaemonConfig``)."""
    uid = domain_uid(cd)
    meta = _meta(daemon_set_name(uid), namespace, uid, "Daemon")
    return _template(meta, "daemon", DAEMON_CLASS, _opaque("ComputeDomainDaemonConfig", {"domainID": uid}))


def daemon_set(
    cd: Mapping[str, Any],
    *,
    namespace: str,
    image: str,
    max_nodes: int,
    feature_gates: str,
    log_verbosity: int = 0,
    pull_secrets: tuple[str, ...] = (),
    simulate: str = "",
) -> JsonObject:
    """The per-domain DaemonSet of ``nvdra-cd-daemon`` pods, on the nodes labelled with the domain's UID.

    ``simulate`` (a profile name) becomes the daemons' ``NVDRA_SIMULATE``; unset, the env is left out so
    DaemonSets of a non-simulated cluster do not change.
    """
    uid = domain_uid(cd)
    name = daemon_set_name(uid)
    env = [
        {"name": "MAX_NODES_PER_IMEX_DOMAIN", "value": str(max_nodes)},
        {"name": "FEATURE_GATES", "value": feature_gates},
        {"name": "LOG_VERBOSITY", "value": str(log_verbosity)},
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
        *([{"name": "NVDRA_SIMULATE", "value": simulate}] if simulate else []),
    ] + [
        {"name": env_name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for env_name, path in (
            ("NODE_NAME", "spec.nodeName"),
            ("POD_IP", "status.podIP"),
            ("POD_UID", "metadata.uid"),
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        )
    ]

    def probe(period: int, failures: int) -> JsonObject:
        return {
            "exec": {"command": ["nvdra-cd-daemon", "check"]},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 10,
        }

    pod_spec: JsonObject = {
        "serviceAccountName": "compute-domain-daemon-service-account",
        "nodeSelector": {DOMAIN_LABEL: uid},
        "tolerations": [
            {"operator": "Exists", "effect": e} for e in ("NoSchedule", "NoExecute", "PreferNoSchedule")
        ],
        "containers": [
            {
                "name": "compute-domain-daemon",
                "image": image,
                "command": ["nvdra-cd-daemon", "-v", "$(LOG_VERBOSITY)", "run"],
                "env": env,
                # Root: the daemon rewrites /etc/hosts and /imexd, and nvidia-imex opens the root-only
                # fabric-imex-mgmt device. The image's default user is 65532, and capabilities granted to
                # a non-root user never become effective in Kubernetes (kubernetes/kubernetes#56374).
                "securityContext": {"runAsUser": 0, "runAsGroup": 0},
                "resources": {"claims": [{"name": _DAEMON_CLAIM}]},
                "startupProbe": probe(1, 1200),
                "livenessProbe": probe(60, 20),
                "readinessProbe": probe(10, 1),
            }
        ],
        "resourceClaims": [{"name": _DAEMON_CLAIM, "resourceClaimTemplateName": name}],
    }
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(name, namespace, uid, None),
        "spec": {
            "selector": {"matchLabels": {DOMAIN_LABEL: uid}},
            "template": {"metadata": {"labels": {DOMAIN_LABEL: uid}}, "spec": pod_spec},
        },
    }
