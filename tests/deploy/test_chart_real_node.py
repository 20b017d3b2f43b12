"""The chart on a real GPU node: driver-root mounts, VFIO passthrough host mounts, Fabric Manager access,
securityContexts and log verbosity, for the values docs/install.md documents.

Each mount is checked against the path the code reads (``SysfsHost`` defaults, libnvfm's env vars), so
a template and the code cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

import pytest

from nvdra.fabric.libnvfm import ADDRESS_ENV, DEFAULT_UNIX_SOCKET, LIBRARY_ENV, UNIX_SOCKET_ENV
from nvdra.plugins.gpu.vfio_host import SysfsHost
from tests.deploy.helm import RenderError, find, render

JsonObject = dict[str, Any]
GPUS = {"resources": {"gpus": {"enabled": True}}}
PASSTHROUGH = {**GPUS, "featureGates": {"PassthroughSupport": True}}


def plugin_pod(values: dict[str, Any]) -> JsonObject:
    """The kubelet-plugin DaemonSet's pod spec."""
    (ds,) = find(render(values), "DaemonSet")
    spec: JsonObject = ds["spec"]["template"]["spec"]
    return spec


def container(spec: JsonObject, name: str) -> JsonObject:
    """One container (or init container) of a pod spec by name."""
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    result: JsonObject = found
    return result


def mounts(spec: JsonObject, name: str) -> dict[str, tuple[str, JsonObject]]:
    """mountPath → (host path, mount) of a container's hostPath mounts."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {
        m["mountPath"]: (volumes[m["name"]]["hostPath"]["path"], m)
        for m in container(spec, name)["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }


def env(spec: JsonObject, name: str) -> dict[str, str | None]:
    """A container's env as name → value (None for fieldRefs)."""
    return {e["name"]: e.get("value") for e in container(spec, name)["env"]}


def test_defaults_mount_the_driver_root_read_only_into_both_plugins() -> None:
    """A plain node with the driver on the host: / at /driver-root, read-only, HostToContainer."""
    spec = plugin_pod(GPUS)
    for name in ("gpus", "compute-domains"):
        host, mount = mounts(spec, name)["/driver-root"]
        assert host == "/"
        assert mount["readOnly"] is True and mount["mountPropagation"] == "HostToContainer"
        assert env(spec, name)["DRIVER_ROOT_CTR_PATH"] == "/driver-root"
    init = container(spec, "init-driver-root")
    assert mounts(spec, "init-driver-root")["/driver-root-parent"][0] == "/"
    assert env(spec, "init-driver-root")["DRIVER_ROOT_CTR_PATH"] == "/driver-root-parent"
    assert init["command"] == ["/usr/local/bin/kubelet-plugin-prestart.sh"]


def test_gpu_operator_driver_root_is_watched_through_its_parent() -> None:
    """/run/nvidia/driver (GPU Operator): the init container sees the driver container's later mount
    through the parent; the volume is DirectoryOrCreate so the pod starts and the init container can say
    what is missing."""
    spec = plugin_pod({**GPUS, "nvidiaDriverRoot": "/run/nvidia/driver"})
    assert mounts(spec, "init-driver-root")["/driver-root-parent"][0] == "/run/nvidia"
    assert env(spec, "init-driver-root")["DRIVER_ROOT_CTR_PATH"] == "/driver-root-parent/driver"
    assert mounts(spec, "gpus")["/driver-root"][0] == "/run/nvidia/driver"
    types = {v["name"]: v["hostPath"]["type"] for v in spec["volumes"] if "hostPath" in v}
    assert types["driver-root"] == types["driver-root-parent"] == "DirectoryOrCreate"


def test_simulate_leaves_out_every_host_mount_of_the_real_node() -> None:
    """A simulated node reads no driver root, sysfs or Fabric Manager of the host, even with the
    passthrough gate and FM access set."""
    values = {
        **PASSTHROUGH,
        "simulate": "dgx-h100",
        "kubeletPlugin": {"containers": {"gpus": {"fabricManager": {"access": "tcp"}}}},
    }
    spec = plugin_pod(values)
    hosts = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert hosts == {"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins", "/var/run/cdi"}
    assert "hostNetwork" not in spec
    assert ADDRESS_ENV not in env(spec, "gpus")


def test_passthrough_mounts_what_the_vfio_host_code_reads() -> None:
    """With PassthroughSupport the GPU container gets the host's /sys, its root at the SysfsHost's
    host_root (for chroot modprobe/fuser), /dev/vfio and nvidia-persistenced's socket directory."""
    defaults = SysfsHost()
    spec = plugin_pod(PASSTHROUGH)
    got = mounts(spec, "gpus")
    assert got[str(defaults.sys_root)][0] == "/sys"
    host_root, mount = got[str(defaults.host_root)]
    assert host_root == "/" and mount["readOnly"] is True
    assert got["/dev/vfio"][0] == "/dev/vfio"
    assert str(defaults.dev_root) == "/dev"
    socket_dir = str(defaults.persistenced_socket.parent)
    assert got[socket_dir][0] == socket_dir
    assert "/sys" not in mounts(spec, "compute-domains")
    assert "/sys" not in mounts(plugin_pod(GPUS), "gpus")


@pytest.mark.parametrize(
    ("access", "host_network", "env_name", "env_value", "socket_mount"),
    [
        ("none", False, None, None, False),
        ("socket", False, UNIX_SOCKET_ENV, DEFAULT_UNIX_SOCKET, True),
        ("tcp", True, ADDRESS_ENV, "127.0.0.1:6666", False),
    ],
)
def test_fabric_manager_access(
    access: str, host_network: bool, env_name: str | None, env_value: str | None, socket_mount: bool
) -> None:
    """none: nothing; socket: FM's socket directory mounted and named by the env var libnvfm reads;
    tcp: the pod in the host network (FM's API is on the host's loopback) with the address set."""
    fm = {"access": access, "libraryPath": "/driver-root/usr/lib64/libnvfm.so.1"}
    spec = plugin_pod({**GPUS, "kubeletPlugin": {"containers": {"gpus": {"fabricManager": fm}}}})
    variables = env(spec, "gpus")
    assert spec.get("hostNetwork", False) is host_network
    if host_network:
        assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    fm_vars = {k for k in variables if k.startswith("NVIDIA_FABRICMANAGER_")}
    if env_name is None:
        assert fm_vars == set()
    else:
        assert variables[env_name] == env_value
        assert variables[LIBRARY_ENV] == fm["libraryPath"]
        assert fm_vars == {env_name, LIBRARY_ENV}
    socket_dir = DEFAULT_UNIX_SOCKET.rpartition("/")[0]
    assert (socket_dir in mounts(spec, "gpus")) is socket_mount


@pytest.mark.parametrize(
    ("fm", "message"),
    [
        ({"access": "ssh"}, 'fabricManager.access "ssh" is not supported'),
        ({"access": "socket", "unixSocket": "fm.sock"}, "not an absolute host path of FM's socket"),
        ({"access": "tcp", "address": "fm.local"}, "is not an IPv4 address"),
    ],
)
def test_bad_fabric_manager_values_are_refused(fm: dict[str, str], message: str) -> None:
    """Each bad value fails the render with a line naming the value and what is allowed."""
    with pytest.raises(RenderError, match=message):
        render({**GPUS, "kubeletPlugin": {"containers": {"gpus": {"fabricManager": fm}}}})


def test_security_contexts() -> None:
    """Plugins: privileged root (device nodes, Bidirectional mounts, sysfs writes); controller and
    webhook: non-root, no privilege escalation, read-only root, every capability dropped."""
    values = {**PASSTHROUGH, "webhook": {"enabled": True}}
    docs = render(values, api_versions=("cert-manager.io/v1",))
    (ds,) = find(docs, "DaemonSet")
    for ctr in ds["spec"]["template"]["spec"]["containers"]:
        assert ctr["securityContext"] == {"privileged": True, "runAsUser": 0}, ctr["name"]
    for name in ("nvdra-controller", "nvdra-webhook"):
        (deployment,) = find(docs, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for ctr in pod["containers"]:
            sc = ctr["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert not any("hostPath" in v for v in pod.get("volumes", []))


def test_default_verbosity_logs_events_not_requests() -> None:
    """The default -v keeps the components at INFO (their events); DEBUG (a line per API request)
    starts at 2, as ``nvdra.plugins.flags.configure_logging`` maps it."""
    spec = plugin_pod(GPUS)
    for name in ("gpus", "compute-domains"):
        assert container(spec, name)["args"] == ["-v"]
