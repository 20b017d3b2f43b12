"""Roll FabricTopologySupport out at run time: watch this node's ``fabric-topology-support`` label.

The label (read once at start by :func:`fabric_gate_for_node`) decides the gate per node, and the
gate decides what the node publishes (fabric attributes, partition devices) and which effects exist. A
:class:`FabricLabelWatch` follows this node's Node object (an informer field-selected by
``metadata.name``: one watch, no polling) and, when the label changes the gate's *effective* value,
logs which source decides now and calls ``on_change``; the plugin then stops serving and serves again
with the new gates, which republishes its ResourceSlices (see ``serve_until_signalled``). A label change
that leaves the gate as it was (``false`` under a gate that is off anyway) changes nothing.
"""

from __future__ import annotations

__all__ = ["FABRIC_LABEL", "FabricLabelWatch", "effective_fabric_gate", "fabric_gate_for_node"]

import logging
from collections.abc import Callable

import attrs

from nvdra.core.errors import KubeApiError
from nvdra.core.featuregates import FeatureGates, Gate, parse_bool
from nvdra.kubeletplugin import KubeApi
from nvdra.kubeletplugin.informer import Informer
from nvdra.kubeletplugin.objects import NODES, ObjectApi
from nvdra.kubeletplugin.types import JsonObject

log = logging.getLogger(__name__)

# Here rather than in nvdra.plugins.gpu.fabric (which re-exports both), so that reading the label at
# start loads none of the fabric modules while the gate is off.
FABRIC_LABEL = "resource.nvidia.com/fabric-topology-support"


def fabric_gate_for_node(gates: FeatureGates, api: KubeApi, node_name: str) -> FeatureGates:
    """Apply this node's ``resource.nvidia.com/fabric-topology-support`` label, if any, and log the decision.

    A missing Node or an unreadable label keeps the cluster-wide value (a label typo must not stop the
    plugin); the log says so.
    """
    value = ""
    try:
        labels = (api.get_node(node_name).get("metadata") or {}).get("labels") or {}
        value = str(labels.get(FABRIC_LABEL, ""))
    except KubeApiError as exc:
        log.warning("cannot read node %s for label %s: %s", node_name, FABRIC_LABEL, exc)
    if value:
        try:
            gates = gates.with_override(
                Gate.FABRIC_TOPOLOGY_SUPPORT, parse_bool(value), detail=f"node label {FABRIC_LABEL}={value}"
            )
        except ValueError as exc:
            log.error("ignoring node label %s=%r: %s", FABRIC_LABEL, value, exc)
    state = gates.state(Gate.FABRIC_TOPOLOGY_SUPPORT)
    log.info(
        "%s=%s on node %s, decided by %s%s",
        Gate.FABRIC_TOPOLOGY_SUPPORT,
        state.enabled,
        node_name,
        state.source,
        f" ({state.detail})" if state.detail else "",
    )
    return gates


def effective_fabric_gate(base: FeatureGates, labels: dict[str, str]) -> tuple[bool, str]:
    """FabricTopologySupport under ``labels``: (enabled, what decided it). A bad label value is ignored."""
    value = str(labels.get(FABRIC_LABEL, ""))
    if value:
        try:
            return parse_bool(value), f"node label {FABRIC_LABEL}={value}"
        except ValueError:
            log.error("ignoring node label %s=%r: not a boolean", FABRIC_LABEL, value)
    state = base.state(Gate.FABRIC_TOPOLOGY_SUPPORT)
    return state.enabled, f"{state.source}{f' ({state.detail})' if state.detail else ''}"


@attrs.define(kw_only=True, eq=False)
class FabricLabelWatch:
    """Calls ``on_change`` once the node's label changes the FabricTopologySupport gate (see module).

    Args:
        api: where to watch (the plugin's API client).
        node_name: this node.
        base: the gates from flags and environment, before the label.
        current: the gate's value the plugin serves with now.
        on_change: called (on the watch thread, once) when the effective value differs from ``current``.
    """

    api: ObjectApi = attrs.field(kw_only=False)
    node_name: str = attrs.field(kw_only=False)
    _base: FeatureGates
    _current: bool
    _on_change: Callable[[], None]
    changed: bool = attrs.field(init=False, default=False)
    _informer: Informer = attrs.field(init=False)

    @_informer.default
    def _node_informer(self) -> Informer:
        name = self.node_name
        informer = Informer(self.api, NODES, field_selector=f"metadata.name={name}", name=f"node {name}")
        informer.add_handler(on_add=self._check, on_update=lambda _old, new: self._check(new))
        return informer

    def start(self) -> FabricLabelWatch:
        """Start watching. Returns self."""
        self._informer.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._informer.stop()

    def _check(self, node: JsonObject) -> None:
        labels = (node.get("metadata") or {}).get("labels") or {}
        enabled, source = effective_fabric_gate(self._base, labels)
        if enabled == self._current or self.changed:
            return
        self.changed = True
        log.info(
            "%s=%s on node %s, now decided by %s: serving again to republish",
            Gate.FABRIC_TOPOLOGY_SUPPORT,
            enabled,
            self.node_name,
            source,
        )
        self._on_change()
