"""Shared pieces of the reliability tests: the real GPU plugin in-process over its unix sockets.

``serve()`` runs exactly what ``nvdra-gpu-plugin`` runs (simulated dgx-h100); the API is a FakeKube
handed in directly (no HTTP: these tests are about the plugin, and many calls must stay fast); the
test plays the kubelet with :class:`KubeletClient`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.checkpoint import Checkpoint, decode_checkpoint
from nvdra.kubeletplugin import ClaimRef, FakeKube, KubeletClient, RegisteredPlugin
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import RunningPlugin, serve
from tests.plugins.conftest import NODE, PROFILE, SPEC_PREFIX, allocated_claim, result

JsonObject = dict[str, Any]


class Node:
    """One simulated node's directories and API; start plugin instances over them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.kube = FakeKube()
        self.kube.add_node(NODE)
        self.cdi_root = base / "cdi"
        self.registry = base / "reg"
        self.plugins = base / "plugins"

    def config(self, pod_uid: str = "") -> PluginConfig:
        """The plugin's flags on this node (optionally a rolling-update instance)."""
        return PluginConfig(
            node_name=NODE,
            cdi_root=self.cdi_root,
            simulate=PROFILE,
            kubelet_registrar_directory_path=self.registry,
            kubelet_plugins_directory_path=self.plugins,
            pod_uid=pod_uid,
        )

    @property
    def plugin_dir(self) -> Path:
        """``<plugins>/gpu.nvidia.com``: checkpoint, sockets, lock file."""
        return self.config().plugin_dir

    @contextmanager
    def plugin(self, pod_uid: str = "") -> Iterator[tuple[RunningPlugin, RegisteredPlugin]]:
        """A started plugin instance, registered by a kubelet stand-in."""
        with serve(self.config(pod_uid), kube=self.kube) as running, KubeletClient(self.registry) as kubelet:
            yield running, kubelet.register(running.helper.registration_socket)

    def claim(self, *devices: str, **kw: Any) -> ClaimRef:
        """Store an allocated claim of ``devices`` in the API; the kubelet's reference to it."""
        meta = self.kube.add_claim(allocated_claim([result(d) for d in devices], **kw))["metadata"]
        return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def checkpoint(self) -> Checkpoint:
        """The checkpoint on disk (empty if none)."""
        path = self.plugin_dir / "checkpoint.json"
        return decode_checkpoint(path.read_bytes()) if path.exists() else Checkpoint(node_boot_id="")

    def spec_uids(self) -> set[str]:
        """UIDs of the claims with a CDI spec on disk."""
        if not self.cdi_root.exists():
            return set()
        return {p.name[len(SPEC_PREFIX) : -len(".yaml")] for p in self.cdi_root.glob(f"{SPEC_PREFIX}*.yaml")}

    def assert_consistent(self) -> None:
        """At rest: every checkpointed claim is completed and has its spec, no spec without an entry,
        and no device is held by two claims."""
        cp = self.checkpoint()
        assert {c.state for c in cp.claims.values()} <= {"PrepareCompleted"}
        assert self.spec_uids() == set(cp.claims)
        held = [d.device_name for c in cp.claims.values() for d in c.devices if not d.admin_access]
        assert len(held) == len(set(held)), f"a device is held twice: {sorted(held)}"


@pytest.fixture
def node() -> Iterator[Node]:
    """A fresh node in a short temp dir (unix socket paths must stay under 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="nvdra-rel-") as tmp:
        yield Node(Path(tmp))
