"""ValidatingAdmissionPolicies, evaluated for the test API server as the kube-apiserver evaluates them.

:class:`PolicyAdmission` takes rendered manifests (the chart's policies and bindings) and is the
``admission`` callable of :class:`~nvdra.kubeletplugin.testing_apiserver.ApiServer`: every write
made over HTTP that a bound policy's ``matchConstraints`` select (a PATCH is an UPDATE) and whose
``matchConditions`` hold is checked against its ``validations`` with ``request``, ``object``,
``oldObject`` and ``variables`` in scope. A failed validation of a ``Deny`` binding refuses the write
with the apiserver's answer: 422 (or the validation's ``reason``) and ``<resource> "<name>" is
invalid: : ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <message>``.
An expression that fails to evaluate counts as a failure under ``failurePolicy: Fail``.

The engine is standard CEL (``common-expression-language``), which has no optional types: a chain
that uses them and ends in ``.orValue(d)`` (``m[?'k'][0].orValue('')``, ``o.spec.?f.orValue('')``)
is rewritten into the equivalent conditional (``('k' in m && size(m['k']) > 0) ? m['k'][0] : ''``);
any other optional syntax, or params, is refused when loaded, naming the policy and the expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import cel

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.testing_apiserver import AdmissionRequest

JsonObject = dict[str, Any]
_CODES = {"Invalid": 422, "Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}


_TOKEN = re.compile(
    r"""\s+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\[\?|\.\?|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?"""
    r"""|&&|\|\||==|!=|<=|>=|\S"""
)
_IDENT = re.compile(r"^[A-Za-z_]")


def _tokens(text: str) -> list[str]:
    return [m.group(0) for m in _TOKEN.finditer(text) if not m.group(0).isspace()]


def _opening(tokens: list[str], i: int, close: str) -> int:
    """The index of the bracket that ``tokens[i]`` (``close``) closes."""
    opens = ("[", "[?") if close == "]" else ("(",)
    depth = 0
    for j in range(i, -1, -1):
        depth += tokens[j] == close
        depth -= tokens[j] in opens
        if depth == 0:
            return j
    raise ValueError(f"unbalanced {close!r}")


def _closing(tokens: list[str], i: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j] == "("
        depth -= tokens[j] == ")"
        if depth == 0:
            return j
    raise ValueError("unbalanced '('")


def _chain(tokens: list[str], last: int) -> tuple[int, list[tuple[str, list[str]]]]:
    """The receiver chain ending at ``tokens[last]``: its start and (kind, tokens) segments, in order."""
    segments: list[tuple[str, list[str]]] = []
    i = last
    while True:
        token = tokens[i]
        if token == "]":
            j = _opening(tokens, i, "]")
            segments.append(("optional index" if tokens[j] == "[?" else "index", tokens[j + 1 : i]))
            i = j - 1
        elif _IDENT.match(token) and i > 0 and tokens[i - 1] in (".", ".?"):
            segments.append(("optional field" if tokens[i - 1] == ".?" else "field", [token]))
            i -= 2
        elif token == ")" or _IDENT.match(token):
            j = _opening(tokens, i, ")") if token == ")" else i
            j -= 1 if token == ")" and j > 0 and _IDENT.match(tokens[j - 1]) else 0
            if j > 0 and tokens[j - 1] in (".", ".?"):
                raise ValueError("an optional chain through a method call")
            segments.append(("primary", tokens[j : i + 1]))
            return j, segments[::-1]
        else:
            raise ValueError(f"an optional chain near {token!r}")


def standard_cel(expression: str) -> str:
    """``expression`` with every optional chain ending in ``.orValue(d)`` written as a conditional.

    Raises:
        ValueError: optional syntax this rewriting does not cover.
    """
    if "[?" not in expression and ".?" not in expression:
        return expression
    tokens = _tokens(expression)
    while True:
        at = next((k for k in range(len(tokens) - 2) if tokens[k : k + 3] == [".", "orValue", "("]), None)
        if at is None:
            break
        end = _closing(tokens, at + 2)
        start, segments = _chain(tokens, at - 1)
        value, conditions, optional = list(segments[0][1]), [], False
        for kind, body in segments[1:]:
            optional = optional or kind.startswith("optional")
            inner = " ".join(value)
            if kind.endswith("index"):
                if optional:
                    key = " ".join(body)
                    conditions.append(
                        f"{key} in ({inner})" if kind.startswith("optional") else f"size({inner}) > {key}"
                    )
                value = ["(", *value, ")", "[", *body, "]"]
            else:
                if optional:
                    conditions.append(f"has(({inner}).{body[0]})")
                value = ["(", *value, ")", ".", body[0]]
        test = " && ".join(f"({c})" for c in conditions) or "true"
        default = " ".join(tokens[at + 3 : end])
        tokens = (
            tokens[:start] + _tokens(f"(({test}) ? ({' '.join(value)}) : ({default}))") + tokens[end + 1 :]
        )
    if "[?" in tokens or ".?" in tokens:
        raise ValueError("optional syntax other than a chain ending in .orValue()")
    return " ".join(tokens)


def _expressions(policy: Mapping[str, Any]) -> Iterable[str]:
    spec = policy.get("spec") or {}
    for section in ("matchConditions", "variables"):
        yield from (item["expression"] for item in spec.get(section) or [])
    for validation in spec.get("validations") or []:
        yield validation["expression"]
        if "messageExpression" in validation:
            yield validation["messageExpression"]


def _rule_matches(rule: Mapping[str, Any], request: AdmissionRequest) -> bool:
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    resources = rule.get("resources") or []
    sub = f"*/{request.subresource}" if request.subresource else ""
    return (
        bool({"*", request.group} & set(rule.get("apiGroups") or []))
        and bool({"*", request.version} & set(rule.get("apiVersions") or []))
        and bool({"*", request.operation} & set(rule.get("operations") or []))
        and any(r in ("*", resource) or (sub and r == sub) for r in resources)
    )


def _selects(constraints: Mapping[str, Any] | None, request: AdmissionRequest, where: str) -> bool:
    if not constraints:
        return True
    for selector in ("namespaceSelector", "objectSelector"):
        if constraints.get(selector):
            raise ValueError(f"{where}: {selector} is not evaluated here")
    rules = constraints.get("resourceRules")
    if rules is not None and not any(_rule_matches(r, request) for r in rules):
        return False
    return not any(_rule_matches(r, request) for r in constraints.get("excludeResourceRules") or [])


def _typed(obj: JsonObject | None) -> JsonObject | None:
    """A built-in object as the apiserver's typed view has it: ``spec`` and ``status`` always there (a
    Go struct is serialized even when empty), so ``object.spec`` never fails on a bare Node."""
    if obj is None or obj.get("kind") not in _STRUCT_KINDS:
        return obj
    return {"spec": {}, "status": {}, **obj}


_STRUCT_KINDS = frozenset({"Node", "Pod", "Namespace", "DaemonSet", "Deployment"})


class PolicyAdmission:
    """Admission by the ValidatingAdmissionPolicies and bindings among ``manifests``.

    Raises (constructor):
        ValueError: a binding of a missing policy, params, or an expression standard CEL cannot parse.
    """

    def __init__(self, manifests: Iterable[Mapping[str, Any]]) -> None:
        docs = list(manifests)
        policies = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ValidatingAdmissionPolicy"}
        self.bound: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
        for doc in docs:
            if doc.get("kind") != "ValidatingAdmissionPolicyBinding":
                continue
            name = doc["spec"]["policyName"]
            if name not in policies:
                raise ValueError(
                    f"ValidatingAdmissionPolicyBinding {doc['metadata']['name']}: no policy {name!r}"
                )
            policy = policies[name]
            if doc["spec"].get("paramRef") or policy["spec"].get("paramKind"):
                raise ValueError(f"ValidatingAdmissionPolicy {name}: params are not evaluated here")
            for expression in _expressions(policy):
                try:
                    cel.compile(standard_cel(expression))
                except ValueError as exc:
                    raise ValueError(
                        f"ValidatingAdmissionPolicy {name}: standard CEL cannot parse {expression!r}: {exc}"
                    ) from exc
            self.bound.append((policy, doc))

    def __call__(self, request: AdmissionRequest) -> None:
        """Refuse ``request`` (a :class:`KubeApiError`) if a bound policy denies it."""
        for policy, binding in self.bound:
            denial = self._evaluate(policy, binding, request)
            if denial is not None and "Deny" in (binding["spec"].get("validationActions") or []):
                raise denial

    @staticmethod
    def _context(request: AdmissionRequest) -> Any:
        context = cel.Context()
        context.add_variable(
            "request",
            {
                "operation": request.operation,
                "name": request.name,
                "namespace": request.namespace,
                "subResource": request.subresource,
                "dryRun": request.dry_run,
                "kind": {"group": request.group, "version": request.version, "kind": request.kind},
                "resource": {
                    "group": request.group,
                    "version": request.version,
                    "resource": request.resource,
                },
                "userInfo": {
                    "username": request.user,
                    "groups": list(request.groups),
                    "extra": {k: list(v) for k, v in request.extra.items()},
                },
            },
        )
        context.add_variable("object", _typed(request.object))
        context.add_variable("oldObject", _typed(request.old_object))
        context.add_variable("params", None)
        return context

    def _evaluate(
        self, policy: Mapping[str, Any], binding: Mapping[str, Any], request: AdmissionRequest
    ) -> KubeApiError | None:
        spec, name, bound_as = policy["spec"], policy["metadata"]["name"], binding["metadata"]["name"]
        where = f"ValidatingAdmissionPolicy {name}"
        if not _selects(spec.get("matchConstraints"), request, where) or not _selects(
            binding["spec"].get("matchResources"), request, where
        ):
            return None
        context = self._context(request)
        prefix = f"ValidatingAdmissionPolicy '{name}' with binding '{bound_as}' denied request"

        def refuse(message: str, reason: str = "Invalid") -> KubeApiError:
            verdict = "is forbidden" if reason == "Forbidden" else "is invalid: "
            return KubeApiError(
                f'{request.qualified} "{request.name}" {verdict}: {prefix}: {message}', status=_CODES[reason]
            )

        current = ""
        try:
            for condition in spec.get("matchConditions") or []:
                current = condition["expression"]
                if cel.evaluate(standard_cel(current), context) is not True:
                    return None
            variables: dict[str, Any] = {}
            for variable in spec.get("variables") or []:
                context.add_variable("variables", variables)
                current = variable["expression"]
                variables[variable["name"]] = cel.evaluate(standard_cel(current), context)
            context.add_variable("variables", variables)
            for validation in spec.get("validations") or []:
                current = validation["expression"]
                if cel.evaluate(standard_cel(current), context) is True:
                    continue
                if "messageExpression" in validation:
                    current = validation["messageExpression"]
                    message = str(cel.evaluate(standard_cel(current), context))
                else:
                    message = validation.get("message") or f"failed expression: {validation['expression']}"
                return refuse(message, validation.get("reason", "Invalid"))
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            if spec.get("failurePolicy", "Fail") == "Ignore":
                return None
            return refuse(f"expression '{current}' resulted in error: {exc}")
        return None
