"""Host-managed IMEX (upstream's HostManagedIMEXDaemon, --imex-mode=hostManaged): the CD plugin over its
sockets publishes only the channel, refuses daemon claims, and hands out the channel once the node's own
nvidia-imex (a simulated host daemon on the configured socket, asked by nvidia-imex-ctl -q --u=) says READY.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.errors import ConfigError
from nvdra.imex.hostmode import ImexDeployment, host_imex_ready
from nvdra.kubeletplugin import FakeKube, KubeletClient
from nvdra.kubeletplugin.types import ClaimRef
from nvdra.plugins.computedomain.hostimex import SimulatedHostImex
from nvdra.plugins.computedomain.kube import COMPUTE_DOMAINS
from nvdra.plugins.computedomain.serve import CdPluginConfig, serve
from tests.plugin_harness import cd_plugin_config

SOCKET = "/x.sock"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nvdra-hm-") as d:
        yield Path(d)


def config(sock_dir: Path, **kw: Any) -> CdPluginConfig:
    return cd_plugin_config(sock_dir, imex_host_socket_path=SOCKET, **kw)


def claim(store: FakeKube, device: str, kind: str) -> ClaimRef:
    uid = "6f1f3a2e-0000-4000-8000-00000000000" + ("1" if device == "channel-0" else "2")
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"c-{device}", "namespace": "default", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "x"}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {
                            "request": "r",
                            "driver": "compute-domain.nvidia.com",
                            "pool": "n1",
                            "device": device,
                        }
                    ],
                    "config": [
                        {
                            "source": "FromClaim",
                            "opaque": {
                                "driver": "compute-domain.nvidia.com",
                                "parameters": {
                                    "apiVersion": "resource.nvidia.com/v1beta1",
                                    "kind": kind,
                                    "domainID": "d-uid",
                                },
                            },
                        }
                    ],
                }
            }
        },
    }
    meta = store.add_claim(body)["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def test_host_managed_needs_the_gate(sock_dir: Path) -> None:
    store = FakeKube()
    store.add_node("n1")
    with (
        pytest.raises(ConfigError, match="HostManagedIMEXDaemon"),
        serve(config(sock_dir, imex_mode="hostManaged"), kube=store),
    ):
        pass


@pytest.mark.parametrize(
    ("deployment", "phrase"),
    [
        (ImexDeployment(mode="hostManaged", isolation="channel"), "not supported yet"),
        (ImexDeployment(mode="operator"), "driverManaged or hostManaged"),
        (ImexDeployment(mode="hostManaged", host_socket_path="imex.sock"), "absolute path"),
    ],
)
def test_bad_imex_settings_are_refused(deployment: ImexDeployment, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        deployment.check(gate_enabled=True)


def test_only_a_ready_line_is_ready() -> None:
    """NOT_READY contains READY: only a line that is exactly READY counts."""
    assert host_imex_ready("READY\n") and not host_imex_ready("NOT_READY\n") and not host_imex_ready("")


def test_channel_waits_for_the_host_daemon_and_nothing_is_labelled(sock_dir: Path) -> None:
    store = FakeKube()
    store.add_node("n1")
    store.objects.put(
        COMPUTE_DOMAINS,
        {"metadata": {"name": "cd", "namespace": "default", "uid": "d-uid"}, "spec": {"numNodes": 1}},
    )
    cfg = config(sock_dir, imex_mode="hostManaged", feature_gates="HostManagedIMEXDaemon=true")
    with serve(cfg, kube=store) as plugin, KubeletClient(sock_dir / "r") as kubelet:
        assert plugin.helper is not None
        devices = [
            d["name"] for p in plugin.driver.resources().pools.values() for s in p.slices for d in s.devices
        ]
        assert devices == ["channel-0"]
        registered = kubelet.register(plugin.helper.registration_socket)
        channel = claim(store, "channel-0", "ComputeDomainChannelConfig")
        root = cfg.simulated_tree("driver-root")

        missing = registered.prepare([channel])[channel.uid]
        assert "retryable" in missing.error and "cannot connect" in missing.error  # no host daemon yet

        with SimulatedHostImex(root / SOCKET.lstrip("/"), ready=False) as host:
            waiting = registered.prepare([channel])[channel.uid]
            assert "host nvidia-imex daemon not ready" in waiting.error
            host.ready = True
            ready = registered.prepare([channel])[channel.uid]
            assert ready.error == "" and ready.devices[0].cdi_device_ids

        daemon = claim(store, "daemon-0", "ComputeDomainDaemonConfig")
        refused = registered.prepare([daemon])[daemon.uid]
        assert "not supported when imex.mode=hostManaged" in refused.error
        assert not [c for c in store.calls() if c.resource == "nodes" and c.verb == "patch"]
        assert registered.unprepare([channel]) == {channel.uid: ""}


def test_controller_makes_only_the_channel_template_when_host_managed() -> None:
    """Host-managed: no DaemonSet, no daemon template, no cliques; the domain is Ready once admitted."""
    from nvdra.imex import Settings
    from nvdra.imex.reconcile import Observed, plan

    cd = {
        "metadata": {"name": "cd", "namespace": "default", "uid": "d-uid", "resourceVersion": "1"},
        "spec": {"numNodes": 4, "channel": {"resourceClaimTemplate": {"name": "chan"}}},
    }
    actions = plan(Observed(domains=[cd]), Settings(namespace="nvdra", host_managed=True))
    kinds = [(a.verb, a.kind) for a in actions]
    assert ("create", "DaemonSet") not in kinds
    assert [k for k in kinds if k[0] == "create"] == [("create", "ResourceClaimTemplate")]
    driver_managed = plan(Observed(domains=[cd]), Settings(namespace="nvdra"))
    assert ("create", "DaemonSet") in [(a.verb, a.kind) for a in driver_managed]
