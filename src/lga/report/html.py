"""``report.html``: one self-contained page (figures embedded as base64 PNG, no external file)."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from lga.report import diagnostics
from lga.report import table as tables

if TYPE_CHECKING:
    from lga.report.model import Report

log = logging.getLogger(__name__)

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f5f7; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 1em 0 2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.9em; max-width: 60em; }
code { background: #f3f3f3; padding: 0 0.25em; }
.warn { color: #8a4b00; }
table.results th { text-align: left; font-weight: normal; }
table.results thead th { font-weight: bold; text-align: center; }
tr.rule { border-top: 2px solid #999; }
"""


def embed_png(path: Path) -> str:
    """A ``data:`` URI of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figure(path: Path, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{embed_png(path)}" alt="{html.escape(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def alignment_table_html(wide: pd.DataFrame) -> str:
    """The alignment pivot (rows group x target, columns models), a rule between groups."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["group", "target", *wide.columns])
    rows, last = [], None
    for (group, target), values in wide.iterrows():
        first = group != last
        cells = "".join("<td>–</td>" if v != v else f"<td>{v:+.3f}</td>" for v in values)
        name = html.escape(tables.group_display(group)) if first else ""
        rule = ' class="rule"' if first and last is not None else ""
        rows.append(f"<tr{rule}><th>{name}</th><th>{html.escape(target)}</th>{cells}</tr>")
        last = group
    return (
        f'<table class="results"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _best(table: tables.ResultsTable, metric: str) -> set[str]:
    """The column(s) with the highest mean of a metric (bold in the page)."""
    means = {m.label: table.stats(m.label, metric)[0] for m in table.columns}
    valid = [v for v in means.values() if v == v]  # NaN != NaN
    if len(table.columns) < 2 or not valid:
        return set()
    return {k for k, v in means.items() if v == max(valid)}


def results_table_html(table: tables.ResultsTable) -> str:
    """The results table with each row's best method in bold and a rule between sections."""
    df = tables.display_frame(table)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name, *df.columns])
    rows, last = [], None
    metrics = [r.metric for r in table.rows] + [None]
    for (name, values), metric in zip(df.iterrows(), metrics, strict=True):
        section = tables.section(metric) if metric else "worst"
        best = _best(table, metric) if metric else set()
        cells = [f"<td>{html.escape(str(values.iloc[0]))}</td>"]
        for m, v in zip(table.columns, values.iloc[1:], strict=True):
            text = html.escape(str(v))
            cells.append(f"<td><b>{text}</b></td>" if m.label in best else f"<td>{text}</td>")
        rule = ' class="rule"' if last is not None and section != last else ""
        rows.append(f"<tr{rule}><th>{html.escape(str(name))}</th>{''.join(cells)}</tr>")
        last = section
    return (
        f'<table class="results"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _results_section(report: Report) -> str:
    t = report.table
    runs = "".join(
        f"<li><b>{html.escape(m.label)}</b> ({html.escape(m.base)}): "
        + ", ".join(
            f"<code>{html.escape(str(r.path))}</code> [{html.escape(r.seed_label)}]" for r in m.runs
        )
        + "</li>"
        for m in t.columns
    )
    return (
        "<h2>Results</h2>"
        + results_table_html(t)
        + f'<p class="note">{html.escape(tables.NOTE)} Bold: the best method of each '
        "row. The same numbers as fractions: <code>results.csv</code>; as LaTeX: "
        "<code>results.tex</code>.</p>"
        + f"<details><summary>Runs ({sum(m.n_seeds for m in t.columns)})</summary><ul>{runs}"
        "</ul></details>"
    )


def _group_section(report: Report) -> str:
    cap = (
        "<b>Accuracy per group.</b> Left: each (class, background) group of the test set, one "
        "bar per method (mean over seeds, error bar = std over seeds); each method's worst "
        "group is outlined in red, marked ▼ and labelled with its accuracy. Right: overall "
        "accuracy (test mix), accuracy weighted by the training group mix, and worst-group "
        "accuracy."
    )
    return "<h2>Group accuracies</h2>" + _figure(
        report.files["group_accuracy.png"], cap, "accuracy per group and method"
    )


def _group(group: str | None) -> str:
    return html.escape(tables.group_display(group or ""))


def _probs_section(report: Report) -> str:
    if "class_probs.png" not in report.files:
        return ""
    where = (
        f"evenly spaced (by id) over the <b>{_group(report.chosen_group)}"
        f"</b> group, the worst group of {html.escape(report.chosen_from or '')} (chosen "
        "without looking at any prediction)"
        if report.chosen_group
        else "chosen by the user"
    )
    cap = (
        "<b>Class probabilities of chosen test images</b>, as on the source slides: for each "
        "image (row), the probability each model gives each class prompt; the true class is "
        "the blue bar, ✓/✗ says whether the model's prediction is right. Columns: the "
        "pre-trained model (zero-shot), then each method (its first seed's "
        f"<code>predictions.parquet</code>). Images: {where}."
    )
    return "<h2>Class probabilities</h2>" + _figure(
        report.files["class_probs.png"], cap, "class probabilities"
    )


def _alignment_section(report: Report) -> str:
    if report.alignment is None:
        return ""
    df = report.alignment
    n = int(df.loc[df["target"] == diagnostics.OWN_CLASS, "n"].sum()) // max(
        1, df["model"].nunique()
    )
    desc = (
        " and to the image's own object and background descriptions from the teacher"
        if diagnostics.OBJECT in set(df["target"])
        else " (pass <code>--descriptions STORE</code> to add the cosines to the teacher's object "
        "and background descriptions)"
    )
    cap = (
        f"<b>Alignment.</b> Mean cosine between image embeddings and the class prompts{desc}, "
        f"per group, before (pre-trained) and after fine-tuning; {n} images of the "
        f"{html.escape(report.alignment_source or '')}, the same for every model. Error "
        "bars: std over the images. The margin (cosine to the own class prompt minus cosine "
        "to the other class prompt) is what the zero-shot classifier reads: positive = "
        "classified right. Cosines of different models are not on one scale: compare object "
        "vs background within a model, and how the gap changes with fine-tuning. The table "
        "gives every number, the other-class cosine included."
    )
    return (
        "<h2>Alignment diagnostics</h2>"
        + _figure(report.files["alignment.png"], cap, "alignment diagnostics")
        + alignment_table_html(diagnostics.alignment_pivot(df))
    )


def _saliency_section(report: Report) -> str:
    figs = [p for k, p in report.files.items() if k.startswith("saliency/")]
    if not figs:
        return ""
    intro = (
        '<p class="note"><b>Where each model looks</b> on the images above: for each model '
        "(pre-trained, then the first seed of each fine-tuned method), the attention rollout "
        "(Abnar &amp; Zuidema 2020: how much each patch flows into the image embedding; it does "
        "not depend on the prompt) and Grad-CAM for the predicted class prompt (on the tokens "
        "entering the last block). Red = more. Titles: the prediction and the class "
        "probabilities, green when right, red when wrong. The leftmost panel is the image "
        "as the model sees it (resized and cropped).</p>"
    )
    figures = "".join(_figure(p, html.escape(p.stem.replace("_", " ")), p.stem) for p in figs)
    return "<h2>Saliency maps</h2>" + intro + figures


def _notes_section(report: Report) -> str:
    if not report.notes:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return f'<h2>Left out</h2><ul class="warn">{items}</ul>'


def _intro(report: Report) -> str:
    runs = [r for m in report.table.columns for r in m.runs]
    splits = sorted({r.record.split or "?" for r in runs})
    roots = sorted({str(r.data_root()) for r in runs if r.data_root() is not None})
    where = f" on the {'/'.join(splits)} split of <code>{html.escape(', '.join(roots))}</code>"
    return (
        f'<p class="note">{len(report.table.columns)} method(s), {len(runs)} run(s)'
        f"{where if roots else ''}. Files beside this page: results.md, results.csv, "
        "results.tex, summary.json and every figure as PNG.</p>"
    )


def write_html(report: Report) -> Path:
    """Write ``report.html`` into the report's folder and return its path."""
    body = "".join(
        [
            "<h1>lga report</h1>",
            _intro(report),
            _results_section(report),
            _group_section(report),
            _probs_section(report),
            _alignment_section(report),
            _saliency_section(report),
            _notes_section(report),
        ]
    )
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>lga report'
        f"</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )
    path = report.out / "report.html"
    path.write_text(page, encoding="utf-8")
    log.info("wrote %s (%d kB)", path, len(page) // 1024)
    return path
