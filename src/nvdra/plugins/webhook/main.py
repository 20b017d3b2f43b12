"""``nvdra-webhook``: the validating admission webhook for ResourceClaims and ResourceClaimTemplates.

Flags follow the upstream Go webhook (``--tls-cert-file``, ``--tls-private-key-file``, ``--port``) plus
``--feature-gates`` as the plugins take it (env ``FEATURE_GATES``; ``FABRIC_TOPOLOGY_SUPPORT`` is read as
the plugins read it), so the chart hands every component the same gate map.
"""

from __future__ import annotations

__all__ = ["main"]

import os
from pathlib import Path

import click

from nvdra.core.featuregates import parse_feature_gates
from nvdra.plugins.flags import logging_options, process_main
from nvdra.plugins.webhook.admission import admission_gates
from nvdra.plugins.webhook.server import serve

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--tls-cert-file", type=_FILE, required=True, help="PEM certificate (reloaded on change).")
@click.option("--tls-private-key-file", type=_FILE, required=True, help="PEM private key of the certificate.")
@click.option("--port", type=click.IntRange(0, 65535), default=443, show_default=True, help="HTTPS port.")
@click.option("--bind-address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--feature-gates",
    envvar="FEATURE_GATES",
    show_envvar=True,
    default="",
    help="Comma list of Gate=true|false: the same map the plugins get.",
)
@logging_options()
def main(
    *,
    tls_cert_file: Path,
    tls_private_key_file: Path,
    port: int,
    bind_address: str,
    feature_gates: str,
    verbosity: int,
) -> None:
    """Validate nvdra's opaque device configs in ResourceClaims and ResourceClaimTemplates."""
    with process_main("nvdra-webhook", verbosity):
        gates = parse_feature_gates(feature_gates, env=os.environ)
        serve(
            host=bind_address,
            port=port,
            cert_file=tls_cert_file,
            key_file=tls_private_key_file,
            gates=admission_gates(gates),
        )
