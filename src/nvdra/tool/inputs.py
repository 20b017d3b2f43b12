"""The manifests ``nvdra validate`` and ``nvdra explain`` read: files, directories, stdin.

Paths are files, directories (searched recursively for ``*.yaml``, ``*.yml`` and ``*.json``) or ``-``
for standard input. Every file may hold several YAML documents (JSON is YAML); a ``kind: *List``
document is expanded into its items. Parsing uses libyaml's C parser when PyYAML has it
(``yaml.CSafeLoader``) and remembers where every field starts, so a problem can name its line.

Unreadable input is reported as one :class:`InputProblem` line per file (not UTF-8, a YAML syntax
error, an empty file, a document that is not an object); the other files are still read.
"""

from __future__ import annotations

__all__ = [
    "POD_SPEC_PATHS",
    "Document",
    "InputProblem",
    "Source",
    "field_path",
    "load_sources",
    "parse_path",
    "read_sources",
]

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
EXTENSIONS = (".yaml", ".yml", ".json")
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
    "Pod": ("spec",),
}
"""Where the pod spec is in each kind that carries one (its ``resourceClaims`` name the pods' claims)."""
Key = str | int
Path_ = tuple[Key, ...]


def field_path(path: Sequence[Key]) -> str:
    """``spec.devices.requests[0].exactly`` from ``("spec", "devices", "requests", 0, "exactly")``."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out


def parse_path(text: str) -> Path_:
    """The inverse of :func:`field_path` (keys holding dots or brackets are not recoverable)."""
    out: list[Key] = []
    for part in text.split("."):
        name, _, rest = part.partition("[")
        if name:
            out.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            if index.isdigit():
                out.append(int(index))
            rest = rest.removeprefix("[")
    return tuple(out)


@attrs.frozen
class Source:
    """One input: its label (path, or ``<stdin>``) and its text."""

    label: str
    text: str
    path: Path | None = None


@attrs.frozen
class InputProblem:
    """An input that could not be read as manifests: one line, with the file (and line when known)."""

    label: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.label}:{self.line}" if self.line else self.label
        return f"{where}: {self.message}"


@attrs.define
class Document:
    """One object of an input, where it is, and the line of each of its fields."""

    source: Source
    index: int  # the YAML document's index in its file
    obj: dict[str, Any]
    lines: dict[Path_, int]
    span: tuple[int, int]  # character offsets of the YAML document in the source text
    item: int | None = None  # index within a List document

    @property
    def line(self) -> int:
        """The line the object starts on."""
        return self.lines.get((), 1)

    def line_of(self, path: Sequence[Key]) -> int:
        """The line of the deepest field of ``path`` that exists (the object's line at worst)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return self.line

    @property
    def kind(self) -> str:
        """``kind`` as a string ('' when missing)."""
        kind = self.obj.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str:
        """``namespace/name`` (or ``name``) from the metadata, ``?`` when missing."""
        meta = self.obj.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("name") or meta.get("generateName") or "?"
        return f"{meta['namespace']}/{name}" if meta.get("namespace") else str(name)

    @property
    def label(self) -> str:
        """``FILE:LINE KIND NAME`` for reports."""
        return f"{self.source.label}:{self.line} {self.kind or '(no kind)'} {self.name}"


def read_sources(
    paths: Iterable[str], stdin: Callable[[], bytes] | None = None
) -> tuple[list[Source], list[InputProblem]]:
    """Read every path (directories recursively, ``-`` from stdin) as UTF-8 text."""
    sources: list[Source] = []
    problems: list[InputProblem] = []
    for raw in paths:
        if raw == "-":
            data = stdin() if stdin is not None else sys.stdin.buffer.read()
            _decode("<stdin>", data, None, sources, problems)
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in EXTENSIONS and p.is_file())
            if not files:
                problems.append(InputProblem(raw, "directory holds no *.yaml, *.yml or *.json file"))
            for f in files:
                _read(f, sources, problems)
        elif path.exists():
            _read(path, sources, problems)
        else:
            problems.append(InputProblem(raw, "no such file or directory"))
    return sources, problems


def _read(path: Path, sources: list[Source], problems: list[InputProblem]) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(InputProblem(str(path), f"cannot read: {exc.strerror or exc}"))
        return
    _decode(str(path), data, path, sources, problems)


def _decode(
    label: str, data: bytes, path: Path | None, sources: list[Source], problems: list[InputProblem]
) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.append(
            InputProblem(
                label,
                f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                "(Kubernetes manifests are UTF-8)",
                line,
            )
        )
        return
    sources.append(Source(label=label, text=text, path=path))


def _lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    """Record the line of ``node`` and of everything under it (iteratively: deep inputs are fine)."""
    stack: list[tuple[yaml.Node, Path_]] = [(node, path)]
    while stack:
        current, where = stack.pop()
        out[where] = current.start_mark.line + 1
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    stack.append((value, (*where, key.value)))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, (*where, i)) for i, item in enumerate(current.value))


def _documents(source: Source) -> Iterator[tuple[int, yaml.Node, Any]]:
    loader = _Loader(source.text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            yield index, node, loader.construct_document(node)
            index += 1
    finally:
        loader.dispose()


def load_sources(sources: Iterable[Source]) -> tuple[list[Document], list[InputProblem]]:
    """Parse every source into documents; one problem line per source that does not parse."""
    docs: list[Document] = []
    problems: list[InputProblem] = []
    for source in sources:
        before = len(docs)
        try:
            for index, node, obj in _documents(source):
                if obj is None:
                    continue
                if not isinstance(obj, dict):
                    problems.append(
                        InputProblem(
                            source.label,
                            f"document {index} is a {_yaml_type(obj)}, not an object (a Kubernetes manifest "
                            "is a mapping with apiVersion and kind)",
                            node.start_mark.line + 1,
                        )
                    )
                    continue
                lines: dict[Path_, int] = {}
                _lines(node, (), lines)
                span = (node.start_mark.index, node.end_mark.index)
                items = obj.get("items")
                if str(obj.get("kind", "")).endswith("List") and isinstance(items, list):
                    for i, item in enumerate(items):
                        if isinstance(item, dict):
                            sub = {p[2:]: ln for p, ln in lines.items() if p[:2] == ("items", i)}
                            docs.append(Document(source, index, item, sub, span, item=i))
                    continue
                docs.append(Document(source, index, obj, lines, span))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context = getattr(exc, "context", None)
            message = f"YAML syntax error: {what}" + (f" ({context})" if context else "")
            problems.append(InputProblem(source.label, message, mark.line + 1 if mark else None))
            continue
        if len(docs) == before and not any(p.label == source.label for p in problems):
            problems.append(InputProblem(source.label, "no objects: the input is empty"))
    return docs, problems


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "scalar"


def documents_by_kind(docs: Iterable[Document]) -> Mapping[str, list[Document]]:
    """Documents grouped by ``kind``."""
    out: dict[str, list[Document]] = {}
    for doc in docs:
        out.setdefault(doc.kind, []).append(doc)
    return out
