"""nvdra.cdi: the CDI spec model, container-edit rendering, qualified names and atomic writes.

Layers inside the package: ``names`` and ``spec`` (pure models) < ``validate`` (versions, loader rules)
< ``claims`` (per-claim specs) and ``nvidia`` (NVIDIA edits from a discovered driver) < ``writer``
(durable files). ``driverroot`` is the only module that reads the host (driver files, /proc).
Importing this package loads no SDK besides attrs, cattrs and PyYAML.
"""

from __future__ import annotations

__all__ = [
    "BINARY_DIRS",
    "CURRENT_VERSION",
    "DEFAULT_FILE_MODE",
    "DEFAULT_HOOK_PATH",
    "DRIVER_BINARIES",
    "DRIVER_LIBRARIES",
    "EARLIEST_VERSION",
    "KNOWN_VERSIONS",
    "LIBRARY_DIRS",
    "MOUNT_OPTIONS",
    "SPEC_EXTENSION",
    "CharDevice",
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "DriverFile",
    "DriverInstallation",
    "DriverLibrary",
    "DriverRoot",
    "Hook",
    "IntelRdt",
    "MigCapNodes",
    "Mount",
    "NetDevice",
    "Spec",
    "atomic_write",
    "char_device_node",
    "check_path_component",
    "claim_device_id",
    "claim_device_name",
    "claim_spec",
    "claim_spec_name",
    "claim_spec_path",
    "common_edits",
    "discover_driver",
    "encode_spec",
    "find_binary",
    "fsync_directory",
    "gpu_edits",
    "imex_channel_edits",
    "kind",
    "mig_edits",
    "minimum_version",
    "on_memory_filesystem",
    "parse_kind",
    "parse_qualified_name",
    "parse_version",
    "qualified_name",
    "read_proc_devices",
    "read_spec",
    "remove_durably",
    "remove_spec",
    "remove_specs",
    "remove_stale_temp_files",
    "transient_spec_name",
    "validate_class_name",
    "validate_device_name",
    "validate_edits",
    "validate_spec",
    "validate_vendor_name",
    "write_spec",
    "write_specs",
]

from nvdra.cdi.claims import (
    SPEC_EXTENSION,
    claim_device_id,
    claim_device_name,
    claim_spec,
    claim_spec_name,
    claim_spec_path,
)
from nvdra.cdi.driverroot import (
    BINARY_DIRS,
    DRIVER_BINARIES,
    DRIVER_LIBRARIES,
    LIBRARY_DIRS,
    DriverRoot,
    discover_driver,
    find_binary,
    read_proc_devices,
)
from nvdra.cdi.installation import (
    DEFAULT_FILE_MODE,
    CharDevice,
    DriverFile,
    DriverInstallation,
    DriverLibrary,
    MigCapNodes,
)
from nvdra.cdi.names import (
    check_path_component,
    kind,
    parse_kind,
    parse_qualified_name,
    qualified_name,
    transient_spec_name,
    validate_class_name,
    validate_device_name,
    validate_vendor_name,
)
from nvdra.cdi.nvidia import (
    DEFAULT_HOOK_PATH,
    MOUNT_OPTIONS,
    char_device_node,
    common_edits,
    gpu_edits,
    imex_channel_edits,
    mig_edits,
)
from nvdra.cdi.spec import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, NetDevice, Spec
from nvdra.cdi.validate import (
    CURRENT_VERSION,
    EARLIEST_VERSION,
    KNOWN_VERSIONS,
    minimum_version,
    parse_version,
    validate_edits,
    validate_spec,
)
from nvdra.cdi.writer import (
    atomic_write,
    encode_spec,
    fsync_directory,
    on_memory_filesystem,
    read_spec,
    remove_durably,
    remove_spec,
    remove_specs,
    remove_stale_temp_files,
    write_spec,
    write_specs,
)
