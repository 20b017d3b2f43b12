"""Fixtures for the webhook tests: gates, AdmissionReview builders, a test CA and a running server."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.featuregates import FeatureGates, parse_feature_gates
from nvdra.plugins.webhook import CertificateStore, WebhookServer, admission_gates
from tests.webhook.tls import TestCA

ALL_SHARING = "TimeSlicingSettings=true,MPSSupport=true,PassthroughSupport=true"


@pytest.fixture
def gates() -> FeatureGates:
    """The webhook's gates with sharing and passthrough on (fabric: on by the per-node rule)."""
    return admission_gates(parse_feature_gates(ALL_SHARING))


def opaque(
    parameters: Any, driver: str = "gpu.nvidia.com", requests: list[str] | None = None
) -> dict[str, Any]:
    """One ``devices.config`` entry."""
    entry: dict[str, Any] = {"opaque": {"driver": driver, "parameters": parameters}}
    if requests is not None:
        entry["requests"] = requests
    return entry


def claim(*configs: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    """A ResourceClaim with one GPU request (in ``version``'s shape) and the given configs."""
    request: dict[str, Any] = {"name": "gpu"}
    if version == "v1beta1":
        request["deviceClassName"] = "gpu.nvidia.com"
    else:
        request["exactly"] = {"deviceClassName": "gpu.nvidia.com"}
    return {
        "apiVersion": f"resource.k8s.io/{version}",
        "kind": "ResourceClaim",
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": {"devices": {"requests": [request], "config": list(configs)}},
    }


def template(*configs: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    """A ResourceClaimTemplate wrapping :func:`claim`'s spec."""
    inner = claim(*configs, version=version)
    return {
        "apiVersion": inner["apiVersion"],
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"spec": inner["spec"]},
    }


def admission_review(obj: dict[str, Any], *, uid: str = "uid-1") -> dict[str, Any]:
    """An AdmissionReview v1 request for creating ``obj``."""
    version = obj["apiVersion"].rpartition("/")[2]
    resource = "resourceclaims" if obj["kind"] == "ResourceClaim" else "resourceclaimtemplates"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "resource.k8s.io", "version": version, "kind": obj["kind"]},
            "resource": {"group": "resource.k8s.io", "version": version, "resource": resource},
            "operation": "CREATE",
            "namespace": "ns",
            "object": obj,
        },
    }


@pytest.fixture(scope="session")
def ca() -> TestCA:
    """A throwaway CA (one per session: key generation is the slow part)."""
    return TestCA()


@pytest.fixture
def tls_files(ca: TestCA, tmp_path: Path) -> tuple[Path, Path]:
    """A server certificate and key for localhost, signed by :func:`ca`."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert, key)
    return cert, key


@pytest.fixture
def server(tls_files: tuple[Path, Path], gates: FeatureGates) -> Iterator[WebhookServer]:
    """A real webhook server on 127.0.0.1 (free port), serving in a thread."""
    srv = WebhookServer(("127.0.0.1", 0), certificates=CertificateStore(*tls_files), gates=gates)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture
def https(ca: TestCA) -> Callable[..., tuple[int, bytes]]:
    """``https(port, method, path, body=None, content_type=...)`` → (status, body) over verified TLS."""

    def call(
        port: int,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("localhost", port, context=ca.client_context(), timeout=10)
        try:
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            headers = {"Content-Type": content_type} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    return call
