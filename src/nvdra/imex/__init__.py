"""nvdra.imex: IMEX orchestration for ComputeDomains, as pure code (imports only ``nvdra.core``).

- :mod:`~nvdra.imex.config`: the nvidia-imex config, nodes file and ``/etc/hosts`` block;
- :mod:`~nvdra.imex.cliques`: a node's clique id from fabric info, clique names, central index assignment;
- :mod:`~nvdra.imex.channels`: which IMEX channels a workload gets;
- :mod:`~nvdra.imex.objects`: the DaemonSet and ResourceClaimTemplates of a ComputeDomain;
- :mod:`~nvdra.imex.reconcile`: the controller's plan — observed objects in, minimal writes out.

Processes (plugin, controller, daemon) and the fake ``nvidia-imex`` live in
``nvdra.plugins.computedomain``.
"""

from __future__ import annotations

__all__ = [
    "CD_DRIVER_NAME",
    "CLIQUE_LABEL",
    "DEFAULT_CHANNEL_COUNT",
    "DOMAIN_LABEL",
    "FINALIZER",
    "PUBLISHED_CHANNEL",
    "Action",
    "IndexAssignment",
    "Observed",
    "Settings",
    "assign_indices",
    "channel_ids",
    "clique_id_of",
    "clique_object_name",
    "daemon_claim_template",
    "daemon_set",
    "daemon_set_name",
    "desired_status",
    "dns_name",
    "group_by_clique",
    "parse_clique_id",
    "parse_config",
    "parse_hosts_block",
    "parse_nodes_file",
    "plan",
    "pod_ready",
    "refresh",
    "render_config",
    "render_nodes_file",
    "update_hosts",
    "workload_claim_template",
]

from nvdra.imex.channels import DEFAULT_CHANNEL_COUNT, PUBLISHED_CHANNEL, channel_ids
from nvdra.imex.cliques import (
    IndexAssignment,
    assign_indices,
    clique_id_of,
    clique_object_name,
    group_by_clique,
    parse_clique_id,
)
from nvdra.imex.config import (
    dns_name,
    parse_config,
    parse_hosts_block,
    parse_nodes_file,
    render_config,
    render_nodes_file,
    update_hosts,
)
from nvdra.imex.objects import (
    CD_DRIVER_NAME,
    CLIQUE_LABEL,
    DOMAIN_LABEL,
    FINALIZER,
    daemon_claim_template,
    daemon_set,
    daemon_set_name,
    workload_claim_template,
)
from nvdra.imex.reconcile import Action, Observed, Settings, desired_status, plan, pod_ready, refresh
