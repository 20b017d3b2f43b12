"""GPU and MIG-device sharing settings: strategy, time-slice interval, MPS.

Invariants owned here (upstream ``sharing.go`` semantics, restated):
- a strategy may only be selected while its gate is on (TimeSlicing ↔ TimeSlicingSettings,
  MPS ↔ MPSSupport), with upstream's message ``"<S>" is selected as the GPU sharing strategy, but the
  "<Gate>" feature gate is not enabled``;
- normalizing fills what the strategy implies: TimeSlicing without ``timeSlicingConfig`` gets
  ``{interval: Default}`` (gate on), and — unlike upstream, which then dereferences nil —
  ``timeSlicingConfig: {}`` gets interval Default too; MPS without ``mpsConfig`` gets ``{}`` (gate on);
- settings of the other strategy (``mpsConfig`` with TimeSlicing, ``timeSlicingConfig`` with MPS) are
  rejected by ``validate`` with the text upstream's getters use at prepare time, so the webhook can
  report them early.
"""

from __future__ import annotations

__all__ = ["GpuSharing", "MigDeviceSharing", "SharingStrategy", "TimeSliceInterval", "TimeSlicingConfig"]

import enum

import attrs

from nvdra.core.config._base import child_path, json_name
from nvdra.core.config.mps import MpsConfig
from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates, Gate


class SharingStrategy(enum.StrEnum):
    """How the processes of one claim share a device."""

    TIME_SLICING = "TimeSlicing"
    MPS = "MPS"

    @property
    def gate(self) -> Gate:
        """The feature gate that must be on for this strategy."""
        return Gate.TIME_SLICING_SETTINGS if self is SharingStrategy.TIME_SLICING else Gate.MPS_SUPPORT


class TimeSliceInterval(enum.StrEnum):
    """The compute time-slice length; ``nvidia_smi_value`` is what ``--set-timeslice`` takes."""

    DEFAULT = "Default"
    SHORT = "Short"
    MEDIUM = "Medium"
    LONG = "Long"

    @property
    def nvidia_smi_value(self) -> int:
        """``nvidia-smi compute-policy --set-timeslice`` argument: Default 0, Short 1, Medium 2, Long 3."""
        return list(TimeSliceInterval).index(self)


@attrs.frozen(kw_only=True)
class TimeSlicingConfig:
    """``sharing.timeSlicingConfig``; a missing interval means Default."""

    interval: TimeSliceInterval | None = attrs.field(default=None, metadata=json_name("interval"))

    def normalize(self) -> TimeSlicingConfig:
        """Fill the implied interval (fixes upstream's crash on ``timeSlicingConfig: {}``)."""
        if self.interval is None:
            return TimeSlicingConfig(interval=TimeSliceInterval.DEFAULT)
        return self

    @property
    def effective_interval(self) -> TimeSliceInterval:
        """The interval to apply (Default when unset)."""
        return self.interval or TimeSliceInterval.DEFAULT


def _strategy_problems(
    strategy: SharingStrategy, gates: FeatureGates, path: str, what: str
) -> list[ConfigError]:
    if gates.enabled(strategy.gate):
        return []
    return [
        ConfigError(
            child_path(path, "strategy"),
            str(strategy),
            f"a strategy whose feature gate is on (enable {strategy.gate} to use {strategy})",
            reason=f'"{strategy}" is selected as the {what} sharing strategy, but the "{strategy.gate}" '
            "feature gate is not enabled:",
        )
    ]


def _mps_problems(strategy: SharingStrategy, mps_config: MpsConfig | None, path: str) -> list[ConfigError]:
    if mps_config is None:
        return []
    mps_path = child_path(path, "mpsConfig")
    if strategy is not SharingStrategy.MPS:
        return [
            ConfigError(
                mps_path,
                "mpsConfig",
                'mpsConfig only with strategy "MPS"',
                reason=f"cannot use MpsConfig with the '{strategy}' strategy:",
            )
        ]
    return mps_config.problems(mps_path)


@attrs.frozen(kw_only=True)
class GpuSharing:
    """``GpuConfig.sharing``: the strategy and its settings."""

    strategy: SharingStrategy = attrs.field(metadata=json_name("strategy"))
    time_slicing_config: TimeSlicingConfig | None = attrs.field(
        default=None, metadata=json_name("timeSlicingConfig")
    )
    mps_config: MpsConfig | None = attrs.field(default=None, metadata=json_name("mpsConfig"))

    def normalize(self, gates: FeatureGates) -> GpuSharing:
        """Fill the settings the strategy implies (see the module docstring)."""
        tsc, mps = self.time_slicing_config, self.mps_config
        if (
            self.strategy is SharingStrategy.TIME_SLICING
            and tsc is None
            and gates.enabled(Gate.TIME_SLICING_SETTINGS)
        ):
            tsc = TimeSlicingConfig(interval=TimeSliceInterval.DEFAULT)
        if tsc is not None:
            tsc = tsc.normalize()
        if self.strategy is SharingStrategy.MPS and mps is None and gates.enabled(Gate.MPS_SUPPORT):
            mps = MpsConfig()
        return attrs.evolve(self, time_slicing_config=tsc, mps_config=mps)

    def problems(self, gates: FeatureGates, path: str) -> list[ConfigError]:
        """Everything wrong with these settings under ``gates``, each located under ``path``."""
        out = _strategy_problems(self.strategy, gates, path, "GPU")
        if self.time_slicing_config is not None and self.strategy is not SharingStrategy.TIME_SLICING:
            out.append(
                ConfigError(
                    child_path(path, "timeSlicingConfig"),
                    "timeSlicingConfig",
                    'timeSlicingConfig only with strategy "TimeSlicing"',
                    reason=f"cannot use TimeSlicingConfig with the '{self.strategy}' strategy:",
                )
            )
        return out + _mps_problems(self.strategy, self.mps_config, path)

    def get_time_slicing_config(self) -> TimeSlicingConfig:
        """The time-slicing settings to apply (Default interval when unset).

        Raises:
            ConfigError: the strategy is not TimeSlicing, or an ``mpsConfig`` is present.
        """
        if self.strategy is not SharingStrategy.TIME_SLICING:
            raise ConfigError(
                "$.sharing.strategy",
                str(self.strategy),
                '"TimeSlicing"',
                reason="strategy is not set to 'TimeSlicing':",
            )
        if self.mps_config is not None:
            raise ConfigError(
                "$.sharing.mpsConfig",
                "mpsConfig",
                'no mpsConfig with "TimeSlicing"',
                reason="cannot use MpsConfig with the 'TimeSlicing' strategy:",
            )
        return (self.time_slicing_config or TimeSlicingConfig()).normalize()

    def get_mps_config(self) -> MpsConfig:
        """The MPS settings to apply (empty when unset).

        Raises:
            ConfigError: the strategy is not MPS, or a ``timeSlicingConfig`` is present.
        """
        if self.strategy is not SharingStrategy.MPS:
            raise ConfigError(
                "$.sharing.strategy", str(self.strategy), '"MPS"', reason="strategy is not set to 'MPS':"
            )
        if self.time_slicing_config is not None:
            raise ConfigError(
                "$.sharing.timeSlicingConfig",
                "timeSlicingConfig",
                'no timeSlicingConfig with "MPS"',
                reason="cannot use TimeSlicingConfig with the 'MPS' strategy:",
            )
        return self.mps_config or MpsConfig()


@attrs.frozen(kw_only=True)
class MigDeviceSharing:
    """``MigDeviceConfig.sharing``.

    No time-slice length (MIG devices cannot set one); TimeSlicing on a MIG device is a no-op.
    """

    strategy: SharingStrategy = attrs.field(metadata=json_name("strategy"))
    mps_config: MpsConfig | None = attrs.field(default=None, metadata=json_name("mpsConfig"))

    def normalize(self, gates: FeatureGates) -> MigDeviceSharing:
        """Fill ``mpsConfig: {}`` for MPS when MPSSupport is on."""
        if (
            self.strategy is SharingStrategy.MPS
            and self.mps_config is None
            and gates.enabled(Gate.MPS_SUPPORT)
        ):
            return attrs.evolve(self, mps_config=MpsConfig())
        return self

    def problems(self, gates: FeatureGates, path: str) -> list[ConfigError]:
        """Everything wrong with these settings under ``gates``, each located under ``path``."""
        return _strategy_problems(self.strategy, gates, path, "MIG device") + _mps_problems(
            self.strategy, self.mps_config, path
        )

    def get_mps_config(self) -> MpsConfig:
        """The MPS settings to apply (empty when unset). Raises ConfigError if the strategy is not MPS."""
        if self.strategy is not SharingStrategy.MPS:
            raise ConfigError(
                "$.sharing.strategy", str(self.strategy), '"MPS"', reason="strategy is not set to 'MPS':"
            )
        return self.mps_config or MpsConfig()
