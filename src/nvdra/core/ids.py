"""Identifier types. NewTypes cost nothing at run time and stop mixing a GPU UUID with a claim UID."""

from __future__ import annotations

__all__ = ["ClaimUid", "DeviceName", "GpuUuid", "MigUuid", "PciBusId", "PoolName"]

from typing import NewType

GpuUuid = NewType("GpuUuid", str)
"""``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` as NVML reports it."""

MigUuid = NewType("MigUuid", str)
"""``MIG-xxxxxxxx-xxxx-5xxx-xxxx-xxxxxxxxxxxx`` as NVML reports it for a MIG device handle."""

PciBusId = NewType("PciBusId", str)
"""Linux/sysfs form, lower case with a 4-digit domain: ``0000:1b:00.0``."""

ClaimUid = NewType("ClaimUid", str)
"""A ResourceClaim's ``metadata.uid``."""

DeviceName = NewType("DeviceName", str)
"""A device name inside a ResourceSlice pool (a DNS label), e.g. ``gpu-0``."""

PoolName = NewType("PoolName", str)
"""A ResourceSlice pool name; nvdra uses the node name."""
