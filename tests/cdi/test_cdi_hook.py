"""The image's ``nvidia-cdi-hook``: copied into the plugin dir at start, and that path named in the specs."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nvdra.cdi import DEFAULT_HOOK_PATH
from nvdra.kubeletplugin import FakeKube
from nvdra.plugins.cdihook import install_cdi_hook
from nvdra.plugins.gpu.config import PluginConfig
from nvdra.plugins.gpu.serve import serve
from tests.plugins.conftest import allocated_claim, result

HOOK_BODY = "#!/bin/sh\n# a stand-in for the toolkit's nvidia-cdi-hook\nexit 0\n"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="nvdra-hook-") as tmp:
        yield Path(tmp)


def _fake_hook(directory: Path, body: str = HOOK_BODY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    hook = directory / "nvidia-cdi-hook"
    hook.write_text(body)
    hook.chmod(0o755)
    return hook


def _config(base: Path, *, simulate: str = "dgx-h100", hook: str = "") -> PluginConfig:
    return PluginConfig(
        node_name="n1",
        cdi_root=base / "cdi",
        simulate=simulate,
        nvidia_cdi_hook_path=hook,
        kubelet_registrar_directory_path=base / "reg",
        kubelet_plugins_directory_path=base / "plugins",
    )


def test_plugin_copies_the_hook_from_path_and_its_specs_name_the_copy(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started with a hook on PATH, the GPU plugin copies it (identical, 0755); every spec hook names it."""
    source = _fake_hook(short_dir / "image-bin")
    monkeypatch.setenv("PATH", f"{short_dir / 'image-bin'}{os.pathsep}{os.environ['PATH']}")
    config = _config(short_dir)
    store = FakeKube()
    store.add_node("n1")
    with serve(config, kube=store) as plugin:
        claim = allocated_claim([result("gpu-0")])
        store.add_claim(claim)
        assert plugin.driver.prepare_resource_claims([claim])[claim["metadata"]["uid"]].error == ""
        (spec_file,) = config.cdi_root.glob(f"*{claim['metadata']['uid']}*.yaml")
        spec = yaml.safe_load(spec_file.read_text())
    copy = config.plugin_dir / "nvidia-cdi-hook"
    assert copy.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o755
    hooks = spec["containerEdits"]["hooks"]
    assert hooks and {h["path"] for h in hooks} == {str(copy)}
    assert not [p for p in config.plugin_dir.iterdir() if p.name.endswith(".tmp")]


def test_an_explicit_hook_path_wins_and_nothing_is_copied(short_dir: Path) -> None:
    """``--nvidia-cdi-hook-path`` is used as given, even with a hook on PATH."""
    _fake_hook(short_dir / "image-bin")
    config = _config(short_dir, hook="/opt/toolkit/nvidia-cdi-hook")
    assert (
        install_cdi_hook(config, search_path=str(short_dir / "image-bin")) == "/opt/toolkit/nvidia-cdi-hook"
    )
    assert not (config.plugin_dir / "nvidia-cdi-hook").exists()


def test_a_changed_image_hook_replaces_the_copy_atomically(short_dir: Path) -> None:
    """A new image's hook replaces the old copy by rename (a new inode: a running old copy is untouched)."""
    config = _config(short_dir)
    _fake_hook(short_dir / "v1")
    path = install_cdi_hook(config, search_path=str(short_dir / "v1"))
    first = os.stat(path).st_ino
    assert install_cdi_hook(config, search_path=str(short_dir / "v1")) == path
    assert os.stat(path).st_ino == first  # identical: left alone
    new = _fake_hook(short_dir / "v2", HOOK_BODY + "# v2\n")
    assert install_cdi_hook(config, search_path=str(short_dir / "v2")) == path
    assert Path(path).read_bytes() == new.read_bytes() and os.stat(path).st_ino != first


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_without_a_hook_on_path_the_host_default_is_named_with_a_warning(short_dir: Path) -> None:
    """Outside the image (no hook on PATH) a real node's specs name /usr/bin/nvidia-cdi-hook, saying so."""
    config = _config(short_dir, simulate="")
    logger = logging.getLogger("nvdra.plugins.cdihook")
    records = _Records()  # on the logger itself: whatever other tests did to the root's handlers
    logger.addHandler(records)
    try:
        assert install_cdi_hook(config, search_path=str(short_dir / "empty")) == DEFAULT_HOOK_PATH
    finally:
        logger.removeHandler(records)
    (warning,) = [r for r in records.records if r.levelno == logging.WARNING]
    assert "nvidia-cdi-hook is not on PATH" in warning.getMessage()
    assert "--nvidia-cdi-hook-path" in warning.getMessage()
