"""Shared fixtures for the GPU kubelet plugin tests: a simulated dgx-h100, claim builders, the CDI schema.

Everything here is real: the simulated NVML backend and its generated driver root, the official CDI
JSON schema, and allocated ResourceClaims in the v1 JSON shape the API server returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from nvdra.core.checkpoint import Checkpoint
from nvdra.core.devices import Inventory
from nvdra.core.featuregates import parse_feature_gates
from nvdra.kubeletplugin.types import ClaimRef, PrepareResult
from nvdra.nvml import SimulatedNvml, discover_inventory, load_profile, make_simulated_driver_root
from nvdra.plugins.gpu.cdi import GpuClaimSpecs
from nvdra.plugins.gpu.devices import AllocatableDevice
from nvdra.plugins.gpu.driver import ClaimSpecs, GpuDriver
from nvdra.plugins.gpu.effects import Applied, Effects
from nvdra.plugins.state import CheckpointStore
from tests.cdi_schema import cdi_validator

DRIVER = "gpu.nvidia.com"
PROFILE = "dgx-h100"
NODE = "n1"
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "cdi-schema"
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "samples"
SPEC_PREFIX = "k8s.gpu.nvidia.com-claim_"
CDI_KIND = "k8s.gpu.nvidia.com/claim"

JsonObject = dict[str, Any]


# -- claims --------------------------------------------------------------------------------------


def result(
    device: str, *, request: str = "gpu", pool: str = NODE, driver: str = DRIVER, admin: bool = False
) -> JsonObject:
    """One allocation result (``status.allocation.devices.results[]``)."""
    out: JsonObject = {"request": request, "driver": driver, "pool": pool, "device": device}
    if admin:
        out["adminAccess"] = True
    return out


def opaque(
    parameters: JsonObject, *, requests: Sequence[str] = (), source: str = "FromClaim", driver: str = DRIVER
) -> JsonObject:
    """One ``status.allocation.devices.config[]`` entry carrying opaque parameters."""
    entry: JsonObject = {"source": source, "opaque": {"driver": driver, "parameters": parameters}}
    if requests:
        entry["requests"] = list(requests)
    return entry


def gpu_config(**fields: Any) -> JsonObject:
    """A ``GpuConfig`` parameters object with the given top-level fields."""
    return {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", **fields}


def allocated_claim(
    results: Sequence[JsonObject],
    *,
    uid: str | None = None,
    name: str | None = None,
    namespace: str = "default",
    config: Sequence[JsonObject] = (),
) -> JsonObject:
    """An allocated ResourceClaim (v1 JSON) whose requests are the results' parent request names."""
    uid = uid or str(uuid.uuid4())
    requests = sorted({r["request"].split("/", 1)[0] for r in results})
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name or f"claim-{uid[:8]}", "namespace": namespace, "uid": uid},
        "spec": {
            "devices": {"requests": [{"name": r, "exactly": {"deviceClassName": DRIVER}} for r in requests]}
        },
        "status": {
            "allocation": {"devices": {"results": [dict(r) for r in results], "config": list(config)}}
        },
    }


def sample_claim() -> JsonObject:
    """The real allocated claim of the shared samples (class + claim GpuConfig, pool ``sim-a``)."""
    loaded: JsonObject = yaml.safe_load((SAMPLES_DIR / "resourceclaim-allocated.yaml").read_text())
    return loaded


def spec_files(cdi_root: Path) -> list[Path]:
    """The GPU driver's claim specs in ``cdi_root`` (temp files and others excluded)."""
    return sorted(p for p in cdi_root.glob(f"{SPEC_PREFIX}*.yaml"))


# -- driver calls and what they leave on disk -----------------------------------------------------


def ref_of(claim: JsonObject) -> ClaimRef:
    """The kubelet's reference to ``claim``."""
    meta = claim["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def uid_of(claim: JsonObject) -> str:
    """The claim's UID."""
    return str(claim["metadata"]["uid"])


def prepare_one(driver: GpuDriver, claim: JsonObject) -> PrepareResult:
    """Prepare a single claim and return its result."""
    return driver.prepare_resource_claims([claim])[uid_of(claim)]


def on_disk(node: DriverNode, boot_id: str = "boot-1") -> Checkpoint:
    """The checkpoint as a restarted plugin (same boot unless told) would read it."""
    checkpoint, _ = node.store(boot_id).load()
    return checkpoint


def cdi_id(uid: str, device: str) -> str:
    """The CDI device id the driver must return for ``device`` of claim ``uid``."""
    return f"{CDI_KIND}={uid}-{device}"


def fingerprint(path: Path) -> tuple[int, int, int]:
    """(inode, mtime ns, size): changes whenever the file is rewritten (atomic writes replace the inode)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


class PreparesEverything:
    """A DRA driver that prepares and unprepares every claim and has no errors to handle (for wrappers of a
    driver, such as the claim status reporter)."""

    def prepare_resource_claims(self, claims: Any) -> dict[str, PrepareResult]:
        return {c["metadata"]["uid"]: PrepareResult() for c in claims}

    def unprepare_resource_claims(self, claims: Any) -> dict[str, str]:
        return {c.uid: "" for c in claims}

    def handle_error(self, error: BaseException, message: str) -> None:
        raise AssertionError(message)


# -- CDI schema ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cdi_schema() -> Callable[[Path], JsonObject]:
    """Load a spec file and validate it against the official CDI schema (also refusing unknown keys)."""
    official, strict = cdi_validator(strict=False), cdi_validator(strict=True)

    def check(path: Path) -> JsonObject:
        doc: JsonObject = yaml.safe_load(path.read_text())
        official.validate(doc)
        strict.validate(doc)
        return doc

    return check


# -- a simulated node ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def inventory() -> Inventory:
    """The discovered inventory of a simulated dgx-h100 (eight H100s, gpu-0 … gpu-7)."""
    backend = SimulatedNvml(load_profile(PROFILE))
    backend.init()
    try:
        return discover_inventory(backend)
    finally:
        backend.shutdown()


@pytest.fixture(scope="session")
def driver_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated host driver root of the simulated dgx-h100 (read-only use)."""
    return make_simulated_driver_root(load_profile(PROFILE), tmp_path_factory.mktemp("driver-root"))


class DriverNode:
    """A node's state directories plus a factory for GpuDriver objects over them (restarts = new objects)."""

    def __init__(self, base: Path, inventory: Inventory, driver_root: Path, *, node_name: str = NODE) -> None:
        self.base = base
        self.inventory = inventory
        self.driver_root = driver_root
        self.node_name = node_name
        self.cdi_root = base / "cdi"
        self.plugin_dir = base / "plugin"
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.plugin_dir / "checkpoint.json"
        self._drivers: list[GpuDriver] = []

    def specs(self) -> GpuClaimSpecs:
        """A fresh claim-spec writer over this node's CDI root and the simulated driver root."""
        return GpuClaimSpecs(
            cdi_root=self.cdi_root,
            host_driver_root=self.driver_root,
            container_driver_root=self.driver_root,
            driver_version=self.inventory.driver_version,
        )

    def store(self, boot_id: str = "boot-1") -> CheckpointStore:
        """A checkpoint store over this node's checkpoint file."""
        return CheckpointStore(self.checkpoint_path, boot_id=boot_id)

    def driver(
        self,
        *,
        gates: str = "",
        boot_id: str = "boot-1",
        start: bool = True,
        effects: Effects | None = None,
        shares: bool = False,
        specs: ClaimSpecs | None = None,
    ) -> GpuDriver:
        """A new driver object (as after a process start), started unless ``start`` is False; ``specs``
        replaces the node's spec writer."""
        driver = GpuDriver(
            node_name=self.node_name,
            inventory=self.inventory,
            gates=parse_feature_gates(gates),
            store=self.store(boot_id),
            specs=self.specs() if specs is None else specs,
            effects=effects,
            shares=shares,
        )
        self._drivers.append(driver)
        if start:
            driver.start()
        return driver

    def spec_path(self, uid: str) -> Path:
        """Where the spec of claim ``uid`` lives."""
        return self.cdi_root / f"{SPEC_PREFIX}{uid}.yaml"

    def close(self) -> None:
        """Release every driver's I/O threads."""
        for driver in self._drivers:
            driver.close()


@pytest.fixture
def node(tmp_path: Path, inventory: Inventory, driver_root: Path) -> Iterator[DriverNode]:
    """A fresh simulated node with empty state (node name ``n1``)."""
    made = DriverNode(tmp_path, inventory, driver_root)
    yield made
    made.close()


class KilledAtSpecWrite:
    """A driver's CDI specs whose writes never happen: the plugin dies there (``kill`` is raised), after
    the claim's effects and before its checkpoint entry; everything else is the real specs'."""

    def __init__(self, inner: ClaimSpecs, kill: type[BaseException]) -> None:
        self.inner = inner
        self.kill = kill
        self.in_memory = inner.in_memory

    def device_id(self, claim_uid: str, device_name: str) -> str:
        return self.inner.device_id(claim_uid, device_name)

    def write(
        self, claim_uid: str, devices: Sequence[AllocatableDevice], applied: Sequence[Applied] = ()
    ) -> None:
        raise self.kill

    def write_many(
        self, claims: Mapping[str, Sequence[AllocatableDevice]]
    ) -> dict[str, BaseException | None]:
        raise self.kill

    def remove(self, claim_uid: str) -> None:
        self.inner.remove(claim_uid)

    def remove_many(self, claim_uids: Sequence[str]) -> dict[str, BaseException | None]:
        return self.inner.remove_many(claim_uids)

    def exists(self, claim_uid: str) -> bool:
        return self.inner.exists(claim_uid)

    def claim_uids(self) -> set[str]:
        return self.inner.claim_uids()
