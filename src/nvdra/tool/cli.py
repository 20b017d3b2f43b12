"""``nvdra``: the operator's tool — ``demo`` and ``devices`` (more subcommands follow)."""

from __future__ import annotations

__all__ = ["main"]

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nvdra.core.errors import FeatureGateError, NvdraError
from nvdra.core.featuregates import FeatureGates, parse_feature_gates
from nvdra.nvml import PROFILE_NAMES
from nvdra.plugins.flags import check_profile, configure_logging, logging_options
from nvdra.plugins.gpu.config import DRIVER_NAME
from nvdra.tool.devices import node_publication, slice_device_rows, slice_objects
from nvdra.tool.output import output_options, print_objects
from nvdra.tool.schemas import DEFAULT_KUBERNETES_VERSION

if TYPE_CHECKING:
    from nvdra.kubeletplugin.objects import ObjectApi

_F = TypeVar("_F", bound=Callable[..., Any])


class _Tool(click.Group):
    """The ``nvdra`` group: any subcommand a library error ends prints its one line (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; an :class:`NvdraError` becomes a :class:`click.ClickException`, and a
        subcommand that returns ``False`` (a problem found) exits with status 1."""
        try:
            verdict = super().invoke(ctx)
        except NvdraError as exc:
            raise click.ClickException(str(exc)) from exc
        if verdict is False:
            ctx.exit(1)
        return verdict


@click.group(cls=_Tool, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@logging_options(group=True)
def main(verbosity: int) -> None:
    """nvdra: the NVIDIA GPU DRA driver, as a library and tools.

    Exit status: 0 success, 1 a problem found (invalid input, no allocation), 2 a usage error.
    """
    configure_logging(verbosity, tool=True)


def _simulate_option(help: str = "", **kwargs: Any) -> Callable[[_F], _F]:
    """``--simulate PROFILE`` (into ``profile``): a built-in profile or a YAML file, else a usage error;
    ``help`` defaults to naming the built-in profiles."""
    help = help or f"Simulated node: {', '.join(PROFILE_NAMES)}, or a YAML path."
    return click.option("--simulate", "profile", help=help, callback=check_profile, **kwargs)


def _gates_option(help: str, default: str | None = "") -> Callable[[_F], _F]:
    """``--feature-gates`` with its environment twin ``FEATURE_GATES``."""
    return click.option(
        "--feature-gates", default=default, envvar="FEATURE_GATES", show_envvar=True, help=help
    )


def _parse_gates(text: str) -> FeatureGates:
    """The gates of ``--feature-gates``; a bad one is a usage error (exit 2)."""
    try:
        return parse_feature_gates(text)
    except FeatureGateError as exc:
        raise click.BadParameter(str(exc), param_hint="--feature-gates") from exc


@main.group(invoke_without_command=True)
@_simulate_option(default="dgx-h100", show_default=True)
@click.pass_context
def demo(ctx: click.Context, profile: str) -> None:
    """Run the GPU plugin end to end on a simulated node (no cluster, no GPU needed).

    `nvdra demo computedomain` runs the ComputeDomain side on a simulated GB200 NVL72 rack instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from nvdra.tool.demo import run_demo

    run_demo(click.echo, profile=profile)


@demo.command("computedomain")
def demo_computedomain() -> None:
    """ComputeDomains on a simulated NVL72 rack: controller, daemons, IMEX, channel claims."""
    from nvdra.plugins.computedomain.demo import run_demo

    run_demo(click.echo)


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item}: expected KEY=VALUE", param_hint="--node-label")
        labels[key] = value
    return labels


@main.command()
@_simulate_option(default=None)
@_gates_option(
    "The plugin's gates, Gate=true|false,... (FABRIC_TOPOLOGY_SUPPORT in the environment counts too)."
)
@click.option("--node-name", default="node", show_default=True, help="Node (and pool) name to render.")
@click.option(
    "--node-label",
    "node_labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="A label of the simulated Node, as the plugin reads it (resource.nvidia.com/fabric-topology-"
    "support=true|false overrides the gate on this node). Repeatable.",
)
@click.option(
    "--simulate-state",
    default="",
    envvar="NVDRA_SIMULATE_STATE",
    show_envvar=True,
    help="With --simulate: the --simulate-state directory of a running simulated plugin, whose "
    "hardware state (MIG devices, Fabric Manager partitions) is shown.",
)
@click.option(
    "--kubeconfig", default=None, help="Read a live cluster's ResourceSlices instead of --simulate."
)
@click.option("--node", default=None, help="With --kubeconfig: only this node's slices.")
@output_options()
@click.option(
    "--fabric-partitions",
    is_flag=True,
    default=False,
    envvar="NVDRA_PUBLISH_FABRIC_PARTITIONS",
    help="With --simulate and FabricTopologySupport: also NVLink partitions as devices, as the plugin's "
    "--publish-fabric-partitions publishes them.",
)
def devices(  # noqa: PLR0917 - click passes every option as an argument
    profile: str | None,
    feature_gates: str,
    node_name: str,
    node_labels: tuple[str, ...],
    simulate_state: str,
    kubeconfig: str | None,
    node: str | None,
    output: str,
    no_headers: bool,
    fabric_partitions: bool,
) -> None:
    """Print what a node publishes: the plugin's own ResourceSlices (-o yaml: a kind: List of them).

    With --simulate the slices are computed by the code the plugin publishes with (gates from flags
    and environment, node labels, VFIO devices); with --kubeconfig they are read from the cluster.
    """
    if kubeconfig is not None and profile is not None:
        raise click.UsageError("give either --simulate or --kubeconfig, not both")
    if kubeconfig is not None or profile is None:
        from nvdra.tool.explain import cluster_slices

        if kubeconfig is None:
            raise click.UsageError("give --simulate PROFILE or --kubeconfig PATH")
        objects = cluster_slices(kubeconfig, node)
    else:
        labels = _labels(node_labels)
        try:
            published = node_publication(
                profile,
                node_name=node_name,
                feature_gates=feature_gates,
                fabric_partitions=fabric_partitions,
                node_labels=labels,
                simulate_state=simulate_state,
            )
        except FeatureGateError as exc:
            raise click.BadParameter(str(exc), param_hint="--feature-gates") from exc
        objects = slice_objects(published.resources, driver=DRIVER_NAME, node_name=node_name)
    print_objects(
        objects,
        output=output,
        echo=click.echo,
        rows=lambda wide: slice_device_rows(objects, wide),
        no_headers=no_headers,
        empty="no devices published",
    )


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE|DIR|-...")
@_simulate_option(
    f"Simulated node ({', '.join(PROFILE_NAMES)}, or a YAML path); default dgx-h100 without "
    "--kubeconfig. The GPU and ComputeDomain plugins' devices, as nvdra devices shows them.",
    default=None,
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
@_gates_option("The simulated node's plugin gates (Gate=true|false,...).")
@output_options(("table", "wide", "yaml", "json"))
def explain(inputs: tuple[str, ...], feature_gates: str, **options: Any) -> bool:
    """Allocate claims as the scheduler would, and say why (not); exit 1 when one gets no devices.

    FILE|DIR|- hold ResourceClaims, ResourceClaimTemplates, DeviceClasses, and Pods or workloads
    (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) that use claims: each pod's claims
    are allocated together (a template becomes the pod's own claim), pod after pod. -o wide lists the
    verdict on every candidate device; -o yaml/json print the claims with status.allocation.
    """
    from nvdra.tool.explain import run_explain

    # The options go to run_explain by their names (its signature types them).
    if options["kubeconfig"] is not None and options["profile"] is not None:
        raise click.UsageError("give either --simulate or --kubeconfig, not both")
    return run_explain(inputs, gates=_parse_gates(feature_gates), echo=click.echo, **options)


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE|DIR|-...")
@_gates_option(
    "The cluster's plugin gates (Gate=true|false,...): a config whose gate is off is an error. "
    "Without it, such a config is valid with a note naming the gate.",
    default=None,
)
@click.option(
    "--kubernetes-version",
    default=DEFAULT_KUBERNETES_VERSION,
    show_default=True,
    metavar="MAJOR.MINOR",
    help="The Kubernetes version whose API schemas objects are checked against.",
)
@click.option(
    "--fix",
    is_flag=True,
    default=False,
    help="Rewrite removed resource.k8s.io/v1alpha2 objects as their v1 equivalent, in place (stdin: "
    "the fixed stream on stdout).",
)
@click.option(
    "--crd",
    "crd_paths",
    multiple=True,
    metavar="FILE|DIR",
    help="CustomResourceDefinitions whose schemas check custom resources, over the ComputeDomain CRDs "
    "nvdra ships; CRDs among the inputs count too. Repeatable.",
)
@click.option("-q", "--quiet", is_flag=True, default=False, help="Print only problems and the summary.")
def validate(  # noqa: PLR0917 - click passes every option as an argument
    files: tuple[str, ...],
    feature_gates: str | None,
    kubernetes_version: str,
    fix: bool,
    crd_paths: tuple[str, ...],
    quiet: bool,
) -> bool:
    """Check manifests offline: DRA objects, opaque configs, Pods' claims, other kinds' schemas.

    FILE|DIR|- are files, directories (searched recursively for *.yaml, *.yml, *.json) or - for
    standard input. Exit status: 0 valid, 1 a problem was found, 2 a usage error.
    """
    from nvdra.tool.validate_cli import run_validate

    if not re.fullmatch(r"v?\d+\.\d+(\.\d+)?", kubernetes_version):
        raise click.BadParameter(
            f"{kubernetes_version}: expected MAJOR.MINOR, e.g. 1.35", param_hint="--kubernetes-version"
        )
    gates = _parse_gates(feature_gates) if feature_gates is not None else None
    return run_validate(
        files,
        gates=gates,
        kubernetes_version=kubernetes_version.removeprefix("v"),
        fix=fix,
        quiet=quiet,
        echo=click.echo,
        crd_paths=crd_paths,
    )


@main.command()
@_simulate_option(
    f"The node's simulated hardware: {', '.join(PROFILE_NAMES)}, or a YAML path.",
    default="dgx-h100",
    show_default=True,
)
@_gates_option("The GPU plugin's gates (Gate=true|false,...).")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="API server port (0: any free port).")
@click.option(
    "--dir",
    "workdir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the kubeconfig, CDI specs and plugin state go (default: a temporary directory, removed "
    "on exit).",
)
def playground(profile: str, feature_gates: str, port: int, workdir: Path | None) -> None:
    """A one-node cluster in this process, for the real kubectl, until Ctrl-C.

    The in-memory API server, the GPU plugin on a simulated node, a kubelet, and the scheduler's
    DRA rules: kubectl apply -f a spec, and its pods' claims are allocated and prepared as on a
    cluster; kubectl delete releases them.
    """
    import tempfile

    from nvdra.plugins.flags import stop_on_signals, wait_interruptibly
    from nvdra.tool.playground import playground as run_playground

    _parse_gates(feature_gates)
    stop = stop_on_signals()
    with (
        tempfile.TemporaryDirectory(prefix="nvdra-playground-") as tmp,
        run_playground(
            workdir or Path(tmp), profile=profile, feature_gates=feature_gates, port=port, out=click.echo
        ) as pg,
    ):
        click.echo(f"kubeconfig: {pg.kubeconfig}\n")
        click.echo(f"  export KUBECONFIG={pg.kubeconfig}")
        click.echo("  kubectl apply -f demo/specs/quickstart/gpu-test1.yaml")
        click.echo("  kubectl get resourceslices,resourceclaims,pods -A -o wide")
        click.echo("  kubectl delete -f demo/specs/quickstart/gpu-test1.yaml\n")
        click.echo("Ctrl-C stops it.")
        wait_interruptibly(stop)


@main.command()
@_simulate_option(
    f"Simulated node: {', '.join(PROFILE_NAMES)}, or a YAML path (FM mode: NVDRA_SIMULATE_FABRIC_MODE).",
    required=True,
)
@output_options(("table", "json", "yaml", "name"))
def partitions(profile: str, output: str, no_headers: bool) -> None:
    """Print every NVLink partition of a node: id, size, GPUs, bandwidth, free or active.

    -o json/yaml print a kind: List whose items are the rows; -o name the partition ids.
    """
    import os

    from nvdra.plugins.gpu.fabric import partition_rows, simulated_node_fabric

    try:
        rows = partition_rows(simulated_node_fabric(profile, os.environ))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    print_objects(
        rows,
        output=output,
        echo=click.echo,
        rows=lambda _wide: rows,
        no_headers=no_headers,
        empty="no NVLink partitions",
        name=lambda row: next(iter(row.values()), ""),
    )


def _taint_target(kubeconfig: str | None, node: str, device: str, uuid: str) -> tuple[ObjectApi, str]:
    """The cluster's object API and the device name (``--uuid`` looked up in the node's slices)."""
    from nvdra.kubeletplugin import KubernetesKubeApi
    from nvdra.tool.taint import resolve_device

    if device and uuid:
        raise click.UsageError("give --device or --uuid, not both")
    api = KubernetesKubeApi.from_kubeconfig(kubeconfig)
    slices = api.list_resource_slices(driver=DRIVER_NAME, node_name=node) if (device or uuid) else []
    return api, resolve_device(slices, node, device=device, uuid=uuid)


@main.command()
@click.argument("node")
@click.option(
    "--device", default="", help="One device of the node (gpu-3, gpu-0-mig-…); default: all its GPUs."
)
@click.option("--uuid", default="", help="The GPU (or MIG device) with this UUID on the node.")
@click.option("--key", required=True, help="Taint key, a label name, e.g. example.com/maintenance.")
@click.option("--value", default="", help="Taint value (optional).")
@click.option(
    "--effect",
    type=click.Choice(["NoSchedule", "NoExecute"]),
    default="NoSchedule",
    show_default=True,
    help="NoSchedule: no new claims get the device; NoExecute: pods using it are evicted too.",
)
@click.option("--kubeconfig", default=None, help="Kubeconfig of the cluster (default: the usual lookup).")
def taint(  # noqa: PLR0917 - click passes every option as an argument
    node: str, device: str, uuid: str, key: str, value: str, effect: str, kubeconfig: str | None
) -> None:
    """Take a node's GPUs (or one device) out of service with a DeviceTaintRule (KEP-5055).

    The scheduler then allocates the device only to claims tolerating the taint; the GPU plugin's own
    health taints are separate and unaffected. `nvdra untaint` removes the rule.
    """
    from nvdra.tool.taint import taint as write_rule

    api, name = _taint_target(kubeconfig, node, device, uuid)
    rule = write_rule(api, node=node, key=key, effect=effect, value=value, device=name)
    click.echo(f"devicetaintrule/{rule['metadata']['name']} tainted {node}/{name or '*'} {key}:{effect}")


@main.command()
@click.argument("node")
@click.option("--device", default="", help="Only the rule of this device.")
@click.option("--uuid", default="", help="Only the rule of the device with this UUID.")
@click.option("--key", default="", help="Only rules of this taint key.")
@click.option("--kubeconfig", default=None, help="Kubeconfig of the cluster (default: the usual lookup).")
def untaint(node: str, device: str, uuid: str, key: str, kubeconfig: str | None) -> bool:
    """Delete the DeviceTaintRules `nvdra taint` wrote for a node (or one device, or one key)."""
    from nvdra.tool.taint import untaint as delete_rules

    api, name = _taint_target(kubeconfig, node, device, uuid)
    gone = delete_rules(api, node=node, device=name, key=key)
    for rule in gone:
        click.echo(f"devicetaintrule/{rule} deleted")
    if not gone:
        click.echo(f"no nvdra DeviceTaintRule selects {node}/{name or '*'}")
    return bool(gone)
