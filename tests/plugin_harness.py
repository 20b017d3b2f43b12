"""One way to start the GPU plugin in a test: on a simulated node, against an HTTP API server over a real
kubeconfig, with a kubelet stand-in on its sockets; and one way to poll for what it does next.

The end-to-end test files (passthrough, health, shares, device status, the e2e suite) each used to carry
their own copy of this; now they say only what differs: the plugin's settings and what they yield.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from nvdra.kubeletplugin import ApiServer, ClaimRef, FakeKube, KubeletClient, RegisteredPlugin
from nvdra.plugins.computedomain.serve import CdPluginConfig
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import RunningPlugin, serve
from tests.plugins.conftest import DRIVER, NODE, PROFILE

JsonObject = dict[str, Any]


# Every environment twin the plugins' scripts read, and the fake NVML's state file: scrubbed from a
# subprocess's environment so the developer's shell cannot leak into a test.
TWINS = frozenset(
    {
        "NODE_NAME",
        "NAMESPACE",
        "CDI_ROOT",
        "NVIDIA_DRIVER_ROOT",
        "HOST_DRIVER_ROOT",
        "DRIVER_ROOT_CTR_PATH",
        "NVIDIA_CDI_HOOK_PATH",
        "IMAGE_NAME",
        "KUBELET_REGISTRAR_DIRECTORY_PATH",
        "KUBELET_PLUGINS_DIRECTORY_PATH",
        "HEALTHCHECK_PORT",
        "ADDITIONAL_XIDS_TO_IGNORE",
        "HEALTH_QUIET_PERIOD",
        "HTTP_ENDPOINT",
        "METRICS_PATH",
        "KUBECONFIG",
        "KUBE_API_QPS",
        "KUBE_API_BURST",
        "FEATURE_GATES",
        "NVDRA_SIMULATE",
        "POD_UID",
        "FABRIC_TOPOLOGY_SUPPORT",
        "NVDRA_FAKE_NVML_STATE",
    }
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any of the scripts' twins, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in TWINS}
    env.update(extra)
    return env


def wait_for(what: str, probe: Callable[[], Any], *, deadline_s: float = 30.0, every_s: float = 0.02) -> Any:
    """Poll ``probe`` until it returns something truthy and return that (a generous deadline: this is never
    a timing assertion); past the deadline fail with ``timed out waiting for <what>``."""
    end = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


def plugin_config(sockdir: Path, server: ApiServer, **settings: Any) -> PluginConfig:
    """The GPU plugin's settings for node ``n1`` on a simulated dgx-h100, its sockets, CDI root and kubeconfig
    under ``sockdir``, talking to ``server``; ``settings`` add to or override these."""
    fields: dict[str, Any] = {
        "node_name": NODE,
        "kubeconfig": str(server.write_kubeconfig(sockdir / "kubeconfig")),
        "cdi_root": sockdir / "cdi",
        "simulate": PROFILE,
        "kubelet_registrar_directory_path": sockdir / "reg",
        "kubelet_plugins_directory_path": sockdir / "plugins",
    }
    fields.update(settings)
    return PluginConfig(**fields)


def cd_plugin_config(sockdir: Path, **settings: Any) -> CdPluginConfig:
    """The ComputeDomain plugin's settings for node ``n1`` (namespace ``nvdra``) on a simulated GB200 tray,
    its sockets and CDI root under ``sockdir``; ``settings`` add to or override these."""
    fields: dict[str, Any] = {
        "node_name": NODE,
        "namespace": "nvdra",
        "cdi_root": sockdir / "cdi",
        "simulate": "gb200-nvl72-tray",
        "kubelet_registrar_directory_path": sockdir / "reg",
        "kubelet_plugins_directory_path": sockdir / "plugins",
    }
    fields.update(settings)
    return CdPluginConfig(**fields)


@attrs.define
class Cluster:
    """A running plugin, the API server and store behind it, and a kubelet stand-in."""

    store: FakeKube
    server: ApiServer
    config: PluginConfig
    plugin: RunningPlugin
    kubelet: KubeletClient
    node_uid: str

    @property
    def registration_socket(self) -> Path:
        """Where the plugin's registration socket is expected."""
        return self.config.kubelet_registrar_directory_path / f"{DRIVER}-reg.sock"

    def register(self, api: str = "v1") -> RegisteredPlugin:
        """Register the plugin as the kubelet does, over the chosen DRA API version."""
        return self.kubelet.register(self.registration_socket, api=api)

    def register_and_publish(self) -> RegisteredPlugin:
        """Register the plugin and wait for its first ResourceSlice."""
        registered = self.register()
        wait_for("the ResourceSlice", self.store.resource_slices)
        return registered

    def add_claim(self, claim: JsonObject) -> ClaimRef:
        """Store an allocated claim in the API server; returns the kubelet's reference to it."""
        meta = self.store.add_claim(claim)["metadata"]
        return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


@contextmanager
def serving_plugin(sockdir: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Iterator[Cluster]:
    """The GPU plugin (``serve``) on node ``n1`` with ``settings`` (see :func:`plugin_config`), registered
    with nobody yet; the developer's ``FABRIC_TOPOLOGY_SUPPORT`` cannot leak in."""
    monkeypatch.delenv("FABRIC_TOPOLOGY_SUPPORT", raising=False)
    store = FakeKube()
    node_uid = store.add_node(NODE)["metadata"]["uid"]
    with ApiServer(store) as server:
        config = plugin_config(sockdir, server, **settings)
        with serve(config) as plugin, KubeletClient(config.kubelet_registrar_directory_path) as kubelet:
            yield Cluster(
                store=store, server=server, config=config, plugin=plugin, kubelet=kubelet, node_uid=node_uid
            )
