"""Import footprint: the pure layers load no SDK, and nvdra.nvml imports without an NVIDIA driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin_harness import clean_env

HEAVY = ("grpc", "kubernetes", "pynvml", "click")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", ["nvdra", "nvdra.core", "nvdra.core.config", "nvdra.cdi", "nvdra.nvml"])
def test_pure_layers_load_no_sdk(module: str) -> None:
    """Importing a pure layer loads none of grpc, kubernetes, pynvml or click."""
    loaded = _loaded_after(f"import {module}")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_toolkit_does_not_load_kubernetes_until_used() -> None:
    """The toolkit loads grpc but defers the kubernetes client to first use."""
    loaded = _loaded_after("import nvdra.kubeletplugin")
    assert "grpc" in loaded
    assert "kubernetes" not in loaded


def test_api_client_from_a_plain_kubeconfig_loads_no_kubernetes_or_yaml(tmp_path: Path) -> None:
    """A plugin reads its Node before it registers: a JSON kubeconfig (or in-cluster) client is built on
    urllib3 alone, so neither the kubernetes client (~0.35 s) nor a YAML parser delays registration."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    build = f"KubernetesKubeApi.from_kubeconfig({str(kubeconfig)!r})"
    loaded = _loaded_after(f"from nvdra.kubeletplugin import KubernetesKubeApi\n{build}")
    assert "urllib3" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("kubernetes", "yaml")}


@pytest.mark.parametrize("module", ["nvdra.plugins.gpu.main", "nvdra.plugins.computedomain.plugin_main"])
def test_plugin_loads_no_client_library_yaml_or_test_tools(module: str) -> None:
    """What a plugin imports before it registers: no kubernetes client, no YAML parser (the CDI writer
    loads it on its first spec), and none of the toolkit's test tools (HTTP API server, kubelet client)."""
    loaded = _loaded_after(f"import {module}")
    assert not {m for m in loaded if m.split(".")[0] in ("kubernetes", "yaml")}
    assert not loaded & {"nvdra.kubeletplugin.testing_apiserver", "nvdra.kubeletplugin.client"}


@pytest.mark.parametrize(
    ("module", "builder"),
    [
        ("nvdra.plugins.gpu.main", "nvdra.plugins.gpu"),
        ("nvdra.plugins.computedomain.plugin_main", "nvdra.plugins.computedomain"),
    ],
)
def test_plugin_main_loads_nothing_only_its_driver_needs(module: str, builder: str) -> None:
    """Each plugin serves its sockets before it builds its driver, so its main (everything loaded before
    the kubelet can register it) loads neither its ``assembly`` and driver nor NVML, the CDI writer, the
    opaque-config package or prometheus-client: they load after the sockets are served."""
    loaded = _loaded_after(f"import {module}")
    deferred = {f"{builder}.assembly", f"{builder}.driver", "nvdra.nvml", "nvdra.cdi", "nvdra.core.config"}
    assert not loaded & (deferred | {"prometheus_client"})


def test_nvml_backend_without_driver_says_where_it_looked(tmp_path: object) -> None:
    """On a machine without libnvidia-ml the real backend fails with the paths it searched."""
    code = (
        "from nvdra.nvml import PynvmlBackend\n"
        "from nvdra.core.errors import NvmlLibraryNotFound\n"
        f"b = PynvmlBackend(driver_root={str(tmp_path)!r})\n"
        "try:\n    b.init()\nexcept NvmlLibraryNotFound as e:\n    print('NOTFOUND', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.startswith("NOTFOUND")
    assert str(tmp_path) in out


# Feature modules a GPU plugin with the default gates and flags must not load: they are imported where
# their gate (FabricTopologySupport, PassthroughSupport, DeviceMetadata, DeviceBindingConditions,
# NVMLDeviceHealthCheck) or flag (--publish-fabric-partitions) needs them, so registration does not wait
# for them (docs/performance.md, start-up).
GATED_MODULES = (
    "nvdra.fabric",
    "nvdra.plugins.gpu.fabric",
    "nvdra.plugins.gpu.vfio",
    "nvdra.plugins.gpu.vfio_host",
    "nvdra.plugins.gpu.binding",
    "nvdra.plugins.gpu.health",
    "nvdra.plugins.gpu.metadata",
    "nvdra.plugins.gpu.devicestatus",
)

_SERVE_WITH_GATES = """
import json, sys
from pathlib import Path
from nvdra.kubeletplugin import FakeKube
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
root = Path(sys.argv[1])
config = PluginConfig(
    node_name="n1",
    cdi_root=root / "cdi",
    simulate="dgx-h100",
    feature_gates=sys.argv[2],
    kubelet_registrar_directory_path=root / "reg",
    kubelet_plugins_directory_path=root / "plugins",
)
with serve(config, kube=FakeKube()) as plugin:
    assert plugin.helper is not None
    print(json.dumps(sorted(sys.modules)))
"""


def test_gpu_plugin_with_default_gates_loads_no_gated_feature_module(tmp_path: Path) -> None:
    """Starting the GPU plugin (discovery, checkpoint, sockets served) with every gate at its default
    imports none of the fabric, passthrough/VFIO, binding, health or device-metadata modules."""
    out = subprocess.run(
        [sys.executable, "-c", _SERVE_WITH_GATES, str(tmp_path), ""],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    ).stdout
    loaded = set(json.loads(out))
    assert "nvdra.plugins.gpu.serve" in loaded  # the probe did run the start-up path
    assert sorted(m for m in loaded if any(m == g or m.startswith(f"{g}.") for g in GATED_MODULES)) == []


def test_gated_feature_modules_load_when_their_gates_are_on(tmp_path: Path) -> None:
    """The other side of the test above: with the gates on, the same start does load them (so the
    list of gated modules names modules the plugin really uses)."""
    gates = "FabricTopologySupport=true,PassthroughSupport=true,DeviceBindingConditions=true"
    out = subprocess.run(
        [sys.executable, "-c", _SERVE_WITH_GATES, str(tmp_path), gates],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    ).stdout
    assert {
        "nvdra.fabric",
        "nvdra.plugins.gpu.fabric",
        "nvdra.plugins.gpu.vfio",
        "nvdra.plugins.gpu.binding",
    } <= set(json.loads(out))


# What the GPU plugin needs only once its sockets are served: it registers with the kubelet first and
# builds its driver afterwards (nvdra.plugins.gpu.assembly), so none of these may load before that.
AFTER_SOCKETS = (
    "urllib3",
    "prometheus_client",
    "tenacity",
    "nvdra.nvml",
    "nvdra.cdi",
    "nvdra.plugins.gpu.assembly",
    "nvdra.plugins.gpu.driver",
    "nvdra.plugins.metrics",
    "nvdra.kubeletplugin._kube",
    "nvdra.kubeletplugin.publisher",
    "nvdra.kubeletplugin.objects",
)


def test_gpu_plugin_imports_only_what_serving_its_sockets_needs() -> None:
    """The GPU plugin's entry point loads grpc and the toolkit's socket modules, none of the modules its
    driver build needs (API client, NVML, CDI, metrics, publisher); checking --simulate and serving the
    sockets load none either."""
    start = (
        "import tempfile, pathlib, contextlib\n"
        "import nvdra.plugins.gpu.main\n"
        "from nvdra.plugins.flags import check_profile\n"
        "check_profile(None, None, 'dgx-h100')  # --simulate's check\n"
        "from nvdra.plugins.gpu.config import PluginConfig\n"
        "from nvdra.plugins.runner import serve_pending\n"
        "root = pathlib.Path(tempfile.mkdtemp(prefix='nvdra-'))\n"
        "config = PluginConfig(node_name='n1', cdi_root=root / 'cdi', kubelet_registrar_directory_path="
        "root / 'reg', kubelet_plugins_directory_path=root / 'plugins')\n"
        "with contextlib.ExitStack() as stack:\n"
        "    serve_pending(config, stack)"
    )
    loaded = _loaded_after(start)
    assert {"grpc", "nvdra.kubeletplugin.helper", "nvdra.plugins.gpu.serve"} <= loaded
    assert sorted(m for m in loaded if any(m == a or m.startswith(f"{a}.") for a in AFTER_SOCKETS)) == []
