"""``nvdra``: the operator's tool — ``demo`` and ``devices`` (more subcommands follow)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml

from nvdra.core.errors import NvdraError
from nvdra.core.featuregates import parse_feature_gates
from nvdra.nvml import PROFILE_NAMES
from nvdra.plugins.devices import device_rows, driver_resources, simulated_inventory, slice_objects
from nvdra.plugins.gpu.config import DRIVER_NAME

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="nvdra")
def main() -> None:
    """nvdra: the NVIDIA GPU DRA driver, as a library and tools."""


@main.command()
@click.option(
    "--simulate",
    "profile",
    default="dgx-h100",
    show_default=True,
    help=f"Simulated node: {', '.join(PROFILE_NAMES)}, or a YAML path.",
)
def demo(profile: str) -> None:
    """Run the GPU plugin end to end on a simulated node (no cluster, no GPU needed)."""
    from nvdra.plugins.demo import run_demo

    try:
        run_demo(click.echo, profile=profile)
    except NvdraError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--simulate",
    "profile",
    required=True,
    help=f"Simulated node: {', '.join(PROFILE_NAMES)}, or a YAML path.",
)
@click.option("--feature-gates", default="", envvar="FEATURE_GATES", help="Comma list of Gate=true|false.")
@click.option("--node-name", default="node", show_default=True, help="Node (and pool) name to render.")
@click.option(
    "-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True
)
def devices(profile: str, feature_gates: str, node_name: str, output: str) -> None:
    """Print what a node would publish (-o yaml: resource.k8s.io/v1 ResourceSlices as a YAML stream)."""
    try:
        gates = parse_feature_gates(feature_gates)
        resources = driver_resources(simulated_inventory(profile), node_name, gates)
    except NvdraError as exc:
        raise click.ClickException(str(exc)) from exc
    if output == "table":
        rows = device_rows(resources)
        cols = [c for c in rows[0] if any(r[c] for r in rows)] if rows else []
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
        for row in [dict(zip(cols, cols, strict=True)), *rows]:
            click.echo("  ".join(row[c].ljust(widths[c]) for c in cols).rstrip())
        return
    objects: list[dict[str, Any]] = slice_objects(resources, driver=DRIVER_NAME, node_name=node_name)
    if output == "json":
        json.dump(objects if len(objects) != 1 else objects[0], sys.stdout, indent=2)
        click.echo()
    else:
        click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)
