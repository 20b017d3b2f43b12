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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nvdra.core.errors import ConfigError
from nvdra.core.featuregates import FeatureGates
from nvdra.core.serde import FieldProblem, child_path, field_meta, mapping_or_problem


def json_name(
    name: str,
    *,
    decode: Callable[[Any], Any] | None = None,
    encode: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """attrs ``metadata`` for a field: its JSON name and, optionally, its own decode/encode hooks."""
    return field_meta(name, decode=decode, encode=encode)


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
