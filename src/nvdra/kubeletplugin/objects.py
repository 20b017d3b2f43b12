"""Generic Kubernetes objects: a resource type, the ``ObjectApi`` protocol, and an in-memory store.

The names live in :mod:`nvdra.kubeletplugin.store`, one module per concern; this module gathers them:
:class:`ObjectApi` and the resource types (``store.api``), :class:`ObjectStore` with the
kube-apiserver's semantics (``store.objectstore``, whose docstring lists them), patches, selectors,
schema pruning and validation rules.
"""

from __future__ import annotations

from nvdra.kubeletplugin.store.api import (
    DAEMON_SETS,
    DEPLOYMENTS,
    DEVICE_CLASSES,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    RESOURCE_CLAIM_TEMPLATES,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    JsonObject,
    ObjectApi,
    ResourceType,
    WatchEvent,
    WatchStream,
    expired_status,
    failure_status,
)
from nvdra.kubeletplugin.store.objectstore import Admission, ObjectStore, Validator
from nvdra.kubeletplugin.store.patches import json_patch, merge_patch, strategic_merge_patch
from nvdra.kubeletplugin.store.rules import (
    claim_spec_problems,
    meta_problems,
    raw_extension_paths,
    raw_extensions,
)
from nvdra.kubeletplugin.store.schema import drop_field, unknown_fields
from nvdra.kubeletplugin.store.selectors import FieldSelector, LabelSelector, match_fields, match_labels

__all__ = [
    "DAEMON_SETS",
    "DEPLOYMENTS",
    "DEVICE_CLASSES",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "PODS",
    "RESOURCE_CLAIMS",
    "RESOURCE_CLAIM_TEMPLATES",
    "RESOURCE_SLICES",
    "Admission",
    "FieldSelector",
    "JsonObject",
    "LabelSelector",
    "ObjectApi",
    "ObjectStore",
    "ResourceType",
    "Validator",
    "WatchEvent",
    "WatchStream",
    "claim_spec_problems",
    "drop_field",
    "expired_status",
    "failure_status",
    "json_patch",
    "match_fields",
    "match_labels",
    "merge_patch",
    "meta_problems",
    "raw_extension_paths",
    "raw_extensions",
    "strategic_merge_patch",
    "unknown_fields",
]
