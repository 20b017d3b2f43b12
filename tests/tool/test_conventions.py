"""CLI conventions on every console script: --version, -h, help text on every option, klog's -v,
--logging-format text|json with structured fields, exit 2 for usage errors."""

from __future__ import annotations

import json
import logging
from importlib.metadata import entry_points

import click
import pytest
import yaml
from click.testing import CliRunner

from nvdra.plugins.flags import JsonFormatter, KlogFormatter, fields

SCRIPTS = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.value.startswith("nvdra.")}


def _commands(cmd: click.Command, path: str) -> list[tuple[str, click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            out += _commands(sub, f"{path} {name}")
    return out


def test_every_console_script_is_here() -> None:
    names = {"nvdra", "nvdra-gpu-plugin", "nvdra-cd-plugin", "nvdra-cd-controller", "nvdra-cd-daemon"}
    names |= {"nvdra-webhook", "nvdra-mps-daemon"}
    assert names <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version_and_short_help(name: str) -> None:
    cmd = SCRIPTS[name].load()
    version = CliRunner().invoke(cmd, ["--version"], prog_name=name)
    assert version.exit_code == 0, version.output
    assert version.output.strip() == f"{name} 0.1.0" or version.output.startswith(f"{name}, version")
    short = CliRunner().invoke(cmd, ["-h"], prog_name=name)
    assert short.exit_code == 0, short.output
    assert "--logging-format" in short.output and "-v, --v LEVEL" in short.output


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_command_and_option_has_help(name: str) -> None:
    for path, cmd in _commands(SCRIPTS[name].load(), name):
        assert (cmd.help or "").strip(), f"{path}: no help text"
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert (param.help or "").strip(), f"{path} {param.opts[0]}: no help text"


@pytest.mark.parametrize(
    ("args", "level"),
    [(["-v=4"], 4), (["--v=4"], 4), (["-v", "4"], 4), (["--v", "3"], 3), (["-vv"], 2), ([], 0), (["-v"], 1)],
)
def test_klog_verbosity_spellings(args: list[str], level: int) -> None:
    """The plugins take klog's -v in every spelling (parsed only: nothing is started)."""
    cmd = SCRIPTS["nvdra-gpu-plugin"].load()
    ctx = cmd.make_context("nvdra-gpu-plugin", [*args, "--node-name", "n"])
    assert ctx.params["verbosity"] == level


def test_group_verbosity_does_not_eat_the_command() -> None:
    cmd = SCRIPTS["nvdra"].load()
    result = CliRunner().invoke(cmd, ["-v", "2", "devices", "--simulate", "pcie-l4", "-o", "name"])
    assert result.exit_code == 0, result.output
    assert "resourceslice.resource.k8s.io/00000-gpu.nvidia.com-node-0" in result.output


def test_bad_values_are_usage_errors() -> None:
    cmd = SCRIPTS["nvdra"].load()
    for args in (["-v", "loud", "devices"], ["--logging-format", "xml", "devices"], ["devices", "-o", "csv"]):
        result = CliRunner().invoke(cmd, args)
        assert result.exit_code == 2, (args, result.output)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("nvdra.test", logging.WARNING, "/x/serve.py", 42, "prepared %s", ("c1",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_klog_text_format_has_the_header_and_key_value_fields() -> None:
    line = KlogFormatter().format(_record(**fields(node="n1", claim="ns/a b")))
    assert line.startswith("W")
    assert ' serve.py:42] prepared c1 node=n1 claim="ns/a b"' in line


def test_json_format_is_one_object_with_the_fields() -> None:
    entry = json.loads(JsonFormatter().format(_record(**fields(node="n1"))))
    assert entry["msg"] == "prepared c1" and entry["caller"] == "serve.py:42" and entry["node"] == "n1"
    assert entry["level"] == "warning" and isinstance(entry["ts"], float)


@pytest.mark.parametrize("script", ["nvdra-gpu-plugin", "nvdra-cd-plugin"])
@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--simulate", "dgx-h900"], "--simulate"), (["--feature-gates", "Nope=true"], "--feature-gates")],
)
def test_plugins_refuse_bad_values_as_usage_errors(script: str, args: list[str], flag: str) -> None:
    """An unknown profile or gate stops a plugin before it starts, with exit 2 and the flag named."""
    result = CliRunner().invoke(SCRIPTS[script].load(), ["--node-name", "n", *args], prog_name=script)
    assert result.exit_code == 2, result.output
    assert flag in result.output


@pytest.mark.parametrize("command", [["demo"], ["devices"], ["explain", "-"], ["playground"], ["partitions"]])
def test_every_tool_command_refuses_an_unknown_profile_as_the_plugins_do(command: list[str]) -> None:
    """``nvdra``'s --simulate gets the plugins' own check: exit 2, the flag and the profiles named."""
    result = CliRunner().invoke(
        SCRIPTS["nvdra"].load(), [*command, "--simulate", "dgx-h900"], prog_name="nvdra"
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--simulate': dgx-h900: not a built-in profile (" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["devices", "--kubeconfig", "/nonexistent/kubeconfig"],
        ["taint", "node-1", "--key", "example.com/maint", "--kubeconfig", "/nonexistent/kubeconfig"],
        ["untaint", "node-1", "--kubeconfig", "/nonexistent/kubeconfig"],
    ],
)
def test_a_library_error_in_any_subcommand_is_one_line_and_exit_1(args: list[str]) -> None:
    result = CliRunner().invoke(SCRIPTS["nvdra"].load(), args, prog_name="nvdra")
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "Error: --kubeconfig: No such file or directory '/nonexistent/kubeconfig'; "
        "allowed: a readable kubeconfig"
    ]


def test_partitions_prints_like_every_listing_command() -> None:
    """-o name: the partition ids; -o yaml: a kind: List whose items keep the table's column order."""
    nvdra = SCRIPTS["nvdra"].load()
    names = CliRunner().invoke(nvdra, ["partitions", "--simulate", "dgx-h100", "-o", "name"])
    listed = CliRunner().invoke(nvdra, ["partitions", "--simulate", "dgx-h100", "-o", "yaml"])
    assert names.exit_code == listed.exit_code == 0, names.output + listed.output
    items = yaml.safe_load(listed.output)["items"]
    assert names.output.split() == [item["ID"] for item in items] and len(items) > 1
    assert list(items[0]) == ["ID", "SIZE", "GPUS", "MODULES", "BANDWIDTH", "STATE"]
    assert listed.output.startswith("apiVersion: v1\nkind: List\n")
