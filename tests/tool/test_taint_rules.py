"""DeviceTaintRules (KEP-5055): `nvdra taint`/`untaint` against an HTTP API server, and the allocator
and `explain` applying rules and the plugin's slice taints alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from click.testing import CliRunner

from nvdra.alloc import Allocator, builtin_device_classes, diagnose
from nvdra.alloc.taintrules import rule_selects, taint_rule, with_taint_rules
from nvdra.kubeletplugin import ApiServer, FakeKube, KubernetesKubeApi
from nvdra.tool.cli import main
from nvdra.tool.devices import node_publication, slice_objects
from nvdra.tool.taint import find_rule_type

DRIVER = "gpu.nvidia.com"
NODE = "n1"


def published() -> list[dict[str, Any]]:
    pub = node_publication("dgx-h100", node_name=NODE, env={})
    return slice_objects(pub.resources, driver=DRIVER, node_name=NODE)


def gpu_claim(**extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER, **extra}}]}},
    }


def first_device(slices: list[dict[str, Any]], rules: list[dict[str, Any]], **extra: Any) -> str | None:
    outcome = Allocator(slices, builtin_device_classes(), node_name=NODE, taint_rules=rules).allocate(
        [gpu_claim(**extra)]
    )
    return None if outcome.allocations is None else outcome.allocations[0]["devices"]["results"][0]["device"]


def test_selectors_match_as_the_scheduler_does() -> None:
    """Each set field must equal the device's; empty selector: all; no selector: none."""
    rule = taint_rule(key="k", effect="NoSchedule", pool=NODE, device="gpu-1")
    assert rule_selects(rule, DRIVER, NODE, "gpu-1")
    assert not rule_selects(rule, DRIVER, NODE, "gpu-2") and not rule_selects(rule, DRIVER, "n2", "gpu-1")
    assert rule_selects({"spec": {"deviceSelector": {}}}, "any", "p", "d")
    assert not rule_selects({"spec": {}}, "any", "p", "d")


def test_a_rule_blocks_like_a_slice_taint_and_a_toleration_lifts_it() -> None:
    slices = published()
    rule = taint_rule(key="example.com/maintenance", effect="NoSchedule", pool=NODE, device="gpu-0")
    assert first_device(slices, []) == "gpu-0"
    assert first_device(slices, [rule]) == "gpu-1"
    tolerate = [{"key": "example.com/maintenance", "operator": "Exists"}]
    assert first_device(slices, [rule], tolerations=tolerate) == "gpu-0"
    node_rule = taint_rule(key="example.com/drain", effect="NoExecute", pool=NODE)
    assert first_device(slices, [node_rule]) is None
    alloc = Allocator(slices, builtin_device_classes(), node_name=NODE, taint_rules=[node_rule])
    reasons = {v.reason for r in diagnose(alloc, [gpu_claim()]).requests for v in r.verdicts}
    assert reasons == {"taint example.com/drain:NoExecute is not tolerated"}


def test_health_taints_and_rules_add_up() -> None:
    """A health taint in the slice and an operator's rule both stay on the device; neither replaces
    the other, and tolerating one is not enough."""
    slices = published()
    health = {"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}
    for d in slices[0]["spec"]["devices"]:
        if d["name"] == "gpu-0":
            d["taints"] = [health]
    rule = taint_rule(key="example.com/maintenance", effect="NoSchedule", pool=NODE, device="gpu-0")
    (device,) = [
        d for s in with_taint_rules(slices, [rule]) for d in s["spec"]["devices"] if d["name"] == "gpu-0"
    ]
    assert [t["key"] for t in device["taints"]] == ["gpu.nvidia.com/xid", "example.com/maintenance"]
    only_health = [{"key": "gpu.nvidia.com/xid", "operator": "Exists"}]
    assert first_device(slices, [rule], tolerations=only_health) == "gpu-1"


@pytest.mark.parametrize(
    ("kw", "phrase"),
    [
        ({"key": "", "effect": "NoSchedule"}, "label name"),
        ({"key": "k", "effect": "PreferNoSchedule"}, "allowed: NoSchedule, NoExecute"),
        ({"key": "k", "effect": "NoSchedule", "device": "gpu-0"}, "give its pool"),
    ],
)
def test_bad_rules_are_refused(kw: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        taint_rule(**kw)


def test_taint_and_untaint_over_http(tmp_path: Path) -> None:
    """`nvdra taint` by UUID writes one labelled v1beta2 rule; `untaint` deletes it; a health-like
    rule nvdra did not write stays."""
    store = FakeKube()
    store.add_node(NODE)
    for s in published():
        store.create_resource_slice(s)
    uuid = next(
        d["attributes"]["uuid"]["string"]
        for s in store.resource_slices()
        for d in s["spec"]["devices"]
        if d["name"] == "gpu-2"
    )
    with ApiServer(store) as server:
        kubeconfig = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
        rt = find_rule_type(store)
        # a 1.36 server with DRADeviceTaintRules: the test server keeps resource.k8s.io kinds once and
        # serves them at each version it serves, so the kind is registered under its storage key
        server.register(attrs.evolve(rt, version="v1"))
        http = KubernetesKubeApi.from_kubeconfig(kubeconfig)
        foreign = {
            "metadata": {"name": "ops-rule"},
            "spec": {"deviceSelector": {"pool": NODE}, "taint": {"key": "ops", "effect": "NoSchedule"}},
        }
        store.create_object(rt, foreign)
        args = ["taint", NODE, "--uuid", uuid, "--key", "example.com/maintenance", "--kubeconfig", kubeconfig]
        done = CliRunner().invoke(main, args, catch_exceptions=False)
        assert done.exit_code == 0, done.output
        rules = [r for r in store.list_objects(rt) if r["metadata"]["name"] != "ops-rule"]
        assert [r["spec"]["deviceSelector"] for r in rules] == [
            {"driver": DRIVER, "pool": NODE, "device": "gpu-2"}
        ]
        served = [r for r in http.list_objects(rt) if r["metadata"]["name"] != "ops-rule"]
        assert [r["apiVersion"] for r in served] == ["resource.k8s.io/v1beta2"]
        again = CliRunner().invoke(main, args, catch_exceptions=False)  # idempotent: updates, no second rule
        assert again.exit_code == 0 and len(store.list_objects(rt)) == 2
        gone = CliRunner().invoke(main, ["untaint", NODE, "--device", "gpu-2", "--kubeconfig", kubeconfig])
        assert gone.exit_code == 0 and "deleted" in gone.output
        assert [r["metadata"]["name"] for r in store.list_objects(rt)] == ["ops-rule"]
        none = CliRunner().invoke(main, ["untaint", NODE, "--kubeconfig", kubeconfig])
        assert none.exit_code == 1


def test_explain_applies_rules_given_with_the_claims(tmp_path: Path) -> None:
    """A DeviceTaintRule in explain's input moves the claim off the tainted GPU."""
    rule = taint_rule(key="example.com/maintenance", effect="NoSchedule", pool="node", device="gpu-0")
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", **gpu_claim()}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump_all([rule, claim]))
    done = CliRunner().invoke(main, ["explain", str(spec), "--simulate", "dgx-h100", "-o", "yaml"])
    assert done.exit_code == 0, done.output
    assert "device: gpu-1" in done.output and "device: gpu-0" not in done.output
