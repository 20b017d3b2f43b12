"""Bad input over the real sockets: malformed kubelet requests, hostile claim names, file permissions.

Every bad claim gets its own error and changes nothing; the good claims of the same call are prepared;
the server keeps serving; nothing is ever written outside the CDI root and the plugin directory; no
file or directory the plugin creates is world-writable, whatever the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nvdra.kubeletplugin import ClaimRef
from tests.plugins.conftest import allocated_claim, result
from tests.reliability.conftest import Node


def _files(base: Path) -> set[Path]:
    return {Path(root) / name for root, dirs, files in os.walk(base) for name in (*dirs, *files)}


def test_empty_request_is_answered_empty(node: Node) -> None:
    """An empty NodePrepare/NodeUnprepare (the liveness probe) is answered empty and touches nothing."""
    with node.plugin() as (_, plugin):
        before = _files(node.base)
        assert plugin.prepare([]) == {}
        assert plugin.unprepare([]) == {}
        assert _files(node.base) == before


def test_unknown_claims_fail_alone(node: Node) -> None:
    """Claims the API does not know get a per-claim 'not found'; the known claim of the call is prepared."""
    good = node.claim("gpu-0")
    ghosts = [ClaimRef(namespace="default", name=f"nope-{i}", uid=f"uid-{i}") for i in range(3)]
    with node.plugin() as (_, plugin):
        answers = plugin.prepare([ghosts[0], good, *ghosts[1:]])
    assert answers[good.uid].error == ""
    for ghost in ghosts:
        assert "not found" in answers[ghost.uid].error
    node.assert_consistent()
    assert set(node.checkpoint().claims) == {good.uid}


def test_duplicate_claims_in_one_request(node: Node) -> None:
    """The same claim twice in one call is prepared once and answered once; unprepare twice is fine."""
    ref = node.claim("gpu-1", "gpu-2")
    with node.plugin() as (_, plugin):
        answers = plugin.prepare([ref, ref])
        assert list(answers) == [ref.uid]
        assert answers[ref.uid].error == ""
        assert sorted(d.device_name for d in answers[ref.uid].devices) == ["gpu-1", "gpu-2"]
        node.assert_consistent()
        assert plugin.unprepare([ref, ref]) == {ref.uid: ""}
    assert node.checkpoint().claims == {} and node.spec_uids() == set()


def test_huge_request(node: Node) -> None:
    """2,000 claims in one call (8 real, the rest unknown): every one answered, the 8 prepared."""
    real = [node.claim(f"gpu-{i}") for i in range(8)]
    ghosts = [
        ClaimRef(namespace="default", name=f"ghost-{i}-" + "x" * 200, uid=f"g-{i}") for i in range(1992)
    ]
    with node.plugin() as (_, plugin):
        answers = plugin.prepare([*ghosts[:1000], *real, *ghosts[1000:]])
        assert len(answers) == 2000
        assert all(answers[r.uid].error == "" for r in real)
        assert all("not found" in answers[g.uid].error for g in ghosts)
        assert plugin.unprepare([*real, *ghosts]) == {r.uid: "" for r in [*real, *ghosts]}
    assert node.checkpoint().claims == {}


HOSTILE_UIDS = [
    "../../../../tmp/escape",
    "../checkpoint.json",
    "a/b",
    "/etc/passwd",
    "..",
    ".",
    "nul\0byte",
    "x" * 300,
    "u" * 4096,
    "ünïcode-uid",
    "-leading-dash",
    "..hidden",
    "",
]


@pytest.mark.parametrize("uid", HOSTILE_UIDS, ids=range(len(HOSTILE_UIDS)))
def test_hostile_claim_uids_never_escape(node: Node, uid: str) -> None:
    """A claim whose UID (and name) try path tricks fails alone; nothing lands outside the CDI/plugin dirs."""
    good = node.claim("gpu-6")
    name = uid.replace("\0", "") or "empty"
    node.kube.add_claim(allocated_claim([result("gpu-7")], uid=uid or "placeholder", name=name))
    if not uid:  # an empty UID cannot be stored; the kubelet can still send one
        stored = node.kube.get_resource_claim("default", name)
        stored["metadata"]["uid"] = ""
    hostile = ClaimRef(namespace="default", name=name, uid=uid)
    with node.plugin() as (_, plugin):
        outside_before = _files(node.base) - _files(node.cdi_root) - _files(node.plugin_dir)
        answers = plugin.prepare([hostile, good])
        assert answers[good.uid].error == ""
        assert answers[hostile.uid].error != ""
        assert answers[hostile.uid].devices == ()
        assert plugin.unprepare([hostile]) == {hostile.uid: ""}
        outside_after = _files(node.base) - _files(node.cdi_root) - _files(node.plugin_dir)
    assert outside_after == outside_before
    assert not Path("/tmp/escape").exists() or "escape" not in uid
    assert node.spec_uids() == {good.uid}
    assert set(node.checkpoint().claims) == {good.uid}
    for path in node.cdi_root.iterdir():
        assert path.resolve().parent == node.cdi_root.resolve()


def _world_writable(base: Path) -> list[str]:
    bad = []
    for path in _files(base):
        if {"simulated", "driver-root"} <= set(path.parts):  # the simulation's stand-in for the host's files
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if mode & stat.S_IWOTH:
            bad.append(f"{path} {stat.filemode(mode)}")
    return sorted(bad)


@pytest.fixture
def no_umask() -> object:
    """Run with umask 0, as a careless container runtime might: modes must be set explicitly."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_file_and_socket_permissions(node: Node, no_umask: object) -> None:
    """Plugin dir 0750, checkpoint 0600, CDI specs 0644, sockets not world-writable, nothing o+w."""
    ref = node.claim("gpu-0")
    node.plugins.mkdir(mode=0o750)  # the kubelet's directories exist before any plugin starts
    node.registry.mkdir(mode=0o750)
    with node.plugin() as (running, plugin):
        assert plugin.prepare([ref])[ref.uid].error == ""
        assert stat.S_IMODE(node.plugin_dir.stat().st_mode) == 0o750
        assert stat.S_IMODE(node.cdi_root.stat().st_mode) == 0o755
        assert stat.S_IMODE((node.plugin_dir / "checkpoint.json").stat().st_mode) == 0o600
        (spec,) = node.cdi_root.glob("*.yaml")
        assert stat.S_IMODE(spec.stat().st_mode) == 0o644
        for sock in (running.helper.dra_socket, running.helper.registration_socket):
            assert stat.S_ISSOCK(sock.lstat().st_mode)
            assert stat.S_IMODE(sock.lstat().st_mode) == 0o660, sock
        assert _world_writable(node.base) == []
