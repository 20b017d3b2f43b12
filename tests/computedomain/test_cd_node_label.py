"""The CD plugin's node label: a conditional merge patch of its own Node's labels, re-read on 409."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from nvdra.core.errors import ClaimError, KubeConflict
from nvdra.core.featuregates import parse_feature_gates
from nvdra.imex import DOMAIN_LABEL
from nvdra.kubeletplugin import FakeKube
from nvdra.kubeletplugin.objects import NODES
from nvdra.plugins.computedomain.driver import ComputeDomainDriver


class _Store:
    boot_id = "boot"


def _driver(kube: FakeKube, tmp_path: Path) -> ComputeDomainDriver:
    return ComputeDomainDriver(
        node_name="n1",
        clique_id="",
        gates=parse_feature_gates(""),
        store=cast(Any, _Store()),
        specs=cast(Any, None),
        kube=cast(Any, kube),
        namespace="nvdra",
        domains_dir=tmp_path,
    )


def _patches(kube: FakeKube) -> list[str]:
    return [c.verb for c in kube.calls() if c.resource == "nodes" and c.verb == "patch"]


def test_label_is_a_labels_only_patch_under_the_nodes_version(tmp_path: Path) -> None:
    kube = FakeKube()
    kube.add_node("n1", labels={"other": "x"})
    seen: list[Any] = []
    real = kube.patch_object

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append(args[2])
        return real(*args, **kw)

    kube.patch_object = spy  # type: ignore[method-assign]
    driver = _driver(kube, tmp_path)
    driver._label_node("u1")
    node = kube.get_node("n1")
    assert node["metadata"]["labels"] == {"other": "x", DOMAIN_LABEL: "u1"}
    assert list(seen[0]["metadata"]) == ["labels", "resourceVersion"] and set(seen[0]) == {"metadata"}
    driver._label_node("u1")  # already there: no write
    assert len(seen) == 1
    with pytest.raises(ClaimError, match="already in ComputeDomain u1"):
        driver._label_node("u2")


def test_a_conflict_rereads_the_node_and_retries_boundedly(tmp_path: Path) -> None:
    kube = FakeKube()
    kube.add_node("n1")
    kube.fail_next("patch", resource="nodes", status=409)
    driver = _driver(kube, tmp_path)
    driver._label_node("u1")
    assert kube.get_node("n1")["metadata"]["labels"][DOMAIN_LABEL] == "u1"
    assert len(_patches(kube)) == 2
    kube.fail_next("patch", resource="nodes", status=409, times=3)
    with pytest.raises(KubeConflict):
        driver._set_node_label("u1", add=False)
    driver._set_node_label("u1", add=False)
    assert DOMAIN_LABEL not in kube.get_node("n1")["metadata"]["labels"]
    kube.patch_object(NODES, "n1", {"metadata": {"labels": {DOMAIN_LABEL: "u2"}}})
    driver._set_node_label("u1", add=False)  # another domain's label stays
    assert kube.get_node("n1")["metadata"]["labels"][DOMAIN_LABEL] == "u2"
