"""Chart values of issue 15's features: consumableShares and the GPU classes' extended resources."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.helm import RenderError, render

GPUS = {"resources": {"gpus": {"enabled": True}}}


def plugin_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet" and "kubelet-plugin" in d["metadata"]["name"]]
    (gpus,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "gpus"]
    return {e["name"]: e.get("value", "") for e in gpus.get("env", [])}


@pytest.mark.parametrize("value", ["memory", "unlimited", 4])
def test_consumable_shares_reaches_the_gpu_plugin(value: object) -> None:
    """consumableShares becomes CONSUMABLE_SHARES (upstream's variable) with the gate on."""
    docs = render({**GPUS, "consumableShares": value, "featureGates": {"ConsumableShares": True}})
    assert plugin_env(docs)["CONSUMABLE_SHARES"] == str(value)


def test_consumable_shares_unset_sets_nothing() -> None:
    assert "CONSUMABLE_SHARES" not in plugin_env(render(GPUS))


@pytest.mark.parametrize(
    ("values", "phrase"),
    [
        (
            {"consumableShares": "lots", "featureGates": {"ConsumableShares": True}},
            "allowed: disabled, memory",
        ),
        ({"consumableShares": 0, "featureGates": {"ConsumableShares": True}}, "positive integer"),
        ({"consumableShares": "memory"}, "needs featureGates.ConsumableShares"),
    ],
)
def test_bad_consumable_shares_fail_rendering(values: dict[str, Any], phrase: str) -> None:
    with pytest.raises(RenderError) as info:
        render({**GPUS, **values})
    assert phrase in str(info.value)


def classes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "DeviceClass"}


def test_gpu_class_serves_nvidia_com_gpu_on_v1() -> None:
    """gpu.nvidia.com carries extendedResourceName nvidia.com/gpu where the server has v1."""
    found = classes(render(GPUS, api_versions=("resource.k8s.io/v1",)))
    assert found["gpu.nvidia.com"]["spec"]["extendedResourceName"] == "nvidia.com/gpu"


def test_mig_profiles_get_classes_of_their_own() -> None:
    """migExtendedResources: one class per profile with the device plugin's resource name."""
    values = {**GPUS, "migExtendedResources": ["1g.10gb", "3g.40gb"]}
    found = classes(render(values, api_versions=("resource.k8s.io/v1",)))
    mig = found["mig-1g-10gb.gpu.nvidia.com"]["spec"]
    assert mig["extendedResourceName"] == "nvidia.com/mig-1g.10gb"
    assert "profile == '1g.10gb'" in mig["selectors"][0]["cel"]["expression"]
    assert "mig-3g-40gb.gpu.nvidia.com" in found
    older = classes(render({**values, "resourceApiVersion": "resource.k8s.io/v1beta2"}))
    assert "mig-1g-10gb.gpu.nvidia.com" not in older


def test_bad_mig_profile_fails_rendering() -> None:
    with pytest.raises(RenderError) as info:
        render({**GPUS, "migExtendedResources": ["big"]})
    assert "is not a MIG profile name" in str(info.value)


def test_host_managed_imex_reaches_the_cd_plugin_and_controller() -> None:
    """imex.mode/isolation/hostSocketPath become upstream's IMEX_* variables."""
    imex = {"mode": "hostManaged", "isolation": "domain", "hostSocketPath": "/run/imex.sock"}
    docs = render(
        {
            "resources": {"computeDomains": {"enabled": True, "imex": imex}},
            "featureGates": {"HostManagedIMEXDaemon": True},
        }
    )
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet" and "kubelet-plugin" in d["metadata"]["name"]]
    (cd,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "compute-domains"]
    env = {e["name"]: e.get("value") for e in cd["env"]}
    assert (env["IMEX_MODE"], env["IMEX_HOST_SOCKET_PATH"]) == ("hostManaged", "/run/imex.sock")
    (ctrl,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("controller")]
    ctrl_env = {
        e["name"]: e.get("value")
        for c in ctrl["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }
    assert ctrl_env["IMEX_MODE"] == "hostManaged"


def test_host_managed_imex_needs_the_gate() -> None:
    with pytest.raises(RenderError) as info:
        render({"resources": {"computeDomains": {"enabled": True, "imex": {"mode": "hostManaged"}}}})
    assert "HostManagedIMEXDaemon" in str(info.value)


def test_binding_conditions_let_the_gpu_plugin_list_claims() -> None:
    """DeviceBindingConditions: the plugin lists claims to find allocated VFIO devices; else only get."""
    from tests.deploy.test_chart_access import grants

    on = render({**GPUS, "featureGates": {"PassthroughSupport": True, "DeviceBindingConditions": True}})
    assert grants(on, "nvdra-kubeletplugin")[0][("resource.k8s.io", "resourceclaims")] == {"get", "list"}
    assert grants(render(GPUS), "nvdra-kubeletplugin")[0][("resource.k8s.io", "resourceclaims")] == {"get"}
