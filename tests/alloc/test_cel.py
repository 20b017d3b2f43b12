"""The Kubernetes device-selector CEL environment: values, extensions, errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from nvdra.alloc import (
    CelCompileError,
    CelEvalError,
    DeviceInput,
    Quantity,
    celsyntax,
    compile_selector,
    parse_semver,
)

DRIVER = "gpu.nvidia.com"
DEVICE = {
    "name": "gpu-0",
    "attributes": {
        "type": {"string": "gpu"},
        "index": {"int": 3},
        "healthy": {"bool": True},
        "driverVersion": {"version": "580.105.8"},
        "ext.example.com/family": {"string": "hopper"},
    },
    "capacity": {"memory": {"value": "81559Mi"}},
}


def run(expression: str, device: dict[str, Any] = DEVICE) -> bool:
    sel = compile_selector(expression)
    return DeviceInput(DRIVER, device, sel.domains).evaluate(sel)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'", True),
        ("device.attributes['ext.example.com'].family == 'hopper'", True),
        (
            "device.attributes['gpu.nvidia.com'].index > 2 && device.attributes['gpu.nvidia.com'].healthy",
            True,
        ),
        ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) < 0", True),
        ("device.capacity['gpu.nvidia.com'].memory.isGreaterThan(quantity('40Gi'))", True),
        ("quantity('200M') == quantity('0.2G')", True),
        ("quantity('50M').isLessThan(quantity('50Mi'))", True),
        ("quantity('1Gi').add(quantity('1Gi')) == quantity('2Gi')", True),
        ("quantity('1.5').isInteger()", False),
        ("quantity('-1').sign() == -1", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('550.54.15'))", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion.major() == 580", True),
        ("semver('1.0.0-alpha').isLessThan(semver('1.0.0'))", True),
        ("semver('v1.2', true).compareTo(semver('1.2.0')) == 0", True),
        ("isSemver('1.2') || isQuantity('x')", False),
        ("cel.bind(g, device.attributes['gpu.nvidia.com'], g.type == 'gpu' && g.index == 3)", True),
        ("cel.bind(a, 1, cel.bind(b, a + 1, b == 2))", True),
        ("device.attributes['other.example.com'].size() == 0", True),
        ("'x' in device.attributes['unknown.example.com']", False),
        ("has(device.attributes['gpu.nvidia.com'].uuid)", False),
        ("dyn(1) == 1u && 1 == 1.0", True),
    ],
)
def test_kubernetes_semantics(expression: str, expected: bool) -> None:
    """Each expression evaluates as the Kubernetes scheduler's CEL environment would."""
    assert run(expression) is expected


def test_unknown_attribute_in_known_domain_is_an_error() -> None:
    """Reading an attribute the domain lacks aborts, as in Kubernetes (test with has() or in)."""
    with pytest.raises(CelEvalError, match="no such key"):
        run("device.attributes['gpu.nvidia.com'].uuid == 'x'")


def test_non_bool_result_is_an_error() -> None:
    """A selector must produce a bool."""
    with pytest.raises(CelEvalError, match="must evaluate to bool"):
        run("device.attributes['gpu.nvidia.com'].type")


def test_quantity_and_string_do_not_mix() -> None:
    """compareTo between a quantity and a string has no overload."""
    with pytest.raises(CelEvalError):
        run("device.capacity['gpu.nvidia.com'].memory.compareTo('80Gi') < 0")


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("device.driver ==", "<input>:1:17"),
        ("device.model == 'x'", "undefined field 'model'"),
        ("device.attributes['a'].x.toLower() == 'x'", "undeclared reference to 'toLower'"),
        ("   ", "empty"),
        ("x" * (10 * 1024 + 1), "at most 10240"),
        (
            "[" + ",".join(["1"] * 100) + "].all(a, [" + ",".join(["1"] * 100) + "].all(b, "
            "[" + ",".join(["1"] * 100) + "].all(c, a == b && b == c)))",
            "exceeds the limit 1000000",
        ),
    ],
)
def test_compile_errors_point_at_the_problem(expression: str, fragment: str) -> None:
    """Syntax, declaration, length and cost errors are compile errors naming the position or limit."""
    with pytest.raises(CelCompileError) as info:
        compile_selector(expression)
    assert fragment in str(info.value)


def test_error_position_has_caret() -> None:
    """A compile error shows the line and a caret under the column."""
    with pytest.raises(CelCompileError) as info:
        compile_selector("device.driver == 'a' &&\n  device.foo")
    text = str(info.value)
    assert "<input>:2:10" in text and "| .........^" in text


def test_trace_records_quantity_comparisons() -> None:
    """trace() reports each quantity comparison with the exact difference."""
    sel = compile_selector("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('141Gi')) >= 0")
    result, seen = DeviceInput(DRIVER, DEVICE, sel.domains).trace(sel)
    assert result is False
    assert [(c.left, c.right, c.result) for c in seen] == [("81559Mi", "141Gi", -1)]
    assert Decimal(seen[0].difference) == 141 * 1024**3 - 81559 * 1024**2


def test_bind_rewrite_keeps_strings_intact() -> None:
    """cel.bind inside a string literal is not rewritten; real binds are."""
    assert celsyntax.rewrite_bind("'cel.bind(a, b, c)' == x") == "'cel.bind(a, b, c)' == x"
    assert celsyntax.rewrite_bind("cel.bind(v, f(1, 2), v > 0)") == "[f(1, 2)].map(v, v > 0)[0]"


def test_values() -> None:
    """Quantities compare exactly; semver follows 2.0.0 precedence and ignores build metadata."""
    assert Quantity.parse("1Gi").compare(Quantity.parse("1073741824")) == 0
    assert Quantity.parse("1G").compare(Quantity.parse("1Gi")) == -1
    versions = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0"]
    parsed = [parse_semver(v) for v in versions]
    assert sorted(reversed(parsed)) == parsed
    assert parse_semver("1.2.3+build") == parse_semver("1.2.3")
    assert str(parse_semver("v01.2", normalize=True)) == "1.2.0"
    with pytest.raises(ValueError, match="not a semantic version"):
        parse_semver("01.2.3")
