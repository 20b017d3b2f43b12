"""Fixtures for the gRPC side of the toolkit: a tiny driver, a tiny claim store, short socket dirs."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from nvdra.core import errors
from nvdra.kubeletplugin.types import ClaimRef, DriverResources, PreparedDevice, PrepareResult

DRIVER = "gpu.example.com"


def make_claim(
    name: str, uid: str, *, namespace: str = "default", requests: Sequence[str] = ("gpu",)
) -> dict[str, Any]:
    """An allocated ResourceClaim (v1 JSON) with one device result per request."""
    results = [
        {"request": r, "driver": DRIVER, "pool": "node-a", "device": f"gpu-{i}"}
        for i, r in enumerate(requests)
    ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"devices": {"requests": [{"name": r.split("/")[0]} for r in requests]}},
        "status": {"allocation": {"devices": {"results": results}}},
    }


class ClaimStore:
    """A tiny KubeApi: ResourceClaims by namespace/name; records every GET."""

    def __init__(self, *claims: dict[str, Any]) -> None:
        self.claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in claims}
        self.gets: list[tuple[str, str]] = []
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    def add(self, claim: dict[str, Any]) -> None:
        self.claims[(claim["metadata"]["namespace"], claim["metadata"]["name"])] = claim

    def resource_api_version(self) -> str:
        return "v1"

    def server_version(self) -> tuple[int, int]:
        return (1, 34)

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            self.gets.append((namespace, name))
        if self.fail_with is not None:
            raise self.fail_with
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise errors.KubeNotFound(f"resourceclaims {name!r} not found", status=404) from None

    def get_node(self, name: str) -> dict[str, Any]:
        raise errors.KubeNotFound(f"nodes {name!r} not found", status=404)

    def list_resource_slices(self, *, driver: str, node_name: str | None = None) -> list[dict[str, Any]]:
        return []

    def create_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        raise errors.KubeUnavailable("not served by ClaimStore", status=503)

    def update_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        raise errors.KubeUnavailable("not served by ClaimStore", status=503)

    def delete_resource_slice(self, name: str, *, uid: str | None = None) -> None:
        raise errors.KubeUnavailable("not served by ClaimStore", status=503)


class TinyDriver:
    """A DraDriver that prepares each allocation result as a device with one CDI id.

    Knobs: ``raise_on_prepare``/``raise_on_unprepare`` (an exception to raise), ``skip_uids``
    (claims left unanswered), ``share_id`` (set on every device).
    """

    def __init__(self) -> None:
        self.prepared: list[list[str]] = []
        self.unprepared: list[list[str]] = []
        self.errors: list[tuple[BaseException, str]] = []
        self.raise_on_prepare: Exception | None = None
        self.raise_on_unprepare: Exception | None = None
        self.skip_uids: set[str] = set()
        self.share_id: str | None = None
        self.gate: threading.Event | None = None  # prepare waits on it when set
        self.entered = threading.Event()

    def prepare_resource_claims(self, claims: Sequence[dict[str, Any]]) -> Mapping[str, PrepareResult]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.prepared.append([c["metadata"]["uid"] for c in claims])
        if self.raise_on_prepare is not None:
            raise self.raise_on_prepare
        out: dict[str, PrepareResult] = {"not-requested-uid": PrepareResult(error="must not leak")}
        for claim in claims:
            uid = claim["metadata"]["uid"]
            if uid in self.skip_uids:
                continue
            results = claim["status"]["allocation"]["devices"]["results"]
            devices = tuple(
                PreparedDevice(
                    requests=(r["request"],),
                    pool_name=r["pool"],
                    device_name=r["device"],
                    cdi_device_ids=(f"k8s.{DRIVER}/claim={uid}-{r['device']}",),
                    share_id=self.share_id,
                )
                for r in results
            )
            out[uid] = PrepareResult(devices=devices)
        return out

    def unprepare_resource_claims(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        self.unprepared.append([c.uid for c in claims])
        if self.raise_on_unprepare is not None:
            raise self.raise_on_unprepare
        return {c.uid: "" for c in claims if c.uid not in self.skip_uids}

    def handle_error(self, error: BaseException, message: str) -> None:
        self.errors.append((error, message))


class RecordingPublisher:
    """A SlicePublisher that records the order of calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, DriverResources | None]] = []

    def start(self) -> None:
        self.events.append(("start", None))

    def update(self, resources: DriverResources) -> None:
        self.events.append(("update", resources))

    def stop(self, timeout: float | None = None) -> None:
        self.events.append(("stop", None))


@pytest.fixture
def dirs(sockdir: Path) -> tuple[Path, Path]:
    """(plugin data dir, registrar dir); the registrar dir exists, the data dir does not yet."""
    reg = sockdir / "reg"
    reg.mkdir()
    return sockdir / "plugin", reg
