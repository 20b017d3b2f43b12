"""Apply MIG changes through an :class:`~nvdra.nvml.NvmlBackend`: create and destroy MIG devices.

A MIG device is named by what the scheduler allocated — parent GPU UUID, GI profile id, placement
start — never by GI/CI ids, which the driver assigns. That makes every operation replayable from an
intent record after a crash.

Invariants owned here (upstream-driver §5.3, nvidia-hardware §1.4):
- create: enable MIG mode first if it is off, but only where toggling is reset-less (Hopper and
  later); an Ampere GPU is never toggled (a toggle may leave it needing a reset). Then create the GI
  at exactly the requested placement and its full-size CI. If the CI cannot be made, the GI just
  made is destroyed again, so a failed create leaves the GPU as it found it;
- INSUFFICIENT_RESOURCES (occupied placement, instance count, compute slices) is surfaced unchanged;
- destroy: the GI at the key is found with ``gpu_instances`` (which also lists a GI a crash left
  without a CI); its CI first, then the GI; a device that does not exist (never made) or is half made
  is fine; an IN_USE error is surfaced. When the GPU then holds no GPU instance and toggling is
  reset-less, MIG mode is switched off again;
- sweep: destroys every live GPU instance (MIG device or bare GI) not in the keep set (used at start,
  DynamicMIG only).
"""

from __future__ import annotations

__all__ = ["MigExecutor", "MigKey"]

import contextlib
import logging
import threading
from collections.abc import Iterable

import attrs

from nvdra.core.errors import NvmlError, NvmlInUse, NvmlNotFound, NvmlResetRequired
from nvdra.core.faults import reach
from nvdra.nvml._backend import GpuInstanceRecord, MigDeviceRecord, NvmlBackend

log = logging.getLogger(__name__)

_HOPPER = 9
_RESET_REQUIRED = 16


@attrs.frozen(kw_only=True)
class MigKey:
    """What identifies a dynamic MIG device: parent GPU, GI profile id, placement start."""

    parent_uuid: str
    profile_id: int
    start: int


class MigExecutor:
    """Creates, destroys and sweeps MIG devices on one node (serialised by an internal lock)."""

    def __init__(self, backend: NvmlBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()

    def _resetless(self, index: int) -> bool:
        return self.backend.device_identity(index).architecture >= _HOPPER

    def _gi_at(self, index: int, key: MigKey) -> GpuInstanceRecord | None:
        # A GI made before a crash may hold no CI; gpu_instances() lists it all the same.
        return next(
            (
                g
                for g in self.backend.gpu_instances(index)
                if g.profile_id == key.profile_id and g.placement.start == key.start
            ),
            None,
        )

    def find(self, key: MigKey) -> MigDeviceRecord | None:
        """The live MIG device at ``key`` (None if there is none, or only a bare GPU instance)."""
        index = self.backend.index_by_uuid(key.parent_uuid)
        if not self._mig_on(index):
            return None
        gi = self._gi_at(index, key)
        if gi is None:
            return None
        return next((r for r in self.backend.mig_devices(index) if r.gi_id == gi.gi_id), None)

    def create(self, key: MigKey) -> MigDeviceRecord:
        """Create the MIG device at ``key`` (see the module docstring).

        Raises:
            NvmlError: INSUFFICIENT_RESOURCES for an occupied placement, NOT_SUPPORTED where MIG mode is
                off and may not be toggled, RESET_REQUIRED/IN_USE where enabling MIG did not take effect.
        """
        with self._lock:
            index = self.backend.index_by_uuid(key.parent_uuid)
            self._enable_mig(index)
            gi_id = self.backend.create_gpu_instance(index, key.profile_id, key.start)
            reach("after-mig-gi-created")
            try:
                record = self.backend.create_compute_instance(index, gi_id)
            except NvmlError:
                self.backend.destroy_gpu_instance(index, gi_id)
                raise
            reach("after-mig-ci-created")
            log.info("created MIG device %s (GI %d, CI %d) on %s", record.uuid, gi_id, record.ci_id, key)
            return record

    def _enable_mig(self, index: int) -> None:
        if self.backend.mig_mode(index).current:
            return
        if not self._resetless(index):
            raise NvmlResetRequired(
                f"MIG mode is off on GPU {index} and it cannot be enabled without a GPU reset (pre-Hopper); "
                "enable MIG mode out of band"
            )
        status = self.backend.set_mig_mode(index, True)
        if status != 0:
            self.backend.set_mig_mode(index, False)  # drop the pending request: nothing changed
            error = NvmlResetRequired if status == _RESET_REQUIRED else NvmlInUse
            raise error(f"enabling MIG mode on GPU {index} did not take effect (activation status {status})")
        reach("after-mig-mode-enabled")

    def destroy(self, key: MigKey) -> None:
        """Destroy the MIG device at ``key`` (CI, then GI); fine if it does not exist or is half made.

        Raises:
            NvmlError: IN_USE while processes use it, or any other NVML failure.
        """
        with self._lock:
            index = self.backend.index_by_uuid(key.parent_uuid)
            if not self._mig_on(index):
                return
            gi = self._gi_at(index, key)
            if gi is not None:
                for rec in self.backend.mig_devices(index):
                    if rec.gi_id == gi.gi_id:
                        self._destroy_ci(index, rec.gi_id, rec.ci_id)
                        reach("after-mig-ci-destroyed")
                with contextlib.suppress(NvmlNotFound):  # gone between the listing and now
                    self.backend.destroy_gpu_instance(index, gi.gi_id)
            self._maybe_disable(index)

    def _mig_on(self, index: int) -> bool:
        try:
            return self.backend.mig_mode(index).current
        except NvmlError:
            return False

    def _destroy_ci(self, index: int, gi_id: int, ci_id: int) -> None:
        with contextlib.suppress(NvmlNotFound):  # already gone: a replayed destroy
            self.backend.destroy_compute_instance(index, gi_id, ci_id)

    def _maybe_disable(self, index: int) -> None:
        if self.backend.gpu_instances(index) or not self._resetless(index):
            return
        try:
            self.backend.set_mig_mode(index, False)
        except NvmlInUse:
            return  # a bare GI (or something else) still holds the GPU: leave MIG mode on

    def sweep(self, keep: Iterable[MigKey]) -> list[MigKey]:
        """Destroy every live GPU instance (with its MIG device, or bare) not in ``keep``; then disable
        MIG where safe. Returns the keys of what went."""
        wanted = set(keep)
        gone: list[MigKey] = []
        for index in range(self.backend.device_count()):
            identity = self.backend.device_identity(index)
            if not self._mig_on(index):
                continue
            for gi in self.backend.gpu_instances(index):
                key = MigKey(parent_uuid=identity.uuid, profile_id=gi.profile_id, start=gi.placement.start)
                if key not in wanted:
                    log.warning("destroying GPU instance %d (%s) that no prepared claim owns", gi.gi_id, key)
                    self.destroy(key)
                    gone.append(key)
            with self._lock:
                self._maybe_disable(index)
        return gone
