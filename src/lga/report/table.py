"""The results table in the slides' layout: metrics as rows, methods as columns, mean ± std.

Rows: overall accuracy, weighted overall (each group weighted by its share of the training
split), per class, per group (with its count), worst group. Columns: methods, in the slides' order
(zero-shot, linear probe, ERM, spurious-aware, lga, then the others). Cells: mean ± sample
standard deviation (ddof=1) over seeds, in percent; a method with one seed shows its value alone.
Fractions stay fractions in the machine-readable outputs (CSV, JSON).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lga.data.dataset_config import Group
from lga.report.runs import MethodRuns

log = logging.getLogger(__name__)

CSV_COLUMNS = ["method", "student", "metric", "mean", "std", "n_seeds", "count"]
NOTE = (
    "Accuracy in %, mean ± sample std (ddof=1) over the seeds of each method (n= in the "
    "header; a single seed shows its value alone). Overall = test-set mix; weighted = each "
    "group weighted by its share of the training split. n = test images. Worst group = "
    "mean over seeds of each seed's worst-group accuracy."
)


@dataclass(frozen=True)
class Row:
    """One row of the table: a metric key and how it reads."""

    metric: str  # "accuracy", "class_accuracy/<c>", "group_accuracy/<c>/<p>", ...
    name: str
    count: int | None = None
    group: Group | None = None  # the group of a group_accuracy row


@dataclass
class ResultsTable:
    """Mean and std of every metric for every method.

    Attributes:
        columns: the methods (table columns), in order.
        rows: the metrics (table rows), in order.
        values: per column label, per metric, the values of each seed (fractions).
        worst_groups: per column label, the worst group of each seed.
    """

    columns: list[MethodRuns]
    rows: list[Row]
    values: dict[str, dict[str, list[float]]]
    worst_groups: dict[str, list[str]]

    @property
    def groups(self) -> list[str]:
        """The ``"<class>/<place>"`` groups, in row order."""
        return [r.group.key for r in self.rows if r.group is not None]

    @property
    def group_counts(self) -> dict[str, int | None]:
        """Test images per group."""
        return {r.group.key: r.count for r in self.rows if r.group is not None}

    def stats(self, label: str, metric: str) -> tuple[float, float, int]:
        """(mean, std, n) of one cell; std is NaN with fewer than 2 seeds, mean NaN with none."""
        xs = self.values[label].get(metric, [])
        if not xs:
            return math.nan, math.nan, 0
        std = float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan
        return float(np.mean(xs)), std, len(xs)

    def worst_group_summary(self, label: str) -> str:
        """The worst group of a method's seeds: ``"waterbird on land"`` or with counts when
        the seeds disagree (``"waterbird on land ×2, landbird on water ×1"``)."""
        counts = Counter(self.worst_groups[label]).most_common()
        if len(counts) == 1:
            return group_display(counts[0][0])
        return ", ".join(f"{group_display(g)} ×{n}" for g, n in counts)


def group_display(group: str | Group) -> str:
    """``"waterbird/land"`` (or its :class:`Group`) -> ``"waterbird on land"``."""
    return (group if isinstance(group, Group) else Group.from_key(group)).display


def _ordered_union(seqs: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = []
    for seq in seqs:
        out.extend(k for k in seq if k not in out)
    return out


def _group_count(columns: list[MethodRuns], group: str) -> int | None:
    counts = {(r.record.group_count or {}).get(group) for m in columns for r in m.runs}
    counts.discard(None)
    if len(counts) > 1:
        log.warning("group %s has different test counts across runs: %s", group, sorted(counts))
    return max(counts) if counts else None


def _class_count(group_counts: dict[str, int | None], cls: str) -> int | None:
    counts = [n for g, n in group_counts.items() if Group.from_key(g).cls == cls]
    return sum(counts) if counts and None not in counts else None


def table_rows(columns: list[MethodRuns]) -> list[Row]:
    """The rows of the slides' layout, for the classes and groups found in the runs."""
    metrics = [r.metrics for m in columns for r in m.runs]
    classes = _ordered_union([list(x.get("class_accuracy", {})) for x in metrics])
    groups = _ordered_union([list(x.get("group_count", x["group_accuracy"])) for x in metrics])
    n = max((x.get("n", 0) for x in metrics), default=0) or None
    rows = [
        Row("accuracy", "overall accuracy", n),
        Row("weighted_accuracy", "weighted overall (train group mix)"),
    ]
    counts = {g: _group_count(columns, g) for g in groups}
    rows += [Row(f"class_accuracy/{c}", f"{c} accuracy", _class_count(counts, c)) for c in classes]
    rows += [
        Row(f"group_accuracy/{g}", group_display(g), counts[g], Group.from_key(g)) for g in groups
    ]
    rows.append(Row("worst_group_accuracy", "worst group"))
    return rows + unseen_rows(metrics)


def unseen_rows(metrics: list[dict]) -> list[Row]:
    """Rows of the unseen-place test images (metrics.json's ``unseen``), when any run has them:
    overall, per class, and the worst (class, unseen place) group."""
    unseen = [x["unseen"] for x in metrics if isinstance(x.get("unseen"), dict)]
    if not unseen:
        return []
    places = "/".join(_ordered_union([u.get("places", []) for u in unseen]))
    classes = _ordered_union([list(u.get("class_accuracy", {})) for u in unseen])
    n = max(u.get("n", 0) for u in unseen) or None
    rows = [Row("unseen/accuracy", f"unseen places ({places})", n)]
    rows += [Row(f"unseen/class_accuracy/{c}", f"{c} on unseen places") for c in classes]
    rows.append(Row("unseen/worst_group_accuracy", "unseen places, worst group"))
    return rows


def metric_value(metrics: object, key: str) -> float | None:
    """The value at ``key``: a metrics.json key, or a path into its dicts
    (``group_accuracy/waterbird/land``, ``unseen/class_accuracy/landbird``)."""
    if not isinstance(metrics, dict):
        return None
    if key in metrics:
        value = metrics[key]
        return None if value is None or isinstance(value, dict) else float(value)
    head, sep, rest = key.partition("/")
    return metric_value(metrics.get(head), rest) if sep else None


def results_table(columns: list[MethodRuns]) -> ResultsTable:
    """Collect every seed's value of every row's metric."""
    rows = table_rows(columns)
    values: dict[str, dict[str, list[float]]] = {}
    worst: dict[str, list[str]] = {}
    for m in columns:
        values[m.label] = {}
        for row in rows:
            xs = [metric_value(r.metrics, row.metric) for r in m.runs]
            values[m.label][row.metric] = [x for x in xs if x is not None]
        worst[m.label] = [r.record.worst_group or "?" for r in m.runs]
    return ResultsTable(columns, rows, values, worst)


# ---------------------------------------------------------------------------------------------
# Renderings


def format_cell(mean: float, std: float, *, pm: str = " ± ") -> str:
    """Percentages: ``"83.69 ± 1.20"``; ``"83.69"`` for one seed; ``"–"`` when missing."""
    if math.isnan(mean):
        return "–"
    if math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f}{pm}{100 * std:.2f}"


def _header(m: MethodRuns) -> str:
    return f"{m.label} (n={m.n_seeds})" if m.n_seeds > 1 else m.label


def display_frame(table: ResultsTable, *, pm: str = " ± ") -> pd.DataFrame:
    """The table as strings: index = row names, columns ``n`` then one per method, and a last
    row naming each method's worst group."""
    data = {"n": [("" if r.count is None else str(r.count)) for r in table.rows]}
    for m in table.columns:
        data[_header(m)] = [
            format_cell(*table.stats(m.label, r.metric)[:2], pm=pm) for r in table.rows
        ]
    df = pd.DataFrame(data, index=[r.name for r in table.rows])
    df.loc["worst group is"] = ["", *[table.worst_group_summary(m.label) for m in table.columns]]
    df.index.name = "accuracy (%)"
    return df


def to_markdown(table: ResultsTable) -> str:
    """A GitHub-flavoured Markdown table (no optional dependency), with a note under it."""
    df = display_frame(table)
    header = [df.index.name, *df.columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---", "---:", *([":---:"] * (len(header) - 2))]) + "|",
    ]
    for name, row in df.iterrows():
        lines.append("| " + " | ".join([str(name), *map(str, row.tolist())]) + " |")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "–": "--",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def section(metric: str) -> str:
    """The block of the table a metric belongs to (overall, class, group, worst)."""
    if metric in ("accuracy", "weighted_accuracy"):
        return "overall"
    return metric.split("/", 1)[0].replace("worst_group_accuracy", "worst")


def to_latex(table: ResultsTable) -> str:
    """A booktabs ``table`` environment; ``\\usepackage{booktabs}`` in the preamble."""
    df = display_frame(table, pm=r" $\pm$ ")
    sections = [section(r.metric) for r in table.rows] + ["worst"]
    body = []
    for i, (name, row) in enumerate(df.iterrows()):
        if i and sections[i] != sections[i - 1]:
            body.append(r"\midrule")
        values = [str(v) if "$" in str(v) else tex_escape(str(v)) for v in row.tolist()]
        body.append(" & ".join([tex_escape(str(name)), *values]) + r" \\")
    head = " & ".join(tex_escape(str(c)) for c in [df.index.name, *df.columns])
    cols = "lr" + "c" * len(table.columns)
    return (
        "\n".join(
            [
                r"\begin{table}[t]",
                r"\centering",
                r"\small",
                rf"\begin{{tabular}}{{{cols}}}",
                r"\toprule",
                head + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                rf"\caption{{{tex_escape(NOTE)}}}",
                r"\label{tab:results}",
                r"\end{table}",
            ]
        )
        + "\n"
    )


def to_long_frame(table: ResultsTable) -> pd.DataFrame:
    """Machine-readable: one row per (method, metric) with fractions (``CSV_COLUMNS``)."""
    records = []
    for m in table.columns:
        for r in table.rows:
            mean, std, n = table.stats(m.label, r.metric)
            records.append(
                {
                    "method": m.label,
                    "student": m.base,
                    "metric": r.metric,
                    "mean": mean,
                    "std": std,
                    "n_seeds": n,
                    "count": r.count,
                }
            )
    df = pd.DataFrame.from_records(records, columns=CSV_COLUMNS)
    df["count"] = df["count"].astype("Int64")
    return df


def summary(table: ResultsTable) -> dict:
    """A JSON-ready summary: per method its runs, seeds and (mean, std, n) of every metric."""
    methods = []
    for m in table.columns:
        stats = {}
        for r in table.rows:
            mean, std, n = table.stats(m.label, r.metric)
            stats[r.metric] = {"mean": _nan_none(mean), "std": _nan_none(std), "n_seeds": n}
        methods.append(
            {
                "label": m.label,
                "method": m.method,
                "student": m.base,
                "n_seeds": m.n_seeds,
                "runs": [str(r.path) for r in m.runs],
                "seeds": [r.seed_label for r in m.runs],
                "worst_groups": table.worst_groups[m.label],
                "metrics": stats,
            }
        )
    return {"methods": methods, "group_count": table.group_counts, "note": NOTE}


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x
