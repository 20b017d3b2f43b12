"""``nvdra validate`` on real material: the project's specs pass; each class of bad input gets its own
specific line (file, line, full field path, the value, what is allowed) and exit status 1; usage
errors exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from nvdra.tool.cli import main
from tests.manifests import deployment, gpu_claim_template
from tests.readme_examples import README_V1ALPHA2_CLAIM

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "demo" / "specs"


def run(*args: str, stdin: str | bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["validate", *args], input=stdin, catch_exceptions=False)


def claim(**exactly: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}},
        },
        sort_keys=False,
    )


def test_the_projects_specs_are_valid() -> None:
    result = run(str(SPECS))
    assert result.exit_code == 0, result.output
    assert " 0 invalid" in result.output
    assert "gpu-test1.yaml" in result.output and "Pod gpu-test1/pod1: valid" in result.output


def test_empty_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing here\n")
    result = run(str(tmp_path / "empty.yaml"))
    assert result.exit_code == 1
    assert f"{tmp_path / 'empty.yaml'}: no objects: the input is empty" in result.output


def test_non_utf8_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caf\xe9\n")
    result = run(str(path))
    assert result.exit_code == 1
    assert f"{path}:4: not UTF-8 text: byte 0xe9 at offset 52" in result.output
    assert "Traceback" not in result.output


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n")
    result = run(str(path))
    assert result.exit_code == 1
    assert f"{path}:5: YAML syntax error" in result.output


def test_misspelled_field_is_named_unknown_with_its_full_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(claim(deviceClassName="gpu.nvidia.com", cuont=2))
    result = run(str(path))
    assert result.exit_code == 1
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "cuont" in text)
    assert (
        f'{path}:{line}: error: spec.devices.requests[0].exactly.cuont: unknown field "cuont"'
    ) in result.output
    assert "did you mean count?" in result.output
    assert "required" not in result.output


def test_wrong_type_names_the_value_and_what_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(claim(deviceClassName="gpu.nvidia.com", count="two"))
    result = run(str(path))
    assert result.exit_code == 1
    assert 'spec.devices.requests[0].exactly.count: got "two", must be integer' in result.output


def test_bad_cel_selector_points_at_the_expression(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        claim(deviceClassName="gpu.nvidia.com", selectors=[{"cel": {"expression": "device.atributes['x']"}}])
    )
    result = run(str(path))
    assert result.exit_code == 1
    assert "spec.devices.requests[0].exactly.selectors[0].cel.expression" in result.output
    assert "undefined field 'atributes'" in result.output


def test_capacity_request_is_valid_kubernetes(tmp_path: Path) -> None:
    """Upstream's memory-sharing shape: valid here (explain says why no device fits)."""
    path = tmp_path / "c.yaml"
    path.write_text(claim(deviceClassName="gpu.nvidia.com", capacity={"requests": {"memory": "10Gi"}}))
    result = run(str(path))
    assert result.exit_code == 0, result.output


def test_removed_v1alpha2_shape_shows_the_v1_equivalent_and_fix_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text("# the README's example\n---\n" + README_V1ALPHA2_CLAIM)
    result = run(str(path))
    assert result.exit_code == 1
    assert "resource.k8s.io/v1alpha2 was removed in Kubernetes 1.31" in result.output
    assert "deviceClassName: gpu.nvidia.com" in result.output
    fixed = run(str(path), "--fix")
    assert fixed.exit_code == 1  # the run that fixes still reports what it found
    text = path.read_text()
    assert text.startswith("# the README's example\n---\n")
    (obj,) = [d for d in yaml.safe_load_all(text) if d]
    assert obj["apiVersion"] == "resource.k8s.io/v1"
    request = obj["spec"]["devices"]["requests"][0]
    assert request["exactly"]["deviceClassName"] == "gpu.nvidia.com"
    assert request["exactly"]["count"] == 4
    assert obj["spec"]["devices"]["config"][0]["opaque"]["parameters"]["kind"] == "GpuConfig"
    again = run(str(path))
    assert again.exit_code == 0, again.output


def test_gated_config_is_a_note_without_gates_and_an_error_with_them(tmp_path: Path) -> None:
    spec = SPECS / "quickstart" / "gpu-test-mps.yaml"
    plain = run(str(spec))
    assert plain.exit_code == 0
    assert "valid when the plugin runs with feature gate MPSSupport=true" in plain.output
    off = run(str(spec), "--feature-gates", "TimeSlicingSettings=true")
    assert off.exit_code == 1
    assert "MPSSupport" in off.output
    on = run(str(spec), "--feature-gates", "MPSSupport=true")
    assert on.exit_code == 0, on.output


def test_pod_claim_references_must_resolve(tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "containers": [{"name": "c", "image": "x", "resources": {"claims": [{"name": "gpus"}]}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "c"}],
        },
    }
    path = tmp_path / "pod.yaml"
    path.write_text(claim(deviceClassName="gpu.nvidia.com") + "---\n" + yaml.safe_dump(pod))
    result = run(str(path))
    assert result.exit_code == 1
    assert (
        'spec.containers[0].resources.claims[0].name: "gpus" names no entry of spec.resourceClaims '
        "(entries: gpu)"
    ) in result.output


def test_deployment_request_must_name_a_request_of_the_template(tmp_path: Path) -> None:
    template = gpu_claim_template("t", "ns")
    pod_spec = {
        "containers": [
            {"name": "c", "image": "x", "resources": {"claims": [{"name": "g", "request": "gpus"}]}}
        ],
        "resourceClaims": [{"name": "g", "resourceClaimTemplateName": "t"}],
    }
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump_all([template, deployment("d", "ns", pod_spec, {"a": "b"})]))
    result = run(str(path))
    assert result.exit_code == 1
    assert (
        'spec.template.spec.containers[0].resources.claims[0].request: "gpus" names no request'
        in result.output
    )


def test_stdin_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.yaml").write_text(claim(deviceClassName="gpu.nvidia.com"))
    (tmp_path / "a" / "notes.txt").write_text("not a manifest")
    found = run(str(tmp_path / "a"))
    assert found.exit_code == 0, found.output
    assert "1 object(s): 1 valid" in found.output
    piped = run("-", stdin=claim(deviceClassName="gpu.nvidia.com", cuont=1))
    assert piped.exit_code == 1
    assert "<stdin>:" in piped.output and 'unknown field "cuont"' in piped.output


def test_json_input_and_other_kinds(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {"a": 1}}')
    result = run(str(path))
    assert result.exit_code == 1
    assert "data.a: got 1, must be string" in result.output
    custom = tmp_path / "custom.yaml"
    custom.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n")
    skipped = run(str(custom))
    assert skipped.exit_code == 0
    assert "Widget w: skipped" in skipped.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--feature-gates", "Nope=true", "x.yaml"], "--feature-gates"),
        (["--kubernetes-version", "latest", "x.yaml"], "--kubernetes-version"),
        ([], "Missing argument"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_no_python_reprs_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(claim(deviceClassName=None, count=None))
    result = run(str(path))
    assert "None" not in result.output and "got None" not in result.output


def test_custom_resources_are_checked_against_the_crds_given(tmp_path: Path) -> None:
    """A ComputeDomain is checked like a built-in kind against the CRDs nvdra ships (the chart's crds/,
    installed with the package), or against those given with --crd; a custom kind no CRD serves is
    skipped, with the reason."""
    path = tmp_path / "cd.yaml"
    path.write_text(
        "apiVersion: resource.nvidia.com/v1beta1\nkind: ComputeDomain\nmetadata: {name: cd, namespace: ns}\n"
        "spec:\n  numNode: 2\n  channel: {resourceClaimTemplate: {name: t}}\n"
    )
    crds = REPO / "deployments" / "helm" / "nvdra" / "crds"
    for checked in (run(str(path)), run(str(path), "--crd", str(crds))):
        assert checked.exit_code == 1
        assert f'{path}:5: error: spec.numNode: unknown field "numNode"' in checked.output
        assert "did you mean numNodes?" in checked.output
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: ns}\n")
    skipped = run(str(other))
    assert skipped.exit_code == 0 and "Widget ns/w: skipped" in skipped.output
    everything = run(str(SPECS))
    assert everything.exit_code == 0, everything.output
    assert " 0 skipped" in everything.output


def test_without_jsonschema_a_custom_resource_is_skipped_with_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain ``pip install nvdra`` has no jsonschema: a ComputeDomain is skipped, saying which extra
    checks it, rather than the command failing."""
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import fails as when it is not installed
    path = tmp_path / "cd.yaml"
    path.write_text(
        "apiVersion: resource.nvidia.com/v1beta1\nkind: ComputeDomain\nmetadata: {name: cd, namespace: ns}\n"
        "spec:\n  numNodes: 2\n  channel: {resourceClaimTemplate: {name: t}}\n"
    )
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert "ComputeDomain ns/cd: skipped" in result.output
    assert "pip install 'nvdra[validate]'" in result.output


def test_the_packaged_crds_are_the_charts() -> None:
    """``nvdra.imex/crds`` is the chart's crds/ folder itself (one copy of each CRD)."""
    from nvdra.tool.schemas import packaged_crds

    names = sorted(p.name for p in (REPO / "deployments" / "helm" / "nvdra" / "crds").glob("*.yaml"))
    kinds = sorted(c["spec"]["names"]["kind"] for c in packaged_crds())
    assert len(names) == len(kinds) == 2
    assert kinds == ["ComputeDomain", "ComputeDomainClique"]


def test_v1alpha3_and_the_classic_resource_class_get_their_v1_equivalent(tmp_path: Path) -> None:
    """A v1alpha3 claim (device fields beside the name) and a v1alpha2 ResourceClass of the classic
    driver are rewritten by --fix into v1 objects that validate."""
    path = tmp_path / "old.yaml"
    path.write_text(
        "apiVersion: resource.k8s.io/v1alpha2\nkind: ResourceClass\nmetadata: {name: gpu.nvidia.com}\n"
        "driverName: gpu.resource.nvidia.com\n---\n"
        "apiVersion: resource.k8s.io/v1alpha3\nkind: ResourceClaim\nmetadata: {name: c, namespace: ns}\n"
        "spec: {devices: {requests: [{name: g, deviceClassName: gpu.nvidia.com, count: 2}]}}\n"
    )
    first = run(str(path))
    assert first.exit_code == 1
    assert "resource.k8s.io/v1alpha3 was removed in Kubernetes 1.32" in first.output
    assert run(str(path), "--fix").exit_code == 1
    cls, claim = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert cls["spec"]["selectors"][0]["cel"]["expression"] == "device.driver == 'gpu.nvidia.com'"
    assert claim["spec"]["devices"]["requests"] == [
        {"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 2}}
    ]
    again = run(str(path))
    assert again.exit_code == 0, again.output
