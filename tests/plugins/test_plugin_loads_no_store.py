"""The plugins never load the in-memory API store (FakeKube, its object store, orjson): only the offline
publication of ``nvdra devices`` uses it, and it imports it there."""

from __future__ import annotations

import subprocess
import sys

import pytest

STORE = ("nvdra.kubeletplugin.fake", "nvdra.kubeletplugin.store.objectstore", "orjson")


@pytest.mark.parametrize(
    "module",
    ["nvdra.plugins.gpu.assembly", "nvdra.plugins.computedomain.serve", "nvdra.plugins.gpu.publication"],
)
def test_plugin_modules_load_no_in_memory_store(module: str) -> None:
    code = f"import sys, {module}\nprint(','.join(m for m in {STORE!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_offline_publication_still_uses_the_store() -> None:
    code = (
        "import sys\n"
        "from nvdra.plugins.gpu.config import PluginConfig\n"
        "from nvdra.plugins.gpu.publication import offline_publication\n"
        "config = PluginConfig(node_name='n1', simulate='dgx-h100')\n"
        "pub = offline_publication(config, env={})\n"
        "print(len(pub.inventory.gpus), 'nvdra.kubeletplugin.fake' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["8", "True"]
