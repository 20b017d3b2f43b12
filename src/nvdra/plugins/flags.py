"""The flags both DRA kubelet plugins share, with upstream's names and environment twins.

Upstream's binaries bridge every flag to an environment variable named like the flag (upper case,
``-`` → ``_``), not by a prefix rule, so the Helm values of the Go driver map one to one. Each plugin's
``main`` adds its own flags on top of :func:`kubelet_plugin_options`.
"""

from __future__ import annotations

__all__ = [
    "FEATURE_GATES_FLAG",
    "KUBECONFIG_FLAG",
    "METRICS_FLAGS",
    "PATH_FLAGS",
    "SHUTDOWN_DEADLINE",
    "FlagRow",
    "JsonFormatter",
    "KlogFormatter",
    "check_feature_gates",
    "check_profile",
    "configure_logging",
    "fields",
    "flag_values",
    "kubelet_plugin_options",
    "logging_options",
    "one_line_errors",
    "option",
    "process_main",
    "stacked",
    "stop_on_signals",
    "table_options",
    "wait_for_signal",
    "wait_interruptibly",
]

import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from nvdra.core.errors import FeatureGateError, NvdraError
from nvdra.core.profiles import PROFILE_NAMES  # not nvdra.nvml: NVML's modules load after the sockets
from nvdra.kubeletplugin.logrepeat import install_repeat_filter
from nvdra.plugins.computedomain.flags import VERBOSITY

F = TypeVar("F", bound=Callable[..., Any])

PATH_FLAGS = frozenset(
    {
        "cdi_root",
        "nvidia_driver_root",
        "container_driver_root",
        "kubelet_registrar_directory_path",
        "kubelet_plugins_directory_path",
    }
)
"""Flags whose values are paths (converted to :class:`~pathlib.Path` for the plugin configs)."""


def option(*names: str, env: str | list[str], **kw: Any) -> Callable[[F], F]:
    """A click option whose environment twin is named like upstream's (not by a prefix rule)."""
    return click.option(*names, envvar=env, show_envvar=True, **kw)


def check_feature_gates(_: click.Context, param: click.Parameter, value: str) -> str:
    """A click callback: an unknown gate or a bad value is a usage error (exit 2), named by the flag."""
    from nvdra.core.featuregates import parse_feature_gates

    try:
        parse_feature_gates(value)
    except FeatureGateError as exc:
        raise click.BadParameter(str(exc), param=param) from exc
    return value


def check_profile(_: click.Context, param: click.Parameter, value: str) -> str:
    """A click callback: ``--simulate`` names a built-in profile or an existing file (else exit 2)."""
    if value and value not in PROFILE_NAMES and not Path(value).is_file():
        raise click.BadParameter(
            f"{value}: not a built-in profile ({', '.join(PROFILE_NAMES)}) nor a YAML file", param=param
        )
    return value


FlagRow = (
    tuple[str | tuple[str, ...], str | list[str], Any, str]
    | tuple[str | tuple[str, ...], str | list[str], Any, str, click.ParamType[Any]]
)
"""A row of a flag table (:func:`table_options`): name(s), environment variable(s), default, help, and a
click type where the default's own type is not the flag's (a duration). ``None`` as the default marks a
required flag; any other default but ``""`` is shown in --help."""

KUBECONFIG_FLAG: FlagRow = (
    "--kubeconfig",
    "KUBECONFIG",
    "",
    "Kubeconfig path; in-cluster config when empty.",
)
"""``--kubeconfig``, as every component that talks to the API server takes it."""
FEATURE_GATES_FLAG: FlagRow = ("--feature-gates", "FEATURE_GATES", "", "Comma list of Gate=true|false.")
"""``--feature-gates``: the plugins', the controller's and the daemon's (one gate map from the chart)."""
METRICS_FLAGS: tuple[FlagRow, ...] = (
    ("--http-endpoint", "HTTP_ENDPOINT", "", "Metrics listen address (off when empty)."),
    ("--metrics-path", "METRICS_PATH", "/metrics", "HTTP path of the metrics."),
)
"""``--http-endpoint`` and ``--metrics-path``: where the plugins and the controller serve metrics."""

# The flags every nvdra kubelet plugin takes, one row per upstream flag in upstream's order; the
# namespace's help is each plugin's own.
_PLUGIN_FLAGS: tuple[FlagRow, ...] = (
    (("--node-name",), "NODE_NAME", None, "Name of the node this plugin runs on."),
    (("--namespace",), "NAMESPACE", "default", ""),
    (("--cdi-root",), "CDI_ROOT", "/etc/cdi", "Where CDI specs go."),
    (
        ("--nvidia-driver-root", "--host_driver-root", "--host-driver-root", "nvidia_driver_root"),
        ["NVIDIA_DRIVER_ROOT", "HOST_DRIVER_ROOT"],
        "/",
        "Host path of the NVIDIA driver installation.",
    ),
    (
        ("--container-driver-root",),
        "DRIVER_ROOT_CTR_PATH",
        "/driver-root",
        "Where the driver root is mounted inside this container.",
    ),
    (("--nvidia-cdi-hook-path",), "NVIDIA_CDI_HOOK_PATH", "", "Host path of nvidia-cdi-hook."),
    (
        ("--kubelet-registrar-directory-path",),
        "KUBELET_REGISTRAR_DIRECTORY_PATH",
        "/var/lib/kubelet/plugins_registry",
        "The kubelet's plugin registration directory (the registration socket goes here).",
    ),
    (
        ("--kubelet-plugins-directory-path",),
        "KUBELET_PLUGINS_DIRECTORY_PATH",
        "/var/lib/kubelet/plugins",
        "The kubelet's plugins directory (the DRA socket and the checkpoint go under it).",
    ),
    (("--healthcheck-port",), "HEALTHCHECK_PORT", -1, "gRPC liveness port: >0 fixed, 0 random, <0 off."),
    *METRICS_FLAGS,
    KUBECONFIG_FLAG,
    (
        ("--kube-api-qps",),
        "KUBE_API_QPS",
        5.0,
        "QPS for background API traffic (claim reads on the prepare path are not throttled).",
    ),
    (("--kube-api-burst",), "KUBE_API_BURST", 10, "Burst for background API traffic."),
    FEATURE_GATES_FLAG,
    (
        ("--simulate",),
        "NVDRA_SIMULATE",
        "",
        "Run on a simulated node: a built-in profile name (e.g. dgx-h100) or a YAML path.",
    ),
    (("--pod-uid",), "POD_UID", "", "Per-instance socket names for rolling updates (kubelet >= 1.33)."),
)
_FLAG_CHECKS: dict[str, Callable[[click.Context, click.Parameter, str], str]] = {
    "--feature-gates": check_feature_gates,
    "--simulate": check_profile,
}


def kubelet_plugin_options(*, namespace_help: str) -> Callable[[F], F]:
    """Decorate a click command with the flags every nvdra kubelet plugin takes (:data:`_PLUGIN_FLAGS`)."""
    flags = table_options(_PLUGIN_FLAGS, empty_help=namespace_help, checks=_FLAG_CHECKS)
    return stacked([flags, logging_options()])


def table_options(
    rows: Iterable[FlagRow],
    *,
    empty_help: str = "",
    checks: Mapping[str, Callable[[click.Context, click.Parameter, str], str]] | None = None,
) -> Callable[[F], F]:
    """Decorate a click command with one :func:`option` per row of a flag table, in the table's order.

    A row without help text gets ``empty_help``; a row whose first name is in ``checks`` gets that
    callback.
    """
    decorators: list[Callable[[F], F]] = []
    for names, env, default, help_text, *click_type in rows:
        kw: dict[str, Any] = {"help": help_text or empty_help}
        if default is None:
            kw["required"] = True
        else:
            kw.update(default=default, show_default=default != "")
        if click_type:
            kw["type"] = click_type[0]
        all_names = (names,) if isinstance(names, str) else names
        if checks and all_names[0] in checks:
            kw["callback"] = checks[all_names[0]]
        decorators.append(option(*all_names, env=env, **kw))
    return stacked(decorators)


def stacked(decorators: Sequence[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator doing what ``decorators`` stacked in this order (the first one outermost) do."""

    def apply(func: F) -> F:
        for decorate in reversed(decorators):
            func = decorate(func)
        return func

    return apply


LOG_FORMATS = ("text", "json")
_FORMAT_KEY = "nvdra.logging_format"


def _remember_format(ctx: click.Context, _: click.Parameter, value: str) -> str:
    ctx.find_root().meta[_FORMAT_KEY] = value
    return value


def logging_options(*, version: bool = True, group: bool = False) -> Callable[[F], F]:
    """klog's ``-v``/``--v LEVEL``, ``--logging-format text|json`` and (``version``) ``--version``.

    ``-v`` is given to the command as ``verbosity``; the format is remembered in the click context,
    where :func:`configure_logging` finds it. On a ``group`` ``-v`` needs its level, as klog's does
    (``-v 4``, ``-v=4``, ``-vv``), so that ``-v COMMAND`` is not read as a level; a plain command
    also takes a bare ``-v`` (level 1).
    """
    optional: dict[str, Any] = {} if group else {"is_flag": False, "flag_value": "1"}
    decorators: list[Callable[[F], F]] = [
        click.option(
            "-v",
            "--v",
            "verbosity",
            type=VERBOSITY,
            default="0",
            show_default=True,
            metavar="LEVEL",
            help="Log verbosity as klog takes it (-v=4, --v 4, -vv for 2"
            + ("" if group else ", a bare -v for 1")
            + "); 2 and more add debug detail.",
            **optional,
        ),
        click.option(
            "--logging-format",
            type=click.Choice(LOG_FORMATS),
            default="text",
            show_default=True,
            envvar="LOGGING_FORMAT",
            show_envvar=True,
            expose_value=False,
            callback=_remember_format,
            help="text: klog's line header and key=value fields; json: one object per line (ts, caller, "
            "msg, v, and the fields), as Kubernetes components write it.",
        ),
    ]
    if version:
        decorators.append(click.version_option(package_name="nvdra", message="%(prog)s %(version)s"))
    return stacked(decorators)


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call with structured fields: ``log.info("msg", extra=fields(node=n))``."""
    return {"fields": values}


def _field_text(value: Any) -> str:
    text = str(value)
    return text if text and not any(c in text for c in ' "=\n') else json.dumps(text)


class KlogFormatter(logging.Formatter):
    """``I1203 07:30:00.123456   12345 serve.py:101] message key=value``: klog's text header."""

    def format(self, record: logging.LogRecord) -> str:
        """One klog line; the exception, if any, on the lines after it."""
        level = {"WARNING": "W", "ERROR": "E", "CRITICAL": "F"}.get(record.levelname, "I")
        ts = time.strftime("%m%d %H:%M:%S", time.localtime(record.created))
        micros = int((record.created % 1) * 1_000_000)
        thread = (record.thread or 0) % 10**7
        line = f"{level}{ts}.{micros:06d} {thread:7d} {record.filename}:{record.lineno}] "
        line += record.getMessage()
        for key, value in (getattr(record, "fields", None) or {}).items():
            line += f" {key}={_field_text(value)}"
        line += f" logger={_field_text(record.name)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, the fields of Kubernetes' JSON log format (``ts``, ``caller``,
    ``msg``, ``v``; ``err`` for errors) plus the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line."""
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "caller": f"{record.filename}:{record.lineno}",
            "msg": record.getMessage(),
            "v": 0 if record.levelno >= logging.INFO else 2,
            "logger": record.name,
        }
        if record.levelno >= logging.WARNING:
            entry["level"] = "error" if record.levelno >= logging.ERROR else "warning"
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["err"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(verbosity: int, fmt: str | None = None, *, tool: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG from ``-v=2``; klog text or JSON (``--logging-format``,
    which ``fmt`` defaults to); an identical line once a minute with a count.

    ``tool``: an interactive command, whose own output is the point: WARNING by default, INFO at ``-v``.
    """
    if fmt is None:
        ctx = click.get_current_context(silent=True)
        fmt = str(ctx.find_root().meta.get(_FORMAT_KEY, "text")) if ctx is not None else "text"
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else KlogFormatter())
    level = logging.DEBUG if verbosity >= 2 else logging.INFO
    if tool and verbosity == 0:
        level = logging.WARNING
    logging.basicConfig(level=level, handlers=[handler], force=True)
    install_repeat_filter()


def flag_values(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed flags as config keyword arguments (path flags as Paths)."""
    return {k: Path(v) if k in PATH_FLAGS else v for k, v in flags.items()}


SHUTDOWN_DEADLINE = 20.0
"""Seconds a plugin may take to stop after SIGTERM before it dumps its threads and exits anyway."""


@contextmanager
def one_line_errors(program: str) -> Iterator[None]:
    """End the process on an :class:`~nvdra.core.errors.NvdraError` from the block: its one line on
    stderr as ``<program>: <message>``, exit status 1 (a traceback would bury the line)."""
    try:
        yield
    except NvdraError as exc:
        click.echo(f"{program}: {exc}", err=True)
        sys.exit(1)


@contextmanager
def process_main(program: str, verbosity: int) -> Iterator[None]:
    """A process's ``main`` once its flags are parsed: log as ``-v`` and ``--logging-format`` say
    (:func:`configure_logging`), then run the block, whose library errors end the process in one line
    (:func:`one_line_errors`)."""
    configure_logging(verbosity)
    with one_line_errors(program):
        yield


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set. Call it before serving: a signal that arrives while the
    plugin is still starting must stop it cleanly too, not kill it with the default action."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_interruptibly(event: threading.Event) -> None:
    """Wait for ``event`` in short slices, so the main thread runs the Python signal handlers.

    A process signal may be delivered to any thread (grpc's C++ threads included). CPython then only
    flags it, and runs the handler when the main thread next executes bytecode — which an ``Event.wait()``
    without a timeout, parked in the kernel, may never do again: the plugin would ignore SIGTERM.
    """
    while not event.wait(0.2):
        continue


def wait_for_signal(stop: threading.Event, name: str) -> None:
    """Block until ``stop`` (see :func:`stop_on_signals`) is set; then arm a deadline for the stop.

    The stop that follows (servers, publisher, threads) is expected to take well under a second. If it
    ever hangs, the deadline writes every thread's stack to stderr — so the log says where — and exits
    with status 1: a node agent must not linger after SIGTERM, and its state is crash-safe anyway.
    """
    wait_interruptibly(stop)
    logging.getLogger(name).info("signal received; stopping")

    def overdue() -> None:
        logging.getLogger(name).error("stopping took over %.0f s; thread stacks follow", SHUTDOWN_DEADLINE)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(1)

    timer = threading.Timer(SHUTDOWN_DEADLINE, overdue)
    timer.daemon = True
    timer.start()
