"""The GPU kubelet plugin's settings, as parsed from flags and their environment twins."""

from __future__ import annotations

__all__ = ["DRIVER_NAME", "PluginConfig"]

from pathlib import Path

import attrs

from nvdra.plugins.pluginconfig import KubeletPluginConfig, simulated_profile_dir

DRIVER_NAME = "gpu.nvidia.com"


@attrs.frozen(kw_only=True)
class PluginConfig(KubeletPluginConfig):
    """Everything ``serve`` needs. Flag names follow the upstream Go plugin (see ``main.py``)."""

    driver_name: str = DRIVER_NAME
    image_name: str = ""
    additional_xids_to_ignore: str = ""
    health_quiet_period: float = 300.0  # seconds without a new XID before its taint clears; 0 = never
    simulate_state: str = ""  # with simulate: a directory where the simulated hardware's state lives
    publish_fabric_partitions: bool = False  # NVLink partitions as devices (needs FabricTopologySupport)
    consumable_shares: str = "disabled"  # upstream's --consumable-shares: disabled|unlimited|memory|N

    @property
    def simulated_host_dir(self) -> Path:
        """``<--simulate-state>/<profile>`` when the flag is set (the host outlives the plugin there),
        else the plugin directory's (see :class:`KubeletPluginConfig`)."""
        if self.simulate_state:
            return simulated_profile_dir(Path(self.simulate_state), self.simulate)
        return super().simulated_host_dir
