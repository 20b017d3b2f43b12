"""What the Kubernetes device-selector environment adds on top of a CEL engine, done on the source text.

The engine (:mod:`nvdra.alloc._cel`) parses and evaluates; this module owns the parts of the
Kubernetes environment that the engine lacks and that can be decided from the tokens alone:

- ``cel.bind(name, init, body)`` (``ext.Bindings``) is rewritten to the equivalent comprehension
  ``[init].map(name, body)[0]`` — same value, same errors, ``init`` evaluated once;
- the attribute/capacity domains an expression indexes with a literal (``attributes["x.com"]``) are
  collected so that the device input can map each of them to an empty map when the device has none
  (Kubernetes' "unknown domain is an empty map" rule);
- declaration checks the type checker would make: ``device`` has only ``driver``, ``attributes``,
  ``capacity`` and ``allowMultipleAllocations``; calls must name a known function;
- a worst-case cost estimate in CEL cost units against the device's declared bounds (every
  comprehension iterates at most :data:`MAX_RANGE` elements: 48 list values or 32 attributes).

Positions are 0-based offsets into the original expression; :func:`render_error` turns one into the
``<input>:LINE:COL: message`` form with a caret line, as cel-go prints.
"""

from __future__ import annotations

__all__ = [
    "DEVICE_FIELDS",
    "MAX_RANGE",
    "Token",
    "conjuncts",
    "estimate_cost",
    "index_literals",
    "render_error",
    "rewrite",
    "rewrite_bind",
    "static_problems",
    "tokenize",
]

import itertools
import re

import attrs

DEVICE_FIELDS = frozenset({"driver", "attributes", "capacity", "allowMultipleAllocations"})
MAX_RANGE = 48  # ResourceSliceMaxAttributeValuesPerDevice; ≥ the 32 attributes a device map can hold
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

# Functions a selector may call: CEL's standard library as the engine implements it, plus the
# Kubernetes quantity and semver libraries this package registers.
KNOWN_FUNCTIONS = frozenset(
    {
        *_MACROS,
        "has", "size", "int", "uint", "double", "string", "bytes", "bool", "type", "dyn",
        "matches", "contains", "startsWith", "endsWith", "duration", "timestamp",
        "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
        "getHours", "getMinutes", "getSeconds", "getMilliseconds", "max", "min",
        "of", "none", "hasValue", "value", "orValue", "or",
        "quantity", "isQuantity", "compareTo", "isGreaterThan", "isLessThan", "sign", "add", "sub",
        "isInteger", "asInteger", "asApproximateFloat",
        "semver", "isSemver", "major", "minor", "patch",
        # strings extension, Kubernetes lists and regex libraries (see nvdra.alloc._cel.LIBRARY)
        "charAt", "indexOf", "lastIndexOf", "lowerAscii", "upperAscii", "replace", "split",
        "substring", "trim", "join", "isSorted", "sum", "find", "findAll",
        # DRAListTypeAttributes (Kubernetes 1.36, KEP-6072)
        "includes",
    }
)  # fmt: skip

NAMESPACED_FUNCTIONS = frozenset(
    {"cel.bind", "sets.contains", "sets.equivalent", "sets.intersects", "strings.quote"}
)
"""Functions called as ``namespace.name(...)``; all but ``cel.bind`` are renamed ``namespace_name``."""

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<comment>//[^\n]*)
    |(?P<string>[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)


@attrs.frozen
class Token:
    """One lexical token: ``kind`` is string, number, ident or op; ``pos`` is its offset."""

    kind: str
    text: str
    pos: int


def tokenize(expr: str) -> list[Token]:
    """Split an expression into tokens (whitespace and comments dropped).

    Raises:
        ValueError: a character no CEL token starts with; the message carries the position.
    """
    out: list[Token] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(
                render_error(expr, pos, f"Syntax error: token recognition error at: {expr[pos]!r}")
            )
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            out.append(Token(kind, m.group(), pos))
        pos = m.end()
    return out


def render_error(expr: str, pos: int, message: str) -> str:
    """``<input>:LINE:COL: message`` plus the offending line and a caret under the position."""
    line_no = expr.count("\n", 0, pos) + 1
    start = expr.rfind("\n", 0, pos) + 1
    end = expr.find("\n", pos)
    line = expr[start : end if end >= 0 else len(expr)]
    col = pos - start
    return f"<input>:{line_no}:{col + 1}: {message}\n | {line}\n | {'.' * col}^"


def _closing(tokens: list[Token], open_index: int) -> int:
    """Index of the bracket closing ``tokens[open_index]`` (or len(tokens) when unbalanced)."""
    depth = 0
    for i in range(open_index, len(tokens)):
        text = tokens[i].text if tokens[i].kind == "op" else ""
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return i
    return len(tokens)


def _split_args(tokens: list[Token], open_index: int, close_index: int) -> list[tuple[int, int]]:
    """Token ranges of the comma-separated arguments between two brackets."""
    args, start, depth = [], open_index + 1, 0
    for i in range(open_index + 1, close_index):
        text = tokens[i].text if tokens[i].kind == "op" else ""
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        elif text == "," and depth == 0:
            args.append((start, i))
            start = i + 1
    if start < close_index:
        args.append((start, close_index))
    return args


def rewrite_bind(expr: str) -> str:
    """Rewrite every ``cel.bind(v, init, body)`` into ``[init].map(v, body)[0]`` (innermost too).

    Expressions without ``cel.bind`` come back unchanged. A malformed bind (not three arguments, or a
    first argument that is not a plain identifier) is left for the engine to reject.
    """
    tokens = tokenize(expr)
    for i in range(len(tokens)):
        if _namespaced_at(tokens, i) != "cel.bind":
            continue
        close = _closing(tokens, i + 3)
        args = _split_args(tokens, i + 3, close)
        if close >= len(tokens) or len(args) != 3 or args[0][1] - args[0][0] != 1:
            continue
        var = tokens[args[0][0]].text

        def text(rng: tuple[int, int]) -> str:
            return expr[tokens[rng[0]].pos : tokens[rng[1] - 1].pos + len(tokens[rng[1] - 1].text)]

        replaced = f"[{text(args[1])}].map({var}, {text(args[2])})[0]"
        head, tail = expr[: tokens[i].pos], expr[tokens[close].pos + 1 :]
        # Rewrite again: the init, the body and the rest may hold more binds.
        return rewrite_bind(head + replaced + tail)
    return expr


def _namespaced_at(tokens: list[Token], i: int) -> str | None:
    """``ns.name`` when ``tokens[i]`` starts a namespaced call ``ns.name(`` (not itself a member)."""
    if (
        tokens[i].kind == "ident"
        and (i == 0 or tokens[i - 1].text != ".")
        and i + 3 < len(tokens)
        and tokens[i + 1].text == "."
        and tokens[i + 2].kind == "ident"
        and tokens[i + 3].text == "("
        and tokens[i].text in ("cel", "sets", "strings")
    ):
        return f"{tokens[i].text}.{tokens[i + 2].text}"
    return None


def rewrite(expr: str) -> str:
    """The expression the engine runs: namespaced library calls renamed (``sets.contains(`` →
    ``sets_contains(``), then :func:`rewrite_bind`. Positions of errors refer to the original text."""
    tokens = tokenize(expr)
    out, last = [], 0
    for i in range(len(tokens)):
        name = _namespaced_at(tokens, i)
        if name is None or name == "cel.bind" or name not in NAMESPACED_FUNCTIONS:
            continue
        out.append(expr[last : tokens[i].pos])
        out.append(name.replace(".", "_"))
        last = tokens[i + 2].pos + len(tokens[i + 2].text)
    out.append(expr[last:])
    return rewrite_bind("".join(out))


def conjuncts(expr: str) -> list[str]:
    """The top-level ``&&`` clauses of ``expr`` as written (``[expr]`` when it is not a conjunction at
    its top level, e.g. it holds a top-level ``||`` or ``?:``)."""
    try:
        tokens = tokenize(expr)
    except ValueError:
        return [expr]
    depth, cuts = 0, []
    for i, tok in enumerate(tokens):
        text = tok.text if tok.kind == "op" else ""
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and text in ("||", "?"):
            return [expr]
        elif depth == 0 and text == "&&":
            cuts.append(i)
    if not cuts:
        return [expr]
    bounds = [-1, *cuts, len(tokens)]
    out = []
    for start, end in itertools.pairwise(bounds):
        first, last = tokens[start + 1], tokens[end - 1]
        out.append(expr[first.pos : last.pos + len(last.text)].strip())
    return out


def unquote(literal: str) -> str:
    """The value of a simple CEL string literal (escapes other than quotes kept as written)."""
    body = literal.lstrip("rRbB")
    quote = body[:3] if body[:3] in ("'''", '"""') else body[0]
    inner = body[len(quote) : len(body) - len(quote)]
    return inner.replace("\\" + quote[0], quote[0])


def index_literals(tokens: list[Token]) -> frozenset[str]:
    """Every string literal used as an index (``x["lit"]``): the candidate attribute domains."""
    found = set()
    for i in range(1, len(tokens) - 1):
        if tokens[i].kind == "string" and tokens[i - 1].text == "[" and tokens[i + 1].text == "]":
            found.add(unquote(tokens[i].text))
    return frozenset(found)


def static_problems(tokens: list[Token]) -> list[tuple[int, str]]:
    """Declaration errors the Kubernetes type checker reports: (position, message) pairs."""
    problems: list[tuple[int, str]] = []
    member_of_namespace = set()
    for i, tok in enumerate(tokens):
        after_dot = i > 0 and tokens[i - 1].text == "."
        if tok.kind != "ident" or i in member_of_namespace:
            continue
        namespaced = _namespaced_at(tokens, i)
        if namespaced is not None:
            member_of_namespace.add(i + 2)
            if namespaced not in NAMESPACED_FUNCTIONS:
                problems.append((tok.pos, f"undeclared reference to '{namespaced}'"))
            continue
        nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if tok.text == "device" and not after_dot and nxt == "." and i + 2 < len(tokens):
            field = tokens[i + 2]
            if field.kind == "ident" and field.text not in DEVICE_FIELDS:
                problems.append(
                    (
                        field.pos,
                        f"undefined field '{field.text}' (device has {', '.join(sorted(DEVICE_FIELDS))})",
                    )
                )
        if nxt == "(" and tok.text not in KNOWN_FUNCTIONS:
            problems.append((tok.pos, f"undeclared reference to '{tok.text}'"))
    return problems


def estimate_cost(tokens: list[Token]) -> int:
    """Worst-case cost: one unit per token, comprehension bodies times :data:`MAX_RANGE` (or the
    length of a list literal they iterate), nested comprehensions multiplying."""
    return _cost(tokens, 0, len(tokens))


def _cost(tokens: list[Token], start: int, end: int) -> int:
    total, i = 0, start
    while i < end:
        tok = tokens[i]
        is_macro = tok.kind == "ident" and tok.text in _MACROS and i > start and tokens[i - 1].text == "."
        if is_macro and i + 1 < end and tokens[i + 1].text == "(":
            close = min(_closing(tokens, i + 1), end)
            iterations = _literal_length(tokens, start, i - 1)
            total += 1 + iterations * max(1, _cost(tokens, i + 2, close))
            i = close + 1
            continue
        total += 1
        i += 1
    return total


def _literal_length(tokens: list[Token], start: int, dot: int) -> int:
    """Elements of a list literal ending just before ``dot``, else :data:`MAX_RANGE`."""
    if dot - 1 < start or tokens[dot - 1].text != "]":
        return MAX_RANGE
    depth, i = 0, dot - 1
    while i >= start:
        text = tokens[i].text if tokens[i].kind == "op" else ""
        depth += text in (")", "]", "}")
        depth -= text in ("(", "[", "{")
        if depth == 0:
            break
        i -= 1
    preceded_by_value = i - 1 >= start and (
        tokens[i - 1].kind in ("ident", "string", "number") or tokens[i - 1].text in (")", "]")
    )
    if i < start or preceded_by_value:  # an index expression, not a literal
        return MAX_RANGE
    return len(_split_args(tokens, i, dot - 1))
