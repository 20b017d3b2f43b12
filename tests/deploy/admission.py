"""ValidatingAdmissionPolicies, evaluated for the test API server as the kube-apiserver evaluates them.

:class:`PolicyAdmission` takes rendered manifests (the chart's policies and bindings) and is the
``admission`` callable of :class:`~nvdra.kubeletplugin.testing_apiserver.ApiServer`: every write
made over HTTP that a bound policy's ``matchConstraints`` select (a PATCH is an UPDATE) and whose
``matchConditions`` hold is checked against its ``validations`` with ``request``, ``object``,
``oldObject`` and ``variables`` in scope. A failed validation of a ``Deny`` binding refuses the write
with the apiserver's answer: 422 (or the validation's ``reason``) and ``<resource> "<name>" is
invalid: : ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <message>``.
An expression that fails to evaluate counts as a failure under ``failurePolicy: Fail``.

The engine is standard CEL (``common-expression-language``): a policy using CEL's optional syntax
(``x[?k]``, ``x.?f``) or params is refused when loaded, naming the policy and the expression.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import cel

from nvdra.core.errors import KubeApiError
from nvdra.kubeletplugin.testing_apiserver import AdmissionRequest

JsonObject = dict[str, Any]
_CODES = {"Invalid": 422, "Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}


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
                    cel.compile(expression)
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
                if cel.evaluate(current, context) is not True:
                    return None
            variables: dict[str, Any] = {}
            for variable in spec.get("variables") or []:
                context.add_variable("variables", variables)
                current = variable["expression"]
                variables[variable["name"]] = cel.evaluate(current, context)
            context.add_variable("variables", variables)
            for validation in spec.get("validations") or []:
                current = validation["expression"]
                if cel.evaluate(current, context) is True:
                    continue
                if "messageExpression" in validation:
                    current = validation["messageExpression"]
                    message = str(cel.evaluate(current, context))
                else:
                    message = validation.get("message") or f"failed expression: {validation['expression']}"
                return refuse(message, validation.get("reason", "Invalid"))
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            if spec.get("failurePolicy", "Fail") == "Ignore":
                return None
            return refuse(f"expression '{current}' resulted in error: {exc}")
        return None
