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
from nvdra.plugins.gpu.config import DRIVER_NAME
from nvdra.tool.devices import device_rows, driver_resources, simulated_inventory, slice_objects

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="nvdra")
def main() -> None:
    """nvdra: the NVIDIA GPU DRA driver, as a library and tools."""


@main.group(invoke_without_command=True)
@click.option(
    "--simulate",
    "profile",
    default="dgx-h100",
    show_default=True,
    help=f"Simulated node: {', '.join(PROFILE_NAMES)}, or a YAML path.",
)
@click.pass_context
def demo(ctx: click.Context, profile: str) -> None:
    """Run the GPU plugin end to end on a simulated node (no cluster, no GPU needed).

    `nvdra demo computedomain` runs the ComputeDomain side on a simulated GB200 NVL72 rack instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from nvdra.tool.demo import run_demo

    try:
        run_demo(click.echo, profile=profile)
    except NvdraError as exc:
        raise click.ClickException(str(exc)) from exc


@demo.command("computedomain")
def demo_computedomain() -> None:
    """ComputeDomains on a simulated NVL72 rack: controller, daemons, IMEX, channel claims."""
    from nvdra.plugins.computedomain.demo import run_demo

    try:
        run_demo(click.echo)
    except NvdraError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--simulate",
    "profile",
    default=None,
    help=f"Simulated node: {', '.join(PROFILE_NAMES)}, or a YAML path.",
)
@click.option("--feature-gates", default="", envvar="FEATURE_GATES", help="Comma list of Gate=true|false.")
@click.option("--node-name", default="node", show_default=True, help="Node (and pool) name to render.")
@click.option(
    "--kubeconfig", default=None, help="Read a live cluster's ResourceSlices instead of --simulate."
)
@click.option("--node", default=None, help="With --kubeconfig: only this node's slices.")
@click.option(
    "-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table", show_default=True
)
@click.option(
    "--fabric-partitions",
    is_flag=True,
    default=False,
    help="With --simulate and FabricTopologySupport: also NVLink partitions as devices, as the plugin's "
    "--publish-fabric-partitions publishes them.",
)
def devices(  # noqa: PLR0917 - click passes every option as an argument
    profile: str | None,
    feature_gates: str,
    node_name: str,
    kubeconfig: str | None,
    node: str | None,
    output: str,
    fabric_partitions: bool,
) -> None:
    """Print what a node would publish (-o yaml: resource.k8s.io/v1 ResourceSlices as a YAML stream)."""
    if kubeconfig is not None or profile is None:
        from nvdra.tool.explain import live_devices

        try:
            live_devices(kubeconfig, node, output, click.echo)
        except NvdraError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    try:
        gates = parse_feature_gates(feature_gates)
        resources = driver_resources(
            simulated_inventory(profile), node_name, gates, fabric_partitions=fabric_partitions
        )
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


@main.command()
@click.argument("claim_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--simulate",
    "profile",
    default=None,
    help="Simulated node profile (default dgx-h100 without --kubeconfig).",
)
@click.option("--kubeconfig", default=None, help="Read the node's ResourceSlices from this cluster.")
@click.option("--node", default=None, help="Node to allocate on (required with --kubeconfig).")
@click.option(
    "--class",
    "--classes",
    "class_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file(s) with more DeviceClasses (repeatable).",
)
@click.option(
    "--feature-gates", default="", envvar="FEATURE_GATES", help="Gates for the simulated node's slices."
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "wide", "yaml", "json"]), default="table", show_default=True
)
def explain(  # noqa: PLR0917 - click passes every option as an argument
    claim_files: tuple[str, ...],
    profile: str | None,
    kubeconfig: str | None,
    node: str | None,
    class_files: tuple[str, ...],
    feature_gates: str,
    output: str,
) -> None:
    """Allocate CLAIM_FILES as the scheduler would and say why (not); exit 1 when there is no allocation."""
    from nvdra.tool.explain import run_explain

    try:
        ok = run_explain(
            claim_files,
            profile=profile,
            kubeconfig=kubeconfig,
            node=node,
            class_files=class_files,
            gates=parse_feature_gates(feature_gates),
            output=output,
            echo=click.echo,
        )
    except NvdraError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--feature-gates", default="", envvar="FEATURE_GATES", help="Gates the opaque configs are checked with."
)
def validate(files: tuple[str, ...], feature_gates: str) -> None:
    """Check ResourceClaims, ResourceClaimTemplates and DeviceClasses offline; exit 1 on any problem."""
    from nvdra.tool.explain import load_documents
    from nvdra.tool.validate import validate_documents

    try:
        reports = validate_documents(load_documents(files), parse_feature_gates(feature_gates))
    except NvdraError as exc:
        raise click.ClickException(str(exc)) from exc
    for label, problems in reports:
        click.echo(f"{label}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            click.echo("  " + p.replace("\n", "\n    "))
    sys.exit(1 if any(p for _, p in reports) else 0)


@main.command()
@click.option(
    "--simulate",
    "profile",
    required=True,
    help=f"Simulated node: {', '.join(PROFILE_NAMES)}, or a YAML path (FM mode: NVDRA_SIMULATE_FABRIC_MODE).",
)
def partitions(profile: str) -> None:
    """Print every NVLink partition of a node: id, size, GPUs, bandwidth, free or active."""
    import os

    from nvdra.plugins.gpu.fabric import partition_rows, simulated_node_fabric

    try:
        rows = partition_rows(simulated_node_fabric(profile, os.environ))
    except (NvdraError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    for row in [dict(zip(cols, cols, strict=True)), *rows]:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in cols).rstrip())
