"""The I/O around :mod:`nvdra.tool.validate`: read the inputs, print the reports, write ``--fix``."""

from __future__ import annotations

__all__ = ["run_validate"]

import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from nvdra.core.featuregates import FeatureGates
from nvdra.tool.inputs import load_sources, read_sources
from nvdra.tool.validate import Report, fix_sources, validate_documents

Echo = Callable[[str], None]


def _progress_after(seconds: float, message: str) -> threading.Timer:
    """Print ``message`` on stderr if the work is still running after ``seconds`` (cancel when done)."""
    timer = threading.Timer(seconds, lambda: print(message, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    return timer


def _print_report(report: Report, quiet: bool, echo: Echo) -> None:
    if quiet and not report.errors:
        return
    echo(f"{report.doc.label}: {report.status}")
    for f in report.findings:
        if quiet and f.severity != "error":
            continue
        echo(f"  {report.doc.source.label}:{f.line}: {f.severity}: {f.text()}")


def run_validate(
    paths: Sequence[str],
    *,
    gates: FeatureGates | None,
    kubernetes_version: str,
    fix: bool,
    quiet: bool,
    echo: Echo,
    crd_paths: Sequence[str] = (),
) -> bool:
    """``nvdra validate``: print a report per object and a summary; True when nothing is invalid.

    ``crd_paths``: files or directories of CustomResourceDefinitions for custom resources.
    """
    crd_sources, problems = read_sources(crd_paths)
    crd_docs, crd_problems = load_sources(crd_sources)
    problems += crd_problems
    crds = [d.obj for d in crd_docs if d.kind == "CustomResourceDefinition"]
    sources, input_problems = read_sources(paths)
    problems += input_problems
    size = sum(len(s.text) for s in sources)
    timer = _progress_after(1.0, f"nvdra validate: checking {len(sources)} file(s), {size / 2**20:.1f} MiB …")
    try:
        docs, parse_problems = load_sources(sources)
        reports = validate_documents(docs, gates=gates, kubernetes_version=kubernetes_version, crds=crds)
    finally:
        timer.cancel()
    problems += parse_problems
    for p in problems:
        echo(f"{p}")
    for r in reports:
        _print_report(r, quiet, echo)
    if fix:
        for label, text in fix_sources(reports).items():
            source = next(s for s in sources if s.label == label)
            if source.path is None:
                sys.stdout.write(text)
            else:
                Path(source.path).write_text(text)
                fixed = sum(1 for r in reports if r.fixed is not None and r.doc.source.label == label)
                echo(f"{label}: rewritten, {fixed} object(s) fixed")
    counts = {status: sum(r.status == status for r in reports) for status in ("valid", "invalid", "skipped")}
    echo(
        f"{len(reports)} object(s): {counts['valid']} valid, {counts['invalid']} invalid, "
        f"{counts['skipped']} skipped" + (f"; {len(problems)} unreadable input(s)" if problems else "")
    )
    return not problems and not counts["invalid"]
