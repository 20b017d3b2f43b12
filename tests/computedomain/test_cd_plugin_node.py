"""The CD plugin's node side: the simulated driver root's IMEX capability, and metrics on --http-endpoint."""

from __future__ import annotations

import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nvdra.kubeletplugin import FakeKube, KubeletClient
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.nvml import SimulatedNvml, load_profile, make_simulated_driver_root, refresh_mig_capabilities
from nvdra.nvml._driver_root import FABRIC_IMEX_MGMT_MINOR
from nvdra.plugins.computedomain.assembly import prepared_device_counts
from nvdra.plugins.computedomain.cdi import FABRIC_MGMT_CAP
from nvdra.plugins.computedomain.serve import serve
from nvdra.plugins.computedomain.simcluster import SimCluster
from tests.plugin_harness import cd_plugin_config

CAP = FABRIC_MGMT_CAP.lstrip("/")


@pytest.mark.parametrize("profile", ["gb200-nvl72-tray", "dgx-h100"])
def test_fabric_profiles_get_the_imex_management_capability(tmp_path: Path, profile: str) -> None:
    """Profiles with fabric info get fabric-imex-mgmt (minor after the MIG range, 0400) and its node."""
    root = make_simulated_driver_root(load_profile(profile), tmp_path)
    text = (root / CAP).read_text()
    assert f"DeviceFileMinor: {FABRIC_IMEX_MGMT_MINOR}\n" in text
    assert "DeviceFileMode: 256\n" in text
    assert (root / f"dev/nvidia-caps/nvidia-cap{FABRIC_IMEX_MGMT_MINOR}").exists()
    minors = (root / "proc/driver/nvidia-caps/mig-minors").read_text().split()
    assert str(FABRIC_IMEX_MGMT_MINOR) not in minors  # no MIG capability shares the minor


@pytest.mark.parametrize("profile", ["pcie-l4", "dgx-a100"])
def test_profiles_without_fabric_have_no_imex_capability(tmp_path: Path, profile: str) -> None:
    """GPUs that answer NOT_SUPPORTED for fabric info leave the capability out."""
    root = make_simulated_driver_root(load_profile(profile), tmp_path)
    assert not (root / CAP).exists()
    assert not (root / f"dev/nvidia-caps/nvidia-cap{FABRIC_IMEX_MGMT_MINOR}").exists()


def test_refreshing_mig_capabilities_keeps_the_imex_node(tmp_path: Path) -> None:
    """A MIG change rewrites the MIG cap nodes but never removes the IMEX management node."""
    backend = SimulatedNvml(load_profile("gb200-nvl72-tray"))
    backend.init()
    root = make_simulated_driver_root(backend, tmp_path)
    refresh_mig_capabilities(backend, root)
    assert (root / f"dev/nvidia-caps/nvidia-cap{FABRIC_IMEX_MGMT_MINOR}").exists()
    assert (root / CAP).exists()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets."""
    with tempfile.TemporaryDirectory(prefix="nvdra-cdm-") as d:
        yield Path(d)


def scrape(port: int, path: str = "/metrics") -> str:
    """GET the metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode())


def value(text: str, name: str, label: str, label_value: str) -> float:
    """The CD driver's sample ``name`` whose ``label`` is ``label_value``."""
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
        and s.labels.get(label) == label_value
        and s.labels.get("driver") == "compute-domain.nvidia.com"
    )


def test_cd_plugin_serves_metrics_and_counts_calls(tmp_path: Path, sock_dir: Path) -> None:
    """--http-endpoint serves the nvidia_dra series for the CD driver; a kubelet call is counted."""
    config = cd_plugin_config(sock_dir, cdi_root=tmp_path / "cdi", http_endpoint="127.0.0.1:0")
    store = FakeKube()
    store.add_node("n1")
    with serve(config, kube=store) as plugin, KubeletClient(sock_dir / "reg") as kubelet:
        assert plugin.metrics_port and plugin.helper is not None
        before = scrape(plugin.metrics_port)
        unprepares = ("nvidia_dra_requests_total", "operation", "unprepare")
        assert value(before, *unprepares) == 0
        assert value(before, "nvidia_dra_prepared_devices", "device_type", "daemon") == 0
        assert value(before, "nvidia_dra_prepared_devices", "device_type", "channel") == 0
        registered = kubelet.register(plugin.helper.registration_socket)
        ref = ClaimRef(namespace="default", name="gone", uid="0b0e6d8e-4a4b-4b38-9a57-000000000001")
        assert registered.unprepare([ref]) == {ref.uid: ""}
        assert value(scrape(plugin.metrics_port), *unprepares) == 1


def test_prepared_devices_gauge_counts_daemon_and_channel(tmp_path: Path, sock_dir: Path) -> None:
    """After a one-node domain's workload is prepared, the node holds one daemon and one channel device."""
    with SimCluster(tmp_path, sock_dir, nodes=1) as c:
        cd = c.create_domain("job", num_nodes=1)
        c.schedule_workload(cd, c.nodes)
        c.run_until("channel prepared", lambda: not c.nodes[0].pending)
        plugin = c.nodes[0].plugin
        assert plugin is not None
        assert prepared_device_counts(plugin.driver) == {"daemon": 1, "channel": 1}
