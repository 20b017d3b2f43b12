"""Per-claim (transient) CDI specs, the way the upstream DRA driver lays them out.

One spec per prepared ResourceClaim, kind ``<vendor>/<class>`` (``k8s.gpu.nvidia.com/claim``), file
``<cdi_root>/<vendor>-<class>_<claimUID>.yaml``, one device per allocated device named
``<claimUID>-<deviceName>``, spec-level edits shared by all of them; the kubelet gets the qualified IDs
``<vendor>/<class>=<claimUID>-<deviceName>``. Using the claim UID in every name means a runtime never
sees a reused device name (runtimes may cache specs).

Invariants: a rendered spec carries the lowest ``cdiVersion`` its content needs and passes
:func:`~nvdra.cdi.validate.validate_spec`; a claim UID with ``/``, ``..`` or NUL is refused before any
path is built.
"""

from __future__ import annotations

__all__ = [
    "SPEC_EXTENSION",
    "claim_device_id",
    "claim_device_name",
    "claim_spec",
    "claim_spec_name",
    "claim_spec_path",
]

from collections.abc import Sequence
from pathlib import Path

import attrs

from nvdra.cdi.names import check_path_component, kind, qualified_name, transient_spec_name
from nvdra.cdi.spec import ContainerEdits, Device, Spec
from nvdra.cdi.validate import minimum_version, validate_spec

SPEC_EXTENSION = ".yaml"


def claim_device_name(claim_uid: str, device_name: str) -> str:
    """The spec-local device name ``<claimUID>-<deviceName>``.

    Raises:
        CdiError: the claim UID could escape the CDI directory.
    """
    return f"{check_path_component(claim_uid, 'claim UID')}-{device_name}"


def claim_device_id(vendor: str, cls: str, claim_uid: str, device_name: str) -> str:
    """The qualified CDI device ID handed to the kubelet, e.g. ``k8s.gpu.nvidia.com/claim=<uid>-gpu-0``.

    Raises:
        CdiError: a part is invalid.
    """
    return qualified_name(vendor, cls, claim_device_name(claim_uid, device_name))


def claim_spec_name(vendor: str, cls: str, claim_uid: str) -> str:
    """The spec file name without extension: ``<vendor>-<class>_<claimUID>``.

    Raises:
        CdiError: a part is invalid or the UID could escape the CDI directory.
    """
    return transient_spec_name(vendor, cls, check_path_component(claim_uid, "claim UID"))


def claim_spec_path(cdi_root: str | Path, vendor: str, cls: str, claim_uid: str) -> Path:
    """``<cdi_root>/<vendor>-<class>_<claimUID>.yaml``.

    Raises:
        CdiError: a part is invalid or the UID could escape the CDI directory.
    """
    return Path(cdi_root) / (claim_spec_name(vendor, cls, claim_uid) + SPEC_EXTENSION)


def claim_spec(
    vendor: str,
    cls: str,
    claim_uid: str,
    devices: Sequence[tuple[str, ContainerEdits]],
    common: ContainerEdits,
) -> Spec:
    """Render the transient spec of one claim.

    Args:
        vendor: CDI vendor, e.g. ``k8s.gpu.nvidia.com``.
        cls: CDI class, e.g. ``claim``.
        claim_uid: the ResourceClaim's UID.
        devices: ``(device name, edits)`` per allocated device, e.g. ``("gpu-0", gpu_edits(...))``.
        common: the spec-level edits (applied once if any device of the spec is requested).

    Returns:
        A validated spec at the lowest ``cdiVersion`` its content needs.

    Raises:
        CdiError: a name is invalid, a device repeats, there are no devices, or an edit is malformed.
    """
    spec = Spec(
        cdi_version="",
        kind=kind(vendor, cls),
        devices=tuple(
            Device(name=claim_device_name(claim_uid, name), container_edits=edits) for name, edits in devices
        ),
        container_edits=common,
    )
    spec = attrs.evolve(spec, cdi_version=minimum_version(spec))
    validate_spec(spec)
    return spec
