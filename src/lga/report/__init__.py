"""The report: the slides' results table (Markdown, CSV, LaTeX), figures, saliency maps and an
HTML page.

Library entry points (imported lazily, so that the submodules never import this package in a
circle):

- :func:`build_report` (``lga report``): everything, from run directories.
- :func:`load_runs`, :func:`group_runs`, :func:`results_table` then :func:`to_markdown` (or
  ``to_latex``, ``to_long_frame``, ``summary``): the table alone, e.g. for a command that prints it.
- :mod:`lga.report.explain`: saliency maps (attention rollout, Grad-CAM).
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Report": "lga.report.model",
    "ReportOptions": "lga.report.model",
    "build_report": "lga.report.build",
    "pick_images": "lga.report.build",
    "MethodRuns": "lga.report.runs",
    "Run": "lga.report.runs",
    "group_runs": "lga.report.runs",
    "load_run": "lga.report.runs",
    "load_runs": "lga.report.runs",
    "ResultsTable": "lga.report.table",
    "display_frame": "lga.report.table",
    "results_table": "lga.report.table",
    "summary": "lga.report.table",
    "to_latex": "lga.report.table",
    "to_long_frame": "lga.report.table",
    "to_markdown": "lga.report.table",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'lga.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
