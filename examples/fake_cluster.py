"""Run a DRA driver built on ``nvdra.kubeletplugin`` end to end, with no cluster.

What a cluster would do around a kubelet plugin, in-process and over the plugin's real unix sockets:
an in-memory API server (:class:`~nvdra.kubeletplugin.FakeKube`) the plugin publishes its
ResourceSlices to, the scheduler's allocation rules (:class:`~nvdra.alloc.Allocator`) choosing devices
for a claim, and a kubelet (:class:`~nvdra.kubeletplugin.KubeletClient`) that registers the plugin and
calls ``NodePrepareResources`` / ``NodeUnprepareResources``. Both examples in this folder use it.
"""

from __future__ import annotations

__all__ = ["FakeCluster", "PublishingDriver", "fake_cluster", "unprepare_each", "write_claim_devices"]

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from nvdra.alloc import Allocator
from nvdra.cdi import ContainerEdits, claim_device_id, claim_spec, claim_spec_name, write_spec
from nvdra.core.errors import NvdraError
from nvdra.kubeletplugin import (
    ClaimRef,
    DraDriver,
    DriverResources,
    FakeKube,
    KubeletClient,
    PluginOptions,
    PreparedDevice,
    PrepareResult,
    RegisteredPlugin,
    ResourceSlicePublisher,
    start,
)

NODE = "node-a"


class PublishingDriver(DraDriver, Protocol):
    """A DRA driver that also says what its node publishes."""

    def resources(self) -> DriverResources:
        """The node's pools, slices and devices."""
        ...


def write_claim_devices(
    cdi_root: Path,
    cdi_kind: tuple[str, str],
    uid: str,
    results: Sequence[Mapping[str, Any]],
    edits: Sequence[tuple[str, ContainerEdits]],
) -> tuple[PreparedDevice, ...]:
    """What both example drivers do last in a prepare: write the claim's one CDI spec (``edits`` per device
    name, under the ``(vendor, class)`` of ``cdi_kind``) and name each allocated device's CDI device.

    Raises:
        NvdraError: the spec is invalid or cannot be written.
    """
    vendor, cls = cdi_kind
    write_spec(
        cdi_root, claim_spec(vendor, cls, uid, edits, ContainerEdits()), claim_spec_name(vendor, cls, uid)
    )
    return tuple(
        PreparedDevice(
            requests=(r["request"],),
            pool_name=r["pool"],
            device_name=r["device"],
            cdi_device_ids=(claim_device_id(vendor, cls, uid, r["device"]),),
        )
        for r in results
    )


def unprepare_each(claims: Sequence[ClaimRef], unprepare: Callable[[ClaimRef], object]) -> dict[str, str]:
    """``NodeUnprepareResources``' answer: ``unprepare`` each claim in turn; ``""`` for a claim it undid,
    the error text for one it failed on (an :class:`~nvdra.core.errors.NvdraError`)."""
    out: dict[str, str] = {}
    for ref in claims:
        try:
            unprepare(ref)
            out[ref.uid] = ""
        except NvdraError as exc:
            out[ref.uid] = str(exc)
    return out


D = TypeVar("D", bound=PublishingDriver)


class FakeCluster(Generic[D]):
    """A node with one running plugin (:attr:`driver`), its kubelet, and the API server it publishes to."""

    def __init__(
        self, driver: D, kube: FakeKube, kubelet: RegisteredPlugin, driver_name: str, work: Path
    ) -> None:
        self.driver = driver
        self.kube = kube
        self.kubelet = kubelet
        self.driver_name = driver_name
        self.work = work

    def slices(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The plugin's published ResourceSlices, once there are some."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.kube.resource_slices() if s["spec"]["driver"] == self.driver_name]
            if found:
                return found
            time.sleep(0.02)
        raise TimeoutError(f"{self.driver_name} published no ResourceSlice within {timeout} s")

    def claim(self, name: str, selector: str, config: Mapping[str, Any] | None = None) -> ClaimRef:
        """Create a one-device claim whose request selects with ``selector`` (CEL), allocated as the
        scheduler would over the published slices."""
        request = {
            "name": "dev",
            "exactly": {
                "deviceClassName": self.driver_name,
                "selectors": [{"cel": {"expression": selector}}],
            },
        }
        spec: dict[str, Any] = {"devices": {"requests": [request]}}
        if config is not None:
            opaque = {"driver": self.driver_name, "parameters": dict(config)}
            spec["devices"]["config"] = [{"requests": ["dev"], "opaque": opaque}]
        claim: dict[str, Any] = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": spec,
        }
        device_class = {
            "metadata": {"name": self.driver_name},
            "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{self.driver_name}'"}}]},
        }
        outcome = Allocator(self.slices(), [device_class], node_name=NODE).allocate([claim])
        if outcome.allocations is None:
            raise RuntimeError(f"claim {name}: no allocation ({outcome.error or 'no device fits'})")
        claim["status"] = {"allocation": outcome.allocations[0]}
        self.kube.add_claim(claim)
        return ClaimRef(namespace="default", name=name, uid=claim["metadata"]["uid"])

    def prepare(self, ref: ClaimRef) -> PrepareResult:
        """``NodePrepareResources`` for one claim, over the plugin's socket."""
        return self.kubelet.prepare([ref])[ref.uid]

    def unprepare(self, ref: ClaimRef) -> str:
        """``NodeUnprepareResources`` for one claim; the error text, empty on success."""
        return self.kubelet.unprepare([ref])[ref.uid]


@contextmanager
def fake_cluster(make_driver: Callable[[Path], D], driver_name: str) -> Iterator[FakeCluster[D]]:
    """Start the driver ``make_driver(work_dir)`` as a kubelet plugin on node ``node-a``, register it
    with a kubelet, publish its ``resources()`` and yield the running cluster."""
    with tempfile.TemporaryDirectory(prefix="nvdra-example-") as tmp:
        work = Path(tmp)
        driver = make_driver(work)
        kube = FakeKube()
        kube.add_node(NODE)
        publisher = ResourceSlicePublisher(kube, driver_name=driver_name, node_name=NODE)
        options = PluginOptions(
            driver_name=driver_name,
            node_name=NODE,
            plugin_data_dir=work / "plugins" / driver_name,
            registrar_dir=work / "plugins_registry",
        )
        helper = start(driver, kube, options, publisher=publisher)
        with helper, KubeletClient(work / "plugins_registry") as kubelet:
            helper.publish_resources(driver.resources())
            registered = kubelet.register(helper.registration_socket)
            yield FakeCluster(driver, kube, registered, driver_name, work)
