"""Building blocks shared by the opaque config models: JSON field names, field problems, grouped errors.

Invariants owned here:
- every model field declares its JSON (camelCase) name through :func:`json_name` metadata; the codec
  and the error paths read it from there, so a field's wire name is stated exactly once;
- a problem with one field is a :class:`~nvdra.core.errors.ConfigError` whose ``path`` is a JSONPath
  (``$.sharing.mpsConfig.defaultActiveThreadPercentage``); several problems of one document travel
  together as a :class:`ConfigErrors`, so a user can fix everything in one round.
"""

from __future__ import annotations

__all__ = [
    "ConfigErrors",
    "ConfigModel",
    "FieldProblem",
    "allowed_names",
    "child_path",
    "flatten",
    "json_name",
    "mapping_or_problem",
    "raise_problems",
]

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates

JSON_KEY = "nvdra.json"
"""attrs metadata key holding a field's JSON name."""
DECODE_KEY = "nvdra.decode"
"""attrs metadata key holding a field-specific decoder ``(raw) -> value`` (raises :class:`FieldProblem`)."""
ENCODE_KEY = "nvdra.encode"
"""attrs metadata key holding a field-specific encoder ``(value) -> JSON``."""


def json_name(
    name: str,
    *,
    decode: Callable[[Any], Any] | None = None,
    encode: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """attrs ``metadata`` for a field: its JSON name and, optionally, its own decode/encode hooks."""
    meta: dict[str, Any] = {JSON_KEY: name}
    if decode is not None:
        meta[DECODE_KEY] = decode
    if encode is not None:
        meta[ENCODE_KEY] = encode
    return meta


def child_path(path: str, key: object) -> str:
    """Extend a JSONPath by an object member (``.name``), a list index (``[3]``) or a map key (``['k']``)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if not isinstance(key, str):
        key = str(key)
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


class FieldProblem(ValueError):
    """Raised by decode hooks: what is wrong with one value, relative to the field being decoded.

    ``suffix`` extends the field's path (an element index, a map key) when the problem sits inside it.
    Problems found in several elements at once travel as ``others``.
    """

    def __init__(
        self,
        value: Any,
        allowed: str,
        *,
        reason: str = "invalid value",
        suffix: str = "",
        others: Sequence[FieldProblem] = (),
    ) -> None:
        self.value = value
        self.allowed = allowed
        self.reason = reason
        self.suffix = suffix
        self.others = tuple(others)
        super().__init__(f"{reason} {value!r}; allowed: {allowed}")

    def all(self) -> tuple[FieldProblem, ...]:
        """This problem followed by the ones found beside it."""
        return (self, *self.others)

    def at(self, path: str) -> list[ConfigError]:
        """Render as ConfigErrors rooted at the field's ``path``."""
        return [ConfigError(path + p.suffix, p.value, p.allowed, reason=p.reason) for p in self.all()]


class ConfigErrors(ConfigError):
    """Several problems found in one config document, reported together.

    ``errors`` holds each problem as a plain :class:`ConfigError`; ``path``/``value``/``allowed`` mirror
    the first one so that code handling a single ConfigError still gets a precise location.
    """

    def __init__(self, errors: Sequence[ConfigError], *, context: str = "") -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors: tuple[ConfigError, ...] = tuple(flatten(errors))
        self.context = context
        first = self.errors[0]
        super().__init__(first.path, first.value, first.allowed, reason=first.reason)

    def _render(self) -> str:
        head = f"{self.context}: " if self.context else ""
        items = "; ".join(f"({i}) {e}" for i, e in enumerate(self.errors, start=1))
        return f"{head}{len(self.errors)} problems: {items}"


def flatten(errors: Iterable[ConfigError]) -> list[ConfigError]:
    """Expand nested :class:`ConfigErrors` into their single errors, keeping order."""
    out: list[ConfigError] = []
    for err in errors:
        if isinstance(err, ConfigErrors):
            out.extend(err.errors)
        else:
            out.append(err)
    return out


def raise_problems(errors: Sequence[ConfigError], *, context: str = "") -> None:
    """Raise nothing, the single error, or all of them as one :class:`ConfigErrors`."""
    flat = flatten(errors)
    if len(flat) == 1 and not context:
        raise flat[0]
    if flat:
        raise ConfigErrors(flat, context=context)


class ConfigModel(abc.ABC):
    """Base of the opaque config models: :meth:`validate` raises every :meth:`problems` at once."""

    __slots__ = ()

    @abc.abstractmethod
    def problems(self, gates: FeatureGates, path: str = "$") -> list[ConfigError]:
        """Everything wrong with this config under ``gates``, each located under ``path``."""

    def validate(self, gates: FeatureGates, path: str = "$") -> None:
        """Raise one :class:`ConfigError` (or :class:`ConfigErrors`) listing every problem."""
        raise_problems(self.problems(gates, path))


def allowed_names(values: Iterable[str]) -> str:
    """A human list of allowed literal values: ``"A", "B" or "C"``."""
    quoted = [f'"{v}"' for v in values]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def mapping_or_problem(obj: Any, what: str) -> Mapping[str, Any]:
    """Return ``obj`` if it is a JSON object, else raise a :class:`FieldProblem` naming ``what``."""
    if not isinstance(obj, Mapping):
        raise FieldProblem(obj, f"a JSON object ({what})", reason="expected an object, got")
    return obj
