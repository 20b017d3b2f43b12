"""Every function of the Kubernetes CEL libraries the scheduler's DRA environment offers, through the
allocator: a selector that uses the function picks exactly the device it should (and a wrong use is
an error, not a silent false).

Libraries (kubernetes.io "CEL in Kubernetes"): the strings extension (charAt, indexOf, lastIndexOf,
lowerAscii, upperAscii, replace, split, substring, trim, join, strings.quote), the Kubernetes lists
library (isSorted, sum, min, max, indexOf, lastIndexOf), sets (sets.contains, sets.equivalent,
sets.intersects), regex (find, findAll), quantity and semver, cel.bind; and the cost limit.
"""

from __future__ import annotations

from typing import Any

import pytest

from nvdra.alloc import Allocator, CelCompileError, compile_selector
from tests.alloc.helpers import DRIVER, NODE, claim, device, device_class, exactly, slice_


def _devices() -> list[dict[str, Any]]:
    def dev(name: str, product: str, uuid: str, minors: list[int], tags: list[str]) -> dict[str, Any]:
        return device(
            name,
            productName={"string": product},
            uuid={"string": uuid},
            minors={"ints": minors},
            tags={"strings": tags},
        )

    out = [
        dev("h100", "NVIDIA H100 80GB HBM3", "GPU-1111-aaaa", [3, 1, 2], ["fast", "hbm"]),
        dev("l4", "NVIDIA L4", "GPU-2222-bbbb", [1, 2, 3], ["slow"]),
    ]
    for d in out:  # the helper's attributes live in the driver's domain, so lift the extras there too
        extra = {k: d.pop(k) for k in ("productName", "uuid", "minors", "tags")}
        d["attributes"].update(extra)
    return out


def _pick(expression: str) -> list[str]:
    alloc = Allocator([slice_("s", _devices())], {"example": device_class()}, node_name=NODE)
    outcome = alloc.allocate([claim(exactly("r", 1, expression))])
    if outcome.allocations is None:
        return []
    return [r["device"] for r in outcome.allocations[0]["devices"]["results"]]


A = f"device.attributes['{DRIVER}']"

CASES = [
    # strings extension
    (f"{A}.productName.lowerAscii().contains('h100')", ["h100"]),
    (f"{A}.productName.upperAscii().endsWith(' L4')", ["l4"]),
    (f"{A}.productName.charAt(7) == 'H'", ["h100"]),
    (f"{A}.productName.indexOf('L4') == 7", ["l4"]),
    (f"{A}.productName.indexOf('I', 3) == 4", ["h100", "l4"]),
    (f"{A}.uuid.lastIndexOf('a') == 12", ["h100"]),
    (f"{A}.productName.replace('NVIDIA ', '') == 'L4'", ["l4"]),
    (f"{A}.productName.split(' ').size() == 4", ["h100"]),
    (f"{A}.productName.split(' ', 2)[1] == 'L4'", ["l4"]),
    (f"{A}.productName.substring(7, 11) == 'H100'", ["h100"]),
    (f"('  ' + {A}.productName + ' ').trim() == 'NVIDIA L4'", ["l4"]),
    (f"{A}.tags.join('+') == 'fast+hbm'", ["h100"]),
    (f"strings.quote({A}.productName) == '\"NVIDIA L4\"'", ["l4"]),
    # lists library
    (f"{A}.minors.isSorted()", ["l4"]),
    (f"{A}.minors.sum() == 6 && {A}.minors.min() == 1 && {A}.minors.max() == 3", ["h100", "l4"]),
    (f"{A}.minors.indexOf(3) == 0", ["h100"]),
    (f"{A}.minors.lastIndexOf(3) == 2", ["l4"]),
    # sets
    (f"sets.contains({A}.tags, ['hbm'])", ["h100"]),
    (f"sets.equivalent({A}.tags, ['slow'])", ["l4"]),
    (f"sets.intersects({A}.tags, ['hbm', 'nvlink'])", ["h100"]),
    # regex
    (f"{A}.productName.find('[0-9]+GB') == '80GB'", ["h100"]),
    (f"{A}.uuid.findAll('[a-z]').size() == 4 && {A}.uuid.findAll('[0-9]', 2) == ['2', '2']", ["l4"]),
    # quantity, semver, bind
    (f"device.capacity['{DRIVER}'].memory.isGreaterThan(quantity('10Gi'))", ["h100", "l4"]),
    ("semver('1.2.3').isLessThan(semver('1.10.0'))", ["h100", "l4"]),
    (f"cel.bind(p, {A}.productName, p.lowerAscii().startsWith('nvidia l'))", ["l4"]),
]


@pytest.mark.parametrize(("expression", "devices"), CASES)
def test_library_function_selects_through_the_allocator(expression: str, devices: list[str]) -> None:
    """The allocator hands out the first device the selector accepts; check each candidate alone."""
    accepted = []
    for name in ("h100", "l4"):
        if _pick(f"device.attributes['{DRIVER}'].productName.contains('{name.upper()}') && ({expression})"):
            accepted.append(name)
    assert accepted == devices


def test_gpu_test6_lower_ascii_selector_compiles() -> None:
    """Upstream's gpu-test6.yaml selector shape (lowerAscii) is declared, not "undeclared"."""
    compile_selector("device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('^.*h100.*$')")


@pytest.mark.parametrize(
    "expression",
    [
        "sets.union([1], [2]) == [1, 2]",  # not a function of ext.Sets
        "'a'.quote() == 'a'",  # strings.quote is namespaced
        "strings.lowerAscii('A') == 'a'",
    ],
)
def test_undeclared_library_calls_are_compile_errors(expression: str) -> None:
    with pytest.raises(CelCompileError, match="undeclared reference"):
        compile_selector(expression)


def test_runtime_errors_of_library_functions_fail_the_allocation() -> None:
    """An out-of-range substring or the max of an empty list is an error (no device), as in the scheduler."""
    assert _pick(f"{A}.productName.substring(40) == ''") == []
    assert _pick("[].max() == 1") == []


def test_cost_limit_refuses_nested_comprehensions() -> None:
    """Three nested comprehensions over unbounded lists exceed the 1,000,000-unit cost limit."""
    nested = f"{A}.tags.all(a, {A}.tags.all(b, {A}.tags.all(c, {A}.tags.all(d, a + b + c + d != ''))))"
    with pytest.raises(CelCompileError, match="exceeds the limit 1000000"):
        compile_selector(nested)


def test_explain_names_the_false_clause_of_a_selector() -> None:
    """A refused device's verdict names the first top-level && clause that is false."""
    from nvdra.alloc import diagnose

    alloc = Allocator([slice_("s", _devices())], {"example": device_class()}, node_name=NODE)
    expression = f"{A}.productName.startsWith('NVIDIA') && {A}.minors.size() == 3 && {A}.tags.size() > 5"
    diag = diagnose(alloc, [claim(exactly("r", 1, expression))])
    details = [d for req in diag.requests for v in req.verdicts for d in v.details]
    assert f"clause 3 of 3 is false: {A}.tags.size() > 5" in details


@pytest.mark.parametrize(
    ("expression", "clauses"),
    [
        ("a && b", ["a", "b"]),
        ("(a && b) || c", ["(a && b) || c"]),
        ("f(a && b) && c.exists(x, x && y)", ["f(a && b)", "c.exists(x, x && y)"]),
        ("a ? b : c && d", ["a ? b : c && d"]),
        ("'x && y' == s && t", ["'x && y' == s", "t"]),
    ],
)
def test_conjuncts_split_only_the_top_level(expression: str, clauses: list[str]) -> None:
    from nvdra.alloc import celsyntax

    assert celsyntax.conjuncts(expression) == clauses
