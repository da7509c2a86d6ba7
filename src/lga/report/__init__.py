"""The report: the seed's results table (Markdown, CSV, LaTeX), figures and an HTML page.

Library entry points:

- :func:`build_report` (``lga report``): everything, from run directories.
- :func:`load_runs`, :func:`group_runs`, :func:`results_table` then :func:`to_markdown` (or
  ``to_latex``, ``to_long_frame``, ``summary``): the table alone, e.g. for a command that prints it.
"""

from lga.report.build import Report, ReportOptions, build_report, pick_images
from lga.report.runs import MethodRuns, Run, group_runs, load_run, load_runs
from lga.report.table import (
    ResultsTable,
    display_frame,
    results_table,
    summary,
    to_latex,
    to_long_frame,
    to_markdown,
)

__all__ = [
    "MethodRuns",
    "Report",
    "ReportOptions",
    "ResultsTable",
    "Run",
    "build_report",
    "display_frame",
    "group_runs",
    "load_run",
    "load_runs",
    "pick_images",
    "results_table",
    "summary",
    "to_latex",
    "to_long_frame",
    "to_markdown",
]
