"""The Kubernetes device-selector CEL environment on ``common-expression-language`` (the only importer).

Why this engine: it is the Rust ``cel`` crate behind PyO3, and measured against the pure-Python
``cel-python`` (``benchmarks/allocation.py`` prints both) it evaluates a class selector in ~1.3 µs
with a reused per-device context against ~270 µs, and it is the more correct of the two where it
matters for selectors: heterogeneous numeric equality (``1 == 1.0``, ``dyn(1) == 1u``) as in
cel-go, parse errors with line and column. Neither ships what Kubernetes adds; this module adds it:

- ``quantity()``/``isQuantity()`` with ``compareTo``, ``isGreaterThan``, ``isLessThan``, ``sign``,
  ``add``, ``sub``, ``isInteger``, ``asInteger``, ``asApproximateFloat``; ``semver()``/``isSemver()``
  with ``compareTo``, ``isGreaterThan``, ``isLessThan``, ``major``, ``minor``, ``patch``. Values are
  carried through the engine as one-key maps holding the canonical text, so ``==`` between two
  quantities (or versions) is exact numeric (precedence) equality, as in Kubernetes;
- ``cel.bind`` (rewritten by :mod:`nvdra.alloc.celsyntax`), the empty map for an unknown attribute
  or capacity domain, the ``device`` field and function declarations, and the cost limit
  (1,000,000 units, as an estimate of the worst case over the device's declared bounds);
- a result that is not a bool is an error, as is any evaluation error (the scheduler aborts).

Every comparison made by the quantity/semver functions can be recorded (:meth:`DeviceInput.trace`),
which is how ``nvdra explain`` says by how much a capacity selector failed.
"""

from __future__ import annotations

__all__ = [
    "COST_LIMIT",
    "CelCompileError",
    "CelError",
    "CelEvalError",
    "Comparison",
    "DeviceInput",
    "Selector",
    "compile_selector",
]

import itertools
import json
import logging
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

import attrs
import cel

from nvdra.alloc import celsyntax
from nvdra.alloc.values import Quantity, Semver, parse_semver
from nvdra.core.errors import UserError

COST_LIMIT = 1_000_000  # resourceapi.CELSelectorExpressionMaxCost
MAX_EXPRESSION_LENGTH = 10 * 1024

# The engine logs every failing Python function at ERROR before raising; we report those errors
# ourselves, with the expression and the device, so its own line is noise.
logging.getLogger("cel").setLevel(logging.CRITICAL)

_Q = "__quantity__"
_V = "__semver__"


class CelError(UserError, ValueError):
    """A selector expression is invalid or failed; ``expression`` is the CEL text."""

    def __init__(self, expression: str, message: str) -> None:
        self.expression = expression
        super().__init__(message)


class CelCompileError(CelError):
    """The expression does not compile: syntax, declarations, length or cost (message has the position)."""


class CelEvalError(CelError):
    """Evaluating the expression failed, or it did not produce a bool."""


@attrs.frozen
class Comparison:
    """One quantity/semver comparison made while evaluating: ``left`` op ``right`` gave ``result``."""

    function: str
    left: str
    right: str
    result: Any
    difference: str = ""  # for quantities: right - left, as an exact decimal


def _to_quantity(value: Any, function: str) -> Quantity:
    if isinstance(value, dict) and _Q in value:
        return Quantity(Decimal(value[_Q]))
    if isinstance(value, int) and not isinstance(value, bool) and function in ("add", "sub"):
        return Quantity(Decimal(value))
    raise TypeError(f"no such overload: {function} on {type(value).__name__}")


def _qval(q: Quantity) -> dict[str, str]:
    return {_Q: str(q.value.normalize()) if q.value else "0"}


def _vval(v: Semver) -> dict[str, str]:
    return {_V: str(attrs.evolve(v, build=""))}


def _to_semver(value: Any, function: str) -> Semver:
    if isinstance(value, dict) and _V in value:
        return parse_semver(value[_V])
    raise TypeError(f"no such overload: {function} on {type(value).__name__}")


class _Recorder:
    """Collects comparisons while active (one per :class:`DeviceInput`; contexts are not shared)."""

    def __init__(self) -> None:
        self.active = False
        self.seen: list[Comparison] = []

    def compare(self, function: str, a: Any, b: Any) -> int:
        if isinstance(a, dict) and _V in a:
            va, vb = _to_semver(a, function), _to_semver(b, function)
            result = va.compare(vb)
            if self.active:
                self.seen.append(Comparison(function, str(va), str(vb), result))
            return result
        qa, qb = _to_quantity(a, function), _to_quantity(b, function)
        result = qa.compare(qb)
        if self.active:
            diff = qb.value - qa.value
            self.seen.append(Comparison(function, str(qa), str(qb), result, difference=str(diff)))
        return result

    def functions(self) -> dict[str, Callable[..., Any]]:
        def semver(text: str, normalize: bool = False) -> dict[str, str]:
            return _vval(parse_semver(text, normalize=normalize))

        def is_semver(text: str, normalize: bool = False) -> bool:
            return _parses(lambda: parse_semver(text, normalize=normalize))

        def is_quantity(text: str) -> bool:
            return _parses(lambda: Quantity.parse(text))

        def arith(name: str, sign: int) -> Callable[[Any, Any], dict[str, str]]:
            def op(a: Any, b: Any) -> dict[str, str]:
                qa, qb = _to_quantity(a, name), _to_quantity(b, name)
                return _qval(Quantity(qa.value + sign * qb.value))

            return op

        def as_integer(a: Any) -> int:
            value = _to_quantity(a, "asInteger").value
            if value != value.to_integral_value() or abs(value) >= 2**63:
                raise ValueError(f"cannot convert quantity {value} to an int64")
            return int(value)

        return {
            **LIBRARY,
            "quantity": lambda text: _qval(Quantity.parse(text)),
            "isQuantity": is_quantity,
            "compareTo": lambda a, b: self.compare("compareTo", a, b),
            "isGreaterThan": lambda a, b: self.compare("isGreaterThan", a, b) > 0,
            "isLessThan": lambda a, b: self.compare("isLessThan", a, b) < 0,
            "sign": lambda a: _to_quantity(a, "sign").compare(Quantity(Decimal(0))),
            "add": arith("add", 1),
            "sub": arith("sub", -1),
            "isInteger": lambda a: _to_quantity(a, "isInteger").value % 1 == 0,
            "asInteger": as_integer,
            "asApproximateFloat": lambda a: float(_to_quantity(a, "asApproximateFloat").value),
            "semver": semver,
            "isSemver": is_semver,
            "major": lambda v: _to_semver(v, "major").major,
            "minor": lambda v: _to_semver(v, "minor").minor,
            "patch": lambda v: _to_semver(v, "patch").patch,
        }


# -- the Kubernetes CEL libraries the engine lacks (strings ext, lists, sets, regex) -----------------


def _parses(parse: Callable[[], object]) -> bool:
    """Whether ``parse()`` succeeds (a ``ValueError`` means the text is not of its kind)."""
    try:
        parse()
    except ValueError:
        return False
    return True


def _no_overload(function: str, *args: Any) -> TypeError:
    kinds = ", ".join(_cel_type(a) for a in args)
    return TypeError(f"no such overload: {function}({kinds})")


def _cel_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict) and _Q in value:
        return "Quantity"
    if isinstance(value, dict) and _V in value:
        return "Semver"
    return {int: "int", float: "double", str: "string", list: "list", dict: "map", bytes: "bytes"}.get(
        type(value), type(value).__name__
    )


def _text(value: Any, function: str) -> str:
    if not isinstance(value, str):
        raise _no_overload(function, value)
    return value


def _lower_ascii(s: Any) -> str:
    return "".join(c.lower() if c.isascii() else c for c in _text(s, "lowerAscii"))


def _upper_ascii(s: Any) -> str:
    return "".join(c.upper() if c.isascii() else c for c in _text(s, "upperAscii"))


def _char_at(s: Any, i: Any) -> str:
    text = _text(s, "charAt")
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= len(text):
        raise IndexError(f"index out of range: {i}")
    return text[i] if i < len(text) else ""


def _index_of(target: Any, item: Any, start: Any = 0) -> int:
    if isinstance(target, list):
        return next((i for i, v in enumerate(target) if v == item), -1)
    text, sub = _text(target, "indexOf"), _text(item, "indexOf")
    if not isinstance(start, int) or not 0 <= start <= len(text):
        raise IndexError(f"index out of range: {start}")
    return text.find(sub, start)


def _last_index_of(target: Any, item: Any, end: Any = None) -> int:
    if isinstance(target, list):
        return max((i for i, v in enumerate(target) if v == item), default=-1)
    text, sub = _text(target, "lastIndexOf"), _text(item, "lastIndexOf")
    if end is None:
        return text.rfind(sub)
    if not isinstance(end, int) or not 0 <= end < max(len(text), 1):
        raise IndexError(f"index out of range: {end}")
    return text.rfind(sub, 0, end + len(sub))


def _replace(s: Any, old: Any, new: Any, n: Any = -1) -> str:
    text = _text(s, "replace")
    return text.replace(_text(old, "replace"), _text(new, "replace"), n if n >= 0 else -1)


def _split_text(s: Any, sep: Any, n: Any = -1) -> list[str]:
    text, by = _text(s, "split"), _text(sep, "split")
    if n == 0:
        return []
    if by == "":
        chars = list(text)
        return chars if n < 0 or n >= len(chars) else [*chars[: n - 1], "".join(chars[n - 1 :])]
    return text.split(by) if n < 0 else text.split(by, n - 1)


def _substring(s: Any, start: Any, end: Any = None) -> str:
    text = _text(s, "substring")
    stop = len(text) if end is None else end
    if not 0 <= start <= stop <= len(text):
        raise IndexError(f"index out of range: [{start}:{stop}] of {len(text)} characters")
    return text[start:stop]


def _join(items: Any, sep: Any = "") -> str:
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _no_overload("join", items)
    return _text(sep, "join").join(items)


def _quote(s: Any) -> str:
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\a": "\\a", "\b": "\\b"}
    escapes |= {"\f": "\\f", "\v": "\\v"}
    return '"' + "".join(escapes.get(c, c) for c in _text(s, "strings.quote")) + '"'


def _numbers(items: Any, function: str) -> list[Any]:
    if not isinstance(items, list):
        raise _no_overload(function, items)
    return items


def _sum(items: Any) -> Any:
    values = _numbers(items, "sum")
    if not values:
        return 0
    total = values[0]
    for v in values[1:]:
        if type(v) is not type(total):
            raise _no_overload("sum", values)
        total += v
    return total


def _extreme(function: str, pick: Callable[[list[Any]], Any]) -> Callable[[Any], Any]:
    def call(items: Any) -> Any:
        values = _numbers(items, function)
        if not values:
            raise ValueError("the list is empty")
        return pick(values)

    return call


def _is_sorted(items: Any) -> bool:
    values = _numbers(items, "isSorted")
    return all(a <= b for a, b in itertools.pairwise(values))


def _list(value: Any, function: str) -> list[Any]:
    if not isinstance(value, list):
        raise _no_overload(function, value)
    return value


def _includes(attr: Any, value: Any) -> bool:
    """``includes()``: a list attribute holds ``value``, or a scalar one equals it."""
    return value in attr if isinstance(attr, list) else bool(attr == value)


def _find(s: Any, pattern: Any) -> str:
    match = re.search(_text(pattern, "find"), _text(s, "find"))
    return match.group(0) if match else ""


def _find_all(s: Any, pattern: Any, n: Any = -1) -> list[str]:
    found = [m.group(0) for m in re.finditer(_text(pattern, "findAll"), _text(s, "findAll"))]
    return found if n < 0 else found[:n]


LIBRARY: dict[str, Callable[..., Any]] = {
    # strings extension (cel-go ext.Strings, the version the Kubernetes base environment pins)
    "charAt": _char_at,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "replace": _replace,
    "split": _split_text,
    "substring": _substring,
    "trim": lambda s: _text(s, "trim").strip(),
    "join": _join,
    "strings_quote": _quote,
    # Kubernetes list library (indexOf/lastIndexOf above take lists too)
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _extreme("min", min),
    "max": _extreme("max", max),
    # cel-go ext.Sets
    "sets_contains": lambda a, b: all(x in _list(a, "sets.contains") for x in _list(b, "sets.contains")),
    "sets_equivalent": lambda a, b: (
        all(x in _list(b, "sets.equivalent") for x in _list(a, "sets.equivalent")) and all(x in a for x in b)
    ),
    "sets_intersects": lambda a, b: any(
        x in _list(a, "sets.intersects") for x in _list(b, "sets.intersects")
    ),
    # DRAListTypeAttributes (KEP-6072): attr.includes(v) on a list attribute or a scalar alike
    "includes": _includes,
    # Kubernetes regex library
    "find": _find,
    "findAll": _find_all,
}
"""Functions of the Kubernetes CEL environment registered with the engine (namespaced ones such as
``sets.contains`` are renamed by :func:`nvdra.alloc.celsyntax.rewrite` to ``sets_contains``)."""


def _attribute_value(attr: Mapping[str, Any]) -> Any:
    """The CEL value of one DeviceAttribute (``int``, ``bool``, ``string`` or ``version``)."""
    for key in ("int", "bool", "string"):
        if key in attr:
            return attr[key]
    if "version" in attr:
        return _vval(parse_semver(str(attr["version"])))
    for key in ("ints", "bools", "strings"):
        if key in attr:
            return list(attr[key])
    if "versions" in attr:
        return [_vval(parse_semver(str(v))) for v in attr["versions"]]
    raise ValueError(f"unsupported attribute value {json.dumps(dict(attr), default=str)}")


def _split(name: str, driver: str) -> tuple[str, str]:
    domain, sep, ident = name.partition("/")
    return (domain, ident) if sep else (driver, name)


class DeviceInput:
    """The ``device`` variable for one ResourceSlice device, built once and reused by every selector.

    ``domains`` are the attribute/capacity domains the compiled selectors index with a literal; the
    ones the device lacks map to empty maps (Kubernetes' unknown-domain rule).
    """

    def __init__(self, driver: str, device: Mapping[str, Any], domains: frozenset[str] = frozenset()) -> None:
        attributes: dict[str, dict[str, Any]] = {d: {} for d in domains}
        capacity: dict[str, dict[str, Any]] = {d: {} for d in domains}
        attributes.setdefault(driver, {})
        capacity.setdefault(driver, {})
        for name, attr in (device.get("attributes") or {}).items():
            dom, ident = _split(name, driver)
            attributes.setdefault(dom, {})[ident] = _attribute_value(attr)
        for name, cap in (device.get("capacity") or {}).items():
            dom, ident = _split(name, driver)
            capacity.setdefault(dom, {})[ident] = _qval(Quantity.parse(cap["value"]))
        variables = {
            "device": {
                "driver": driver,
                "attributes": attributes,
                "capacity": capacity,
                "allowMultipleAllocations": bool(device.get("allowMultipleAllocations", False)),
            }
        }
        self._recorder = _Recorder()
        self._context = cel.Context(variables=variables, functions=self._recorder.functions())

    def evaluate(self, selector: Selector) -> bool:
        """Run ``selector`` on this device.

        Raises:
            CelEvalError: the evaluation failed or did not give a bool (the scheduler aborts then).
        """
        try:
            result = selector.program.execute(self._context)
        except Exception as exc:  # the engine raises KeyError/TypeError/RuntimeError/ValueError
            raise CelEvalError(selector.expression, f"CEL runtime error: {_engine_message(exc)}") from exc
        if not isinstance(result, bool):
            raise CelEvalError(
                selector.expression,
                f"must evaluate to bool, got {_cel_type(result)} {json.dumps(result, default=str)}",
            )
        return result

    def trace(self, selector: Selector) -> tuple[bool | CelEvalError, list[Comparison]]:
        """Evaluate and return the result (or the error) with every quantity/semver comparison made."""
        self._recorder.active, self._recorder.seen = True, []
        try:
            return self.evaluate(selector), list(self._recorder.seen)
        except CelEvalError as exc:
            return exc, list(self._recorder.seen)
        finally:
            self._recorder.active = False


def _engine_message(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {json.dumps(exc.args[0], default=str)}" if exc.args else "no such key"
    text = str(exc).split(". Check ")[0]
    # "Function 'max' error: Python function call failed: ValueError: why" -> "max: why"
    m = re.match(r"Function '(\w+)' error: Python function call failed: \w+: (.*)", text, re.S)
    return f"{m.group(1)}: {m.group(2)}" if m else text


@attrs.frozen(eq=False)
class Selector:
    """A compiled selector: the original text, the engine's program, domains it indexes, cost."""

    expression: str
    program: Any
    domains: frozenset[str]
    cost: int


@lru_cache(maxsize=4096)
def compile_selector(expression: str) -> Selector:
    """Compile one selector in the Kubernetes device environment (cached by text).

    Raises:
        CelCompileError: empty or over 10 Ki characters, a syntax error, an undeclared field or
            function, or an estimated cost over :data:`COST_LIMIT`; the message carries the
            position (``<input>:LINE:COL``) and a caret line.
    """
    if not expression.strip():
        raise CelCompileError(expression, "CEL expression is empty")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CelCompileError(
            expression, f"CEL expression is {len(expression)} characters, at most {MAX_EXPRESSION_LENGTH}"
        )
    try:
        tokens = celsyntax.tokenize(expression)
        cel.compile(expression)  # syntax errors against the text the user wrote
    except ValueError as exc:
        raise CelCompileError(expression, f"compilation failed: {_parse_message(exc)}") from exc
    problems = celsyntax.static_problems(tokens)
    if problems:
        pos, message = problems[0]
        raise CelCompileError(
            expression, "compilation failed: " + celsyntax.render_error(expression, pos, message)
        )
    cost = celsyntax.estimate_cost(tokens)
    if cost > COST_LIMIT:
        raise CelCompileError(
            expression, f"too complex: estimated worst-case cost {cost} exceeds the limit {COST_LIMIT}"
        )
    program = cel.compile(celsyntax.rewrite(expression))
    return Selector(
        expression=expression, program=program, domains=celsyntax.index_literals(tokens), cost=cost
    )


def _parse_message(exc: BaseException) -> str:
    text = str(exc)
    return text[text.find("ERROR: ") + 7 :] if "ERROR: " in text else text
