"""nvdra.kubeletplugin: the reusable DRA kubelet-plugin toolkit (Python's kubeletplugin helper).

A driver implements :class:`DraDriver` and calls :func:`start`; the toolkit serves registration and
the DRA v1/v1beta1 services on unix sockets, fetches claims, serializes calls, and publishes
ResourceSlices through :class:`ResourceSlicePublisher` once the kubelet has confirmed registration.
For tests: :class:`FakeKube` (in-memory API), :class:`ApiServer` (in-process HTTP API server) and
:class:`KubeletClient` (registers and calls a plugin over its real sockets, as the kubelet does).

Importing this package loads grpc but not the kubernetes client (:class:`KubernetesKubeApi` needs it only
for kubeconfigs with exec or auth-provider credentials), nor the test tools (loaded on first use).
"""

from typing import TYPE_CHECKING, Any

from nvdra.kubeletplugin._grpc import PluginRpcError
from nvdra.kubeletplugin._kube import KubernetesKubeApi
from nvdra.kubeletplugin.fake import FakeKube, KubeCall
from nvdra.kubeletplugin.health import DeviceHealth, HealthReporter, HealthStatus
from nvdra.kubeletplugin.helper import Helper, SlicePublisher, start
from nvdra.kubeletplugin.informer import Backoff, Informer
from nvdra.kubeletplugin.liveness import start_liveness_server
from nvdra.kubeletplugin.logrepeat import RepeatFilter
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
from nvdra.kubeletplugin.registration import RegistrationStatus
from nvdra.kubeletplugin.serialize import RequestSerializer
from nvdra.kubeletplugin.sockets import SocketPaths, socket_paths
from nvdra.kubeletplugin.store.objectstore import ObjectStore
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

if TYPE_CHECKING:  # test tools, loaded on first use (see __getattr__)
    from nvdra.kubeletplugin.client import (
        HealthWatch,
        KubeletClient,
        PluginInfo,
        RegisteredPlugin,
        RegistrationRejected,
    )
    from nvdra.kubeletplugin.testing_apiserver import ApiServer

# The kubelet stand-in and the HTTP API server are test tools: a plugin never needs them, and importing
# them (http.server, email, the kubelet client's protos) would delay its registration with the kubelet.
_LAZY = {
    "ApiServer": "nvdra.kubeletplugin.testing_apiserver",
    "HealthWatch": "nvdra.kubeletplugin.client",
    "KubeletClient": "nvdra.kubeletplugin.client",
    "PluginInfo": "nvdra.kubeletplugin.client",
    "RegisteredPlugin": "nvdra.kubeletplugin.client",
    "RegistrationRejected": "nvdra.kubeletplugin.client",
}


def __getattr__(name: str) -> Any:
    """Import a test tool on first use."""
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
