"""The ``nvidia-cdi-hook`` the CDI specs name: the image's own copy, placed on the host at plugin start.

Upstream copies ``/usr/bin/nvidia-cdi-hook`` from its image into the plugin's directory under the
kubelet plugins root and writes that host path into every CDI hook, so nodes without the NVIDIA
Container Toolkit in ``/usr/bin`` (GPU Operator installs, minimal hosts) still run the hooks. nvdra
does the same: the hook is found on the plugin's ``PATH`` (the image puts it in ``/usr/bin``) and
copied to ``<kubelet plugins dir>/<driver>/nvidia-cdi-hook``, a directory the chart mounts at the same
path on host and container, so the copy's path is also its host path. An explicit
``--nvidia-cdi-hook-path`` / ``NVIDIA_CDI_HOOK_PATH`` wins and nothing is copied.

The copy is atomic (temp file, fsync, rename): the runtime may be executing the previous copy for a
container start at this moment, and rewriting a running executable in place fails with ``ETXTBSY``
or, worse, hands a half-written binary to the next container start. A copy identical to the image's
is left alone.
"""

from __future__ import annotations

__all__ = ["HOOK_NAME", "install_cdi_hook"]

import logging
import os
import shutil
from pathlib import Path

from nvdra.cdi import DEFAULT_HOOK_PATH, atomic_write
from nvdra.core.errors import HostError
from nvdra.plugins.pluginconfig import KubeletPluginConfig

log = logging.getLogger(__name__)

HOOK_NAME = "nvidia-cdi-hook"


def install_cdi_hook(config: KubeletPluginConfig, *, search_path: str | None = None) -> str:
    """Copy the image's ``nvidia-cdi-hook`` into the plugin dir; the host path the specs must name.

    Args:
        config: the plugin's settings (``nvidia_cdi_hook_path``, ``plugin_dir``).
        search_path: the ``PATH`` to search (default: this process's).

    Returns:
        ``config.nvidia_cdi_hook_path`` when set; else ``<plugin dir>/nvidia-cdi-hook`` after the copy;
        else, when no hook is on ``PATH`` (a development checkout, not the image), the toolkit's
        host default ``/usr/bin/nvidia-cdi-hook``, with a warning saying so.

    Raises:
        HostError: the hook was found but could not be read or copied (names both paths).
    """
    if config.nvidia_cdi_hook_path:
        return config.nvidia_cdi_hook_path
    found = shutil.which(HOOK_NAME, path=search_path if search_path is not None else os.environ.get("PATH"))
    if found is None:
        # A simulated node's specs are never run by a real runtime on a toolkit-less host: no warning.
        log.log(
            logging.INFO if config.simulate else logging.WARNING,
            "%s is not on PATH (%s); CDI specs name the host's %s, which nodes without the NVIDIA "
            "Container Toolkit lack (set --nvidia-cdi-hook-path)",
            HOOK_NAME,
            search_path if search_path is not None else os.environ.get("PATH", ""),
            DEFAULT_HOOK_PATH,
        )
        return DEFAULT_HOOK_PATH
    source = Path(found).resolve()
    target = config.plugin_dir / HOOK_NAME
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise HostError(f"cannot read {HOOK_NAME} at {source}: {exc.strerror}") from exc
    if source == target.resolve() or _same(target, data):
        log.info("%s at %s is current", HOOK_NAME, target)
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    atomic_write(target, data, 0o755, error_cls=HostError)
    log.info("copied %s from %s to %s for the CDI specs", HOOK_NAME, source, target)
    return str(target)


def _same(target: Path, data: bytes) -> bool:
    """Whether ``target`` already is an executable copy holding ``data``."""
    try:
        st = target.stat()
        return st.st_mode & 0o777 == 0o755 and st.st_size == len(data) and target.read_bytes() == data
    except OSError:
        return False
