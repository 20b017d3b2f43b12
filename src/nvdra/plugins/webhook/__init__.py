"""nvdra's validating admission webhook: pure admission decisions and the HTTPS server around them.

``review`` and ``config_problems`` are usable without a server (by tools that pre-check manifests);
``WebhookServer`` + ``CertificateStore`` serve them over TLS; ``nvdra-webhook`` is the process.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_PATHS",
    "DRIVER_KINDS",
    "RESOURCE_VERSIONS",
    "VALIDATE_PATH",
    "CertificateStore",
    "WebhookServer",
    "admission_gates",
    "config_problems",
    "review",
]

from nvdra.plugins.webhook.admission import (
    CONFIG_PATHS,
    DRIVER_KINDS,
    RESOURCE_VERSIONS,
    admission_gates,
    config_problems,
    review,
)
from nvdra.plugins.webhook.server import VALIDATE_PATH, CertificateStore, WebhookServer
