"""Render the nvdra chart offline with Helm's own engine (Helm v4 via ``helm-python-sdk``).

``helm-python-sdk`` binds the official Helm Go SDK (a bundled shared library), so templates, Sprig
functions, ``fail`` and ``.Capabilities`` behave exactly as ``helm template`` does. Its public
``Chart.render`` takes no capabilities, so this helper calls the same native entry point with the
``kube_version`` and ``api_versions`` options (the equivalents of ``--kube-version`` and
``--api-versions``); the package version is pinned in pyproject.toml for that reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the Helm v4 renderer) is not installed")
from helm_python import _native  # noqa: E402 - after the importorskip that guards it

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deployments" / "helm" / "nvdra"
RELEASE = "nvdra"
NAMESPACE = "nvdra"

RenderError = helm.HelmRenderError


def render_files(
    values: dict[str, Any] | None = None,
    *,
    kube_version: str = "v1.34.0",
    api_versions: Sequence[str] = (),
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """Template path → rendered text, as ``helm template`` would print them."""
    opts = {"name": RELEASE, "namespace": namespace, "kube_version": kube_version, "is_install": True}
    if api_versions:
        opts["api_versions"] = list(api_versions)
    with helm.Chart.load(str(CHART)) as chart:
        out = _native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts))
    files: dict[str, str] = json.loads(out)
    return files


def render(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (templates only; CRDs are in :func:`crds`)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values, **kw).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the chart's ``crds/`` directory (empty when there are none)."""
    directory = CHART / "crds"
    if not directory.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def find(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of ``kind`` (and ``name``, if given)."""
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
