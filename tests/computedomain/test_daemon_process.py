"""The IMEX daemon on a real node's terms: OS processes, binaries from the driver root, TCP between peers.

Nothing here runs in-process: ``nvidia-imex`` and ``nvidia-imex-ctl`` are the executables of a generated
driver root, ``nvdra-cd-daemon`` is the console script, and the daemons of a two-node domain are started
from the pods the controller's DaemonSet yields, with the daemon claim's CDI mounts.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nvdra.cdi import DriverRoot
from nvdra.core.errors import CdiError
from nvdra.imex import CLIQUE_LABEL, render_config, render_nodes_file
from nvdra.imex.config import parse_hosts_block
from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.objects import DAEMON_SETS, PODS
from nvdra.nvml import load_profile, make_simulated_driver_root
from nvdra.nvml._driver_root import FABRIC_IMEX_MGMT_MINOR
from nvdra.plugins.computedomain.cdi import CdClaimSpecs
from nvdra.plugins.computedomain.kube import CLIQUES, COMPUTE_DOMAINS
from nvdra.plugins.computedomain.simcluster import ProcessDaemon, SimCluster
from tests.plugin_harness import wait_for

PROFILE = "gb200-nvl72-tray"
BIN = str(Path(sys.executable).parent)
CLEAN_PATH = os.pathsep.join([BIN, "/usr/bin", "/bin"])


def _ip_base() -> str:
    """A loopback /16 of our own, so parallel runs never share an IMEX port."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(0, 255)}"


@pytest.fixture(scope="module")
def driver_root() -> Iterator[Path]:
    """A generated GB200 tray driver root (it carries the fake IMEX pair)."""
    with tempfile.TemporaryDirectory(prefix="nvdra-imexroot-") as tmp:
        yield make_simulated_driver_root(load_profile(PROFILE), Path(tmp) / "root")


def _container(tmp: Path, name: str, ip: str, peers: dict[str, str]) -> tuple[Path, Path]:
    """A container root with etc/hosts (the peers' DNS block) and an imexd dir with config and nodes."""
    root = tmp / name
    (root / "etc").mkdir(parents=True)
    block = "".join(f"{peer_ip}\t{peer}\n" for peer, peer_ip in sorted(peers.items()))
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n# nvdra\n{block}")
    _cap_node(root)
    (root / "imexd").mkdir()
    cfg = root / "imexd/imexd.cfg"
    cfg.write_text(render_config(bind_ip=ip, nodes_file=str(root / "imexd/nodes.cfg")))
    (root / "imexd/nodes.cfg").write_text(render_nodes_file(sorted(peers)))
    return root, cfg


def _cap_node(root: Path) -> Path:
    """The fabric-imex-mgmt node the daemon claim's CDI spec puts into the container."""
    node = root / f"dev/nvidia-caps/nvidia-cap{FABRIC_IMEX_MGMT_MINOR}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_text("")
    return node


def _ctl(driver_root: Path, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(driver_root / "usr/bin/nvidia-imex-ctl"), "-c", str(cfg), "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_fake_imex_programs_speak_the_real_formats_and_connect_over_tcp(
    driver_root: Path, tmp_path: Path
) -> None:
    """Two fake daemons from the driver root: NOT_READY alone, READY once both listen; ctl alone fails."""
    base = _ip_base()
    ips = {"compute-domain-daemon-0000": f"{base}.1", "compute-domain-daemon-0001": f"{base}.2"}
    roots = [_container(tmp_path, f"c{i}", ip, ips) for i, ip in enumerate(ips.values())]
    no_daemon = _ctl(driver_root, roots[0][1])
    assert (no_daemon.returncode, no_daemon.stdout) == (1, "") and "cannot connect" in no_daemon.stderr
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for root, cfg in roots:
            procs.append(
                subprocess.Popen(
                    [str(driver_root / "usr/bin/nvidia-imex"), "-c", str(cfg)],
                    env={"PATH": CLEAN_PATH, "NVDRA_DAEMON_ROOT": str(root)},
                    stderr=subprocess.DEVNULL,
                )
            )
            if len(procs) == 1:
                wait_for("one daemon answering", lambda: _ctl(driver_root, roots[0][1]).returncode == 0)
                assert _ctl(driver_root, roots[0][1]).stdout == "NOT_READY\n"  # its peer is not up
        for _, cfg in roots:
            wait_for("READY", lambda cfg=cfg: _ctl(driver_root, cfg).stdout == "READY\n")  # type: ignore[misc]
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
        wait_for(
            "NOT_READY after the peer left", lambda: _ctl(driver_root, roots[0][1]).stdout == "NOT_READY\n"
        )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_fake_imex_refuses_what_the_real_one_cannot_run(driver_root: Path, tmp_path: Path) -> None:
    """Its own IP not among the peers ("no matching interface"), DAEMONIZE=1, bad argv: status 1 at once."""
    base = _ip_base()
    root, cfg = _container(tmp_path, "c", f"{base}.9", {"compute-domain-daemon-0000": f"{base}.1"})
    imex = str(driver_root / "usr/bin/nvidia-imex")
    env = {"PATH": CLEAN_PATH, "NVDRA_DAEMON_ROOT": str(root)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([imex, *argv], env=env, capture_output=True, text=True, check=False, timeout=30)

    assert "no matching interface for" in run("-c", str(cfg)).stderr
    _cap_node(root).unlink()
    no_cap = run("-c", str(cfg))
    assert no_cap.returncode == 1 and "no fabric-imex-mgmt capability in the container" in no_cap.stderr
    cfg.write_text(cfg.read_text().replace("DAEMONIZE=0", "DAEMONIZE=1"))
    assert run("-c", str(cfg)).returncode == 1
    bad = run("--bogus")
    assert bad.returncode == 1 and "usage" in bad.stderr


def test_cd_daemon_claim_mounts_imex_from_the_driver_root_or_names_what_is_missing(tmp_path: Path) -> None:
    """In a clique the daemon's edits mount both IMEX binaries from the host root at their relative paths."""
    root = make_simulated_driver_root(load_profile(PROFILE), tmp_path / "container-root")
    specs = CdClaimSpecs(
        cdi_root=tmp_path / "cdi",
        driver_root=DriverRoot("/run/nvidia/driver", str(root)),
        proc_root=root,
        hook_path="/var/lib/kubelet/plugins/compute-domain.nvidia.com/nvidia-cdi-hook",
    )
    edits = specs.daemon_edits(env=["CLIQUE_ID=x.1"], domain_dir=tmp_path / "d", fabric_mgmt=True)
    mounts = {m.container_path: m.host_path for m in edits.mounts}
    assert mounts["/usr/bin/nvidia-imex"] == "/run/nvidia/driver/usr/bin/nvidia-imex"
    assert mounts["/usr/bin/nvidia-imex-ctl"] == "/run/nvidia/driver/usr/bin/nvidia-imex-ctl"
    assert mounts["/imexd"] == str(tmp_path / "d")
    assert {h.path for h in edits.hooks} == {specs.hook_path}
    assert any(n.path.startswith("/dev/nvidia-caps/nvidia-cap") for n in edits.device_nodes)
    idle = specs.daemon_edits(env=["CLIQUE_ID="], domain_dir=tmp_path / "d", fabric_mgmt=False)
    assert [m.container_path for m in idle.mounts] == ["/imexd"] and not idle.hooks
    (root / "usr/bin/nvidia-imex-ctl").unlink()
    specs = CdClaimSpecs(cdi_root=tmp_path / "cdi", driver_root=DriverRoot(str(root)), proc_root=root)
    with pytest.raises(CdiError, match=r"nvidia-imex-ctl not found in the driver root .*/usr/bin"):
        specs.daemon_edits(env=[], domain_dir=tmp_path / "d", fabric_mgmt=True)


def _daemon_env(root: Path, kubeconfig: Path, ip: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": CLEAN_PATH,
        "KUBECONFIG": str(kubeconfig),
        "NVDRA_DAEMON_ROOT": str(root),
        "CLIQUE_ID": "c1.1",
        "COMPUTE_DOMAIN_UUID": "uid-1",
        "COMPUTE_DOMAIN_NAME": "job",
        "COMPUTE_DOMAIN_NAMESPACE": "default",
        "NODE_NAME": "n1",
        "POD_IP": ip,
        "POD_NAME": "daemon-n1",
        "POD_NAMESPACE": "nvdra",
        **extra,
    }


def test_daemon_without_imex_in_its_root_says_where_it_looked(tmp_path: Path) -> None:
    """A clique daemon whose container has no IMEX binaries exits 1 naming the root and the directories."""
    root = tmp_path / "ctr"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
    env = _daemon_env(root, tmp_path / "kubeconfig", "127.0.0.1")
    done = subprocess.run(
        [f"{BIN}/nvdra-cd-daemon", "run"], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 1
    assert f"nvidia-imex not found under {root}" in done.stderr and "/usr/local/sbin" in done.stderr


def test_daemon_that_cannot_write_its_hosts_file_says_it_must_run_as_root(tmp_path: Path) -> None:
    """Not root (here: root without the DAC override, or any other user): one line, status 1."""
    root = tmp_path / "ctr"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
    (root / "etc/hosts").chmod(0o444)
    make_simulated_driver_root(load_profile(PROFILE), root / "tmp/nvdra-simulated-driver-root")
    env = _daemon_env(root, tmp_path / "kubeconfig", "127.0.0.1", NVDRA_SIMULATE=PROFILE)
    prefix = (
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
        if os.geteuid() == 0
        else []
    )
    done = subprocess.run(
        [*prefix, f"{BIN}/nvdra-cd-daemon", "run"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"cannot write {root}/etc/hosts as uid" in done.stderr and "runAsUser: 0" in done.stderr


@pytest.mark.slow
def test_simulated_daemon_runs_the_fake_imex_of_its_generated_driver_root(tmp_path: Path) -> None:
    """NVDRA_SIMULATE: the daemon generates a driver root and runs the fake pair found there; READY."""
    store = FakeKube()
    ip = f"{_ip_base()}.1"
    with ApiServer(store) as server:
        for rt in (CLIQUES, COMPUTE_DOMAINS):
            server.register(rt)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        store.objects.create_object(
            PODS, {"metadata": {"name": "daemon-n1", "namespace": "nvdra"}, "spec": {}}
        )
        entry = {"nodeName": "n1", "ipAddress": ip, "cliqueID": "c1.1", "index": 0, "status": "NotReady"}
        store.objects.create_object(
            CLIQUES, {"metadata": {"name": "uid-1.c1.1", "namespace": "nvdra"}, "daemons": [entry]}
        )
        root = tmp_path / "ctr"
        (root / "etc").mkdir(parents=True)
        (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\tdaemon-n1\n")
        _cap_node(root)  # what the simulated CD plugin's daemon claim injects
        env = _daemon_env(root, kubeconfig, ip, NVDRA_SIMULATE=PROFILE)
        assert shutil.which("nvidia-imex", path=env["PATH"]) is None
        log = (tmp_path / "daemon.log").open("wb")
        proc = subprocess.Popen([f"{BIN}/nvdra-cd-daemon", "run"], env=env, stdout=log, stderr=log)
        try:

            def check() -> bool:
                probe = [f"{BIN}/nvdra-cd-daemon", "check"]
                return (
                    subprocess.run(probe, env=env, capture_output=True, check=False, timeout=30).returncode
                    == 0
                )

            wait_for("the daemon's probe", check, deadline_s=60)
            labels = store.objects.peek(PODS, "daemon-n1", "nvdra")["metadata"]["labels"]
            assert labels[CLIQUE_LABEL] == "c1.1"
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
        text = (tmp_path / "daemon.log").read_text()
        generated = root / "tmp/nvdra-simulated-driver-root/usr/bin"
        assert f"IMEX binaries: {generated}/nvidia-imex, {generated}/nvidia-imex-ctl" in text
        assert f"listening on {ip}:50000" in text
        assert CLIQUE_LABEL not in store.objects.peek(PODS, "daemon-n1", "nvdra")["metadata"].get(
            "labels", {}
        )


@pytest.mark.slow
def test_two_node_domain_is_ready_with_daemons_started_as_the_daemonset_says() -> None:
    """Controller → DaemonSet → pods → CDI → ``nvdra-cd-daemon`` processes → the host root's fake IMEX."""
    with (
        tempfile.TemporaryDirectory(prefix="nvdra-cd2-") as tmp,
        SimCluster(Path(tmp) / "base", Path(tmp) / "s", nodes=2, process_daemons=True) as c,
    ):
        cd = c.create_domain("job", num_nodes=2)
        refs = c.schedule_workload(cd, c.nodes)
        end = time.monotonic() + 120
        while any(n.pending for n in c.nodes) and time.monotonic() < end:
            c.step()
            time.sleep(0.1)
        logs = {
            p.name: p.daemon.log_path.read_text()
            for n in c.nodes
            for p in n.pods.values()
            if isinstance(p.daemon, ProcessDaemon)
        }
        assert not any(n.pending for n in c.nodes), logs
        assert (c.domain("job").get("status") or {}).get("status") == "Ready"
        ds = c.store.objects.list_objects(DAEMON_SETS, c.namespace)[0]
        container = ds["spec"]["template"]["spec"]["containers"][0]
        assert container["securityContext"]["runAsUser"] == 0
        for node in c.nodes:
            (pod,) = node.pods.values()
            daemon = pod.daemon
            assert isinstance(daemon, ProcessDaemon)
            assert daemon.user == 0 and daemon.command == ["nvdra-cd-daemon", "-v", "0", "run"]
            assert shutil.which("nvidia-imex", path=daemon.env["PATH"]) is None  # not on PATH
            mounted = daemon.root / "usr/bin/nvidia-imex"
            host_root = node.config().simulated_tree("driver-root")
            assert mounted.resolve() == (host_root / "usr/bin/nvidia-imex").resolve()
            text = daemon.log_path.read_text()
            assert f"IMEX binaries: {mounted}, {daemon.root}/usr/bin/nvidia-imex-ctl" in text
            assert f"listening on {node.ip}:50000" in text
            assert daemon.process.poll() is None
            uid = cd["metadata"]["uid"]
            assert (daemon.root / "imexd").resolve() == (node.config().plugin_dir / "domains" / uid).resolve()
            block = parse_hosts_block((daemon.root / "etc/hosts").read_text())
            assert sorted(block.values()) == sorted(n.ip for n in c.nodes)  # both peers, by DNS name
        # The watchdog, over real processes: nvidia-imex killed, restarted by the daemon, READY again.
        first = next(iter(c.nodes[0].pods.values())).daemon
        assert isinstance(first, ProcessDaemon)
        (child,) = _children(first.process.pid)
        os.kill(child, signal.SIGKILL)
        wait_for(
            "a new nvidia-imex", lambda: _children(first.process.pid) not in ([], [child]), deadline_s=60
        )
        wait_for("READY again", first.check, deadline_s=60)
        c.release_workload(refs, c.nodes)


def _children(pid: int) -> list[int]:
    """The child process ids of ``pid`` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
