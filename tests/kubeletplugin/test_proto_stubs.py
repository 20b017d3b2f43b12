"""The protos: field numbers and names as the kubelet expects, and the committed stubs are fresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nvdra.kubeletplugin._proto import (
    dra_health_v1alpha1_pb2,
    dra_v1_pb2,
    dra_v1beta1_pb2,
    grpc_health_v1_pb2,
    pluginregistration_pb2,
)

ROOT = Path(__file__).resolve().parents[2]


def _fields(message: Any) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_generated_stubs_are_fresh() -> None:
    """`scripts/gen-proto --check` passes on the committed output."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-proto"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("pb2", [dra_v1_pb2, dra_v1beta1_pb2])
def test_dra_field_numbers(pb2: Any) -> None:
    """Claim, response and Device fields carry the numbers of the kubelet's protos."""
    assert _fields(pb2.Claim) == {"namespace": 1, "uid": 2, "name": 3}
    assert _fields(pb2.NodePrepareResourceResponse) == {"devices": 1, "error": 2}
    assert _fields(pb2.NodeUnprepareResourceResponse) == {"error": 1}
    assert _fields(pb2.NodePrepareResourcesRequest) == {"claims": 1}
    device = _fields(pb2.Device)
    assert {k: v for k, v in device.items() if k != "share_id"} == {
        "request_names": 1,
        "pool_name": 2,
        "device_name": 3,
        "cdi_device_ids": 4,
    }


def test_share_id_is_optional_field_5_in_v1_only() -> None:
    """v1 Device.share_id is proto3-optional field 5; v1beta1 has no such field."""
    field = dra_v1_pb2.Device.DESCRIPTOR.fields_by_name["share_id"]
    assert field.number == 5
    assert field.has_presence
    assert "share_id" not in dra_v1beta1_pb2.Device.DESCRIPTOR.fields_by_name


def test_service_full_names() -> None:
    """Wire names match what the kubelet dials."""
    assert (
        dra_v1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name
        == "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    )
    assert (
        dra_v1beta1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name
        == "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
    )
    health = dra_health_v1alpha1_pb2.DESCRIPTOR.services_by_name["DRAResourceHealth"]
    assert health.full_name == "v1alpha1.DRAResourceHealth"
    assert health.methods_by_name["NodeWatchResources"].server_streaming
    reg = pluginregistration_pb2.DESCRIPTOR.services_by_name["Registration"]
    assert reg.full_name == "pluginregistration.Registration"
    assert grpc_health_v1_pb2.DESCRIPTOR.services_by_name["Health"].full_name == "grpc.health.v1.Health"


def test_registration_and_health_field_numbers() -> None:
    """PluginInfo, RegistrationStatus and DeviceHealth fields have the kubelet's numbers."""
    assert _fields(pluginregistration_pb2.PluginInfo) == {
        "type": 1,
        "name": 2,
        "endpoint": 3,
        "supported_versions": 4,
    }
    assert _fields(pluginregistration_pb2.RegistrationStatus) == {"plugin_registered": 1, "error": 2}
    assert _fields(dra_health_v1alpha1_pb2.DeviceHealth) == {
        "device": 1,
        "health": 2,
        "last_updated_time": 3,
        "health_check_timeout_seconds": 4,
        "message": 5,
    }
    assert _fields(dra_health_v1alpha1_pb2.DeviceIdentifier) == {"pool_name": 1, "device_name": 2}
    assert dict(dra_health_v1alpha1_pb2.HealthStatus.items()) == {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2}
