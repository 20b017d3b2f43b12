"""nvdra.kubeletplugin: the reusable DRA kubelet-plugin toolkit (Python's kubeletplugin helper).

A driver implements :class:`DraDriver` and calls :func:`start`; the toolkit serves registration and
the DRA v1/v1beta1 services on unix sockets, fetches claims, serializes calls, and publishes
ResourceSlices through :class:`ResourceSlicePublisher` once the kubelet has confirmed registration.
For tests: :class:`FakeKube` (in-memory API), :class:`ApiServer` (in-process HTTP API server) and
:class:`KubeletClient` (registers and calls a plugin over its real sockets, as the kubelet does).

Importing this package loads grpc and what serving the sockets needs, nothing more: the API client
(:class:`KubernetesKubeApi`, urllib3; the kubernetes client only for kubeconfigs with exec or
auth-provider credentials), the object store, informer, publisher, liveness server and the test tools
are loaded on first use, so that a plugin registers with the kubelet without waiting for them.
"""

from typing import TYPE_CHECKING, Any

from nvdra.kubeletplugin._grpc import PluginRpcError
from nvdra.kubeletplugin.health import DeviceHealth, HealthReporter, HealthStatus
from nvdra.kubeletplugin.helper import Helper, PluginOptions, SlicePublisher, start
from nvdra.kubeletplugin.logrepeat import RepeatFilter
from nvdra.kubeletplugin.registration import RegistrationStatus
from nvdra.kubeletplugin.serialize import RequestSerializer
from nvdra.kubeletplugin.sockets import SocketPaths, socket_paths
from nvdra.kubeletplugin.types import (
    ClaimRef,
    DraDriver,
    DriverResources,
    KubeApi,
    Pool,
    PreparedDevice,
    PrepareResult,
    Slice,
)

if TYPE_CHECKING:  # loaded on first use (see __getattr__)
    from nvdra.kubeletplugin._kube import KubernetesKubeApi
    from nvdra.kubeletplugin.client import (
        HealthWatch,
        KubeletClient,
        PluginInfo,
        RegisteredPlugin,
        RegistrationRejected,
    )
    from nvdra.kubeletplugin.fake import FakeKube, KubeCall
    from nvdra.kubeletplugin.informer import Backoff, Informer
    from nvdra.kubeletplugin.liveness import start_liveness_server
    from nvdra.kubeletplugin.objects import (
        DAEMON_SETS,
        DEPLOYMENTS,
        LEASES,
        NODES,
        PODS,
        RESOURCE_CLAIM_TEMPLATES,
        RESOURCE_CLAIMS,
        ObjectApi,
        ResourceType,
    )
    from nvdra.kubeletplugin.publisher import (
        DroppedFieldsError,
        PublisherStatistics,
        ResourceSlicePublisher,
        RetryPolicy,
    )
    from nvdra.kubeletplugin.ratelimit import RateLimiterStatistics, TokenBucket
    from nvdra.kubeletplugin.store.objectstore import ObjectStore
    from nvdra.kubeletplugin.testing_apiserver import ApiServer

# The kubelet stand-in and the HTTP API server are test tools: a plugin never needs them, and importing
# them (http.server, email, the kubelet client's protos) would delay its registration with the kubelet.
# The API client (urllib3), object store, informer, publisher and liveness server are needed only
# once the plugin builds its driver, after it has registered (docs/performance.md, start-up).
_OBJECTS = ("DAEMON_SETS", "DEPLOYMENTS", "LEASES", "NODES", "PODS", "RESOURCE_CLAIM_TEMPLATES")
_LAZY = {
    **dict.fromkeys(
        (*_OBJECTS, "RESOURCE_CLAIMS", "ObjectApi", "ResourceType"), "nvdra.kubeletplugin.objects"
    ),
    **dict.fromkeys(
        ("DroppedFieldsError", "PublisherStatistics", "ResourceSlicePublisher", "RetryPolicy"),
        "nvdra.kubeletplugin.publisher",
    ),
    **dict.fromkeys(("RateLimiterStatistics", "TokenBucket"), "nvdra.kubeletplugin.ratelimit"),
    **dict.fromkeys(("Backoff", "Informer"), "nvdra.kubeletplugin.informer"),
    **dict.fromkeys(("FakeKube", "KubeCall"), "nvdra.kubeletplugin.fake"),
    "KubernetesKubeApi": "nvdra.kubeletplugin._kube",
    "ObjectStore": "nvdra.kubeletplugin.store.objectstore",
    "start_liveness_server": "nvdra.kubeletplugin.liveness",
    "ApiServer": "nvdra.kubeletplugin.testing_apiserver",
    "HealthWatch": "nvdra.kubeletplugin.client",
    "KubeletClient": "nvdra.kubeletplugin.client",
    "PluginInfo": "nvdra.kubeletplugin.client",
    "RegisteredPlugin": "nvdra.kubeletplugin.client",
    "RegistrationRejected": "nvdra.kubeletplugin.client",
}


def __getattr__(name: str) -> Any:
    """Import a lazily loaded name (see ``_LAZY``) on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DAEMON_SETS",
    "DEPLOYMENTS",
    "LEASES",
    "NODES",
    "PODS",
    "RESOURCE_CLAIMS",
    "RESOURCE_CLAIM_TEMPLATES",
    "ApiServer",
    "Backoff",
    "ClaimRef",
    "DeviceHealth",
    "DraDriver",
    "DriverResources",
    "DroppedFieldsError",
    "FakeKube",
    "HealthReporter",
    "HealthStatus",
    "HealthWatch",
    "Helper",
    "Informer",
    "KubeApi",
    "KubeCall",
    "KubeletClient",
    "KubernetesKubeApi",
    "ObjectApi",
    "ObjectStore",
    "PluginInfo",
    "PluginOptions",
    "PluginRpcError",
    "Pool",
    "PrepareResult",
    "PreparedDevice",
    "PublisherStatistics",
    "RateLimiterStatistics",
    "RegisteredPlugin",
    "RegistrationRejected",
    "RegistrationStatus",
    "RepeatFilter",
    "RequestSerializer",
    "ResourceSlicePublisher",
    "ResourceType",
    "RetryPolicy",
    "Slice",
    "SlicePublisher",
    "SocketPaths",
    "TokenBucket",
    "socket_paths",
    "start",
    "start_liveness_server",
]
