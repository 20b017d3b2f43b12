"""The user README's FabricManager example, as the tests that check it is accepted quote it.

The README shows one GpuConfig (TimeSlicing sharing, an Auto fabricTopologyConfig for a 4-GPU partition)
inside a v1alpha2 ResourceClaim; the decode, driver, webhook, validate and quickstart tests each use it.
The functions return new objects, so a test that changes its copy changes no other test's.
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]

README_V1ALPHA2_CLAIM = """\
apiVersion: resource.k8s.io/v1alpha2
kind: ResourceClaim
metadata:
  name: gpu-claim-with-fabric
spec:
  resourceClassName: nvidia.com/gpu
  parameters:
    apiVersion: nvidia.com/v1beta1
    kind: GpuConfig
    sharing:
      strategy: TimeSlicing
    fabricTopologyConfig:
      strategy: Auto
      partitionSize: 4
      virtualizationModel: BareMetal
      minBandwidth: 600.0
      maxLatency: 0.1
      partitionIDs: ["partition-1"]
"""
"""The README's example claim, exactly as written there (a removed API version)."""


def readme_fabric_topology() -> JsonObject:
    """The README's ``fabricTopologyConfig``."""
    return {
        "strategy": "Auto",
        "partitionSize": 4,
        "virtualizationModel": "BareMetal",
        "minBandwidth": 600.0,
        "maxLatency": 0.1,
        "partitionIDs": ["partition-1"],
    }


def readme_gpu_config() -> JsonObject:
    """The README's GpuConfig parameters, exactly as written there (the old ``nvidia.com`` group)."""
    return {
        "apiVersion": "nvidia.com/v1beta1",
        "kind": "GpuConfig",
        "sharing": {"strategy": "TimeSlicing"},
        "fabricTopologyConfig": readme_fabric_topology(),
    }
