"""``simulate:`` reaches the ComputeDomain side: the chart's controller gets it, and the daemons it starts.

The controller container is parsed with the real ``nvdra-cd-controller`` command; the DaemonSet that
controller would create is rendered with the parsed settings, its ``$(VAR)`` references expanded as the
kubelet does, and its command parsed with the real ``nvdra-cd-daemon`` command.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest

from nvdra.imex import Settings
from nvdra.imex.objects import daemon_set
from nvdra.plugins.computedomain.controller_main import main as controller_main
from nvdra.plugins.computedomain.daemon_main import main as daemon_main
from tests.deploy.helm import render
from tests.deploy.test_chart_render import containers

SIMULATED = {"resources": {"gpus": {"enabled": True}}, "simulate": "gb200-nvl72-tray", "logVerbosity": 3}


def parse(command: Any, ctr: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A container's env and args through the click command (fieldRefs get a sample value)."""
    for env in ctr.get("env", []):
        monkeypatch.setenv(env["name"], env.get("value", "from-field-ref"))
    return dict(command.make_context(ctr["command"][0], list(ctr.get("args", []))).params)


def expand(argv: list[str], env: list[dict[str, Any]]) -> list[str]:
    """Kubernetes' ``$(VAR)`` expansion of a container command (unknown references stay as written)."""
    values = {e["name"]: e["value"] for e in env if "value" in e}
    return [re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), a) for a in argv]


def controller_settings(monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]) -> dict[str, Any]:
    """The parsed flags of the chart's controller container for ``values``."""
    ctr = containers(render(values), "Deployment", "-controller")["compute-domain"]
    return parse(controller_main, ctr, monkeypatch)


def test_simulate_reaches_the_controller_and_its_daemons(monkeypatch: pytest.MonkeyPatch) -> None:
    """simulate: sets the controller's --simulate; its DaemonSet passes NVDRA_SIMULATE and parses."""
    params = controller_settings(monkeypatch, SIMULATED)
    assert params["simulate"] == "gb200-nvl72-tray"
    assert params["leader_election_lease_duration"] == 15.0
    settings = Settings(
        namespace="nvdra",
        image=params["image_name"],
        log_verbosity=params["log_verbosity_cd_daemon"],
        simulate=params["simulate"],
    )
    cd = {"metadata": {"name": "job", "namespace": "default", "uid": "0b0e6d8e-4a4b-4b38-9a57-000000000001"}}
    body = daemon_set(
        cd,
        namespace=settings.namespace,
        image=settings.image,
        max_nodes=settings.max_nodes,
        feature_gates=settings.feature_gates,
        log_verbosity=settings.log_verbosity,
        simulate=settings.simulate,
    )
    (ctr,) = body["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["NVDRA_SIMULATE"] == "gb200-nvl72-tray"
    argv = expand(ctr["command"], ctr["env"])
    ctx = daemon_main.make_context(argv[0], argv[1:])
    assert ctx.params["verbosity"] == 3
    with warnings.catch_warnings():  # click 8.2+ deprecates protected_args; 9.0 will put it in args
        warnings.simplefilter("ignore", DeprecationWarning)
        assert [*ctx.protected_args, *ctx.args] == ["run"]


def test_without_simulate_the_daemons_get_no_simulate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset simulate: leaves NVDRA_SIMULATE empty and the daemon env without it."""
    params = controller_settings(monkeypatch, {})
    assert params["simulate"] == ""
    cd = {"metadata": {"name": "job", "namespace": "default", "uid": "0b0e6d8e-4a4b-4b38-9a57-000000000002"}}
    body = daemon_set(cd, namespace="nvdra", image="i", max_nodes=18, feature_gates="")
    names = {e["name"] for e in body["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "NVDRA_SIMULATE" not in names


@pytest.mark.parametrize("duration", ["15", "15s", 30, "1m"])
def test_lease_duration_values_parse(monkeypatch: pytest.MonkeyPatch, duration: Any) -> None:
    """The chart's lease duration reaches the controller as the seconds it means."""
    values = {"controller": {"leaderElection": {"enabled": True, "leaseDuration": duration}}}
    if duration == "1m":  # the chart's validation accepts seconds only (15 or 15s)
        with pytest.raises(Exception, match="is not a duration"):
            render(values)
        return
    params = controller_settings(monkeypatch, values)
    assert params["leader_election_lease_duration"] == float(str(duration).removesuffix("s"))
