"""``lga report``: run directories in, tables, figures and a self-contained HTML page out.

Always written (from ``metrics.json`` and ``predictions.parquet`` alone, no model needed):
``results.md``, ``results.csv``, ``results.tex``, ``summary.json``, ``group_accuracy.png`` and,
when the dataset's images are reachable through the runs' ``data.root``, ``class_probs.png``.
When the base checkpoint and the runs' ``model/`` folders load: ``alignment.png`` +
``alignment.csv`` and saliency maps (``saliency/*.png``). A part that cannot be made is left out
with a note in the log, in ``summary.json`` and in ``report.html``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lga.config import StudentConfig
from lga.data.dataset import GroupDataset, load_dataset
from lga.data.dataset_config import DatasetConfig, load_dataset_config
from lga.errors import LgaError
from lga.outputs import make_output_dir
from lga.report import diagnostics, plots
from lga.report import table as tables
from lga.report.model import Report, ReportOptions
from lga.report.runs import MethodRuns, Run, group_runs, load_runs
from lga.student.model import Student, load_student

log = logging.getLogger(__name__)

PRETRAINED = "pre-trained"


# ---------------------------------------------------------------------------------------------
# Tables


def write_tables(table: tables.ResultsTable, out: Path) -> dict[str, Path]:
    """``results.md``, ``results.csv`` (fractions), ``results.tex``."""
    files = {
        "results.md": out / "results.md",
        "results.csv": out / "results.csv",
        "results.tex": out / "results.tex",
    }
    files["results.md"].write_text(tables.to_markdown(table))
    tables.to_long_frame(table).to_csv(files["results.csv"], index=False)
    files["results.tex"].write_text(tables.to_latex(table))
    return files


# ---------------------------------------------------------------------------------------------
# The dataset behind the runs


def _dataset(runs: Sequence[Run]) -> GroupDataset | None:
    """The runs' dataset (metadata only, images not decoded), or None when not reachable."""
    for r in runs:
        root = r.data_root()
        if root is not None and (root / "metadata.csv").is_file():
            return load_dataset(root, r.dataset_config(), check_images=False, skip_bad_rows=True)
    return None


def _spec(runs: Sequence[Run], ds: GroupDataset | None) -> DatasetConfig | None:
    if ds is not None:
        return ds.config
    for r in runs:
        try:
            return load_dataset_config(r.dataset_config(), r.data_root())
        except LgaError:
            continue
    return None


def _templates(spec: DatasetConfig, run: Run) -> list[str]:
    single = run.templates == "single"
    return spec.class_templates[:1] if single else list(spec.class_templates)


# ---------------------------------------------------------------------------------------------
# Chosen images


def _reference(columns: list[MethodRuns]) -> MethodRuns:
    """The pre-trained reference: the first zero-shot column, else the first column."""
    return next((m for m in columns if m.is_zero_shot), columns[0])


def pick_images(
    preds: pd.DataFrame, group: str, n: int, *, among: set[int] | None = None
) -> list[int]:
    """``n`` img_ids of ``group``, evenly spaced over the group's ids in sorted order.

    Deterministic, and blind to what any model predicts (no cherry-picking).
    """
    ids = np.sort(preds.loc[preds["group"] == group, "img_id"].to_numpy())
    if among is not None:
        ids = ids[np.isin(ids, sorted(among))]
    if len(ids) <= n:
        return ids.tolist()
    return ids[np.linspace(0, len(ids) - 1, n).round().astype(int)].tolist()


def _predictions(columns: list[MethodRuns]) -> dict[str, pd.DataFrame]:
    """Per column label, the first seed's predictions, indexed by img_id."""
    return {m.label: m.runs[0].predictions().set_index("img_id") for m in columns}


def choose_images(
    columns: list[MethodRuns], preds: dict[str, pd.DataFrame], opts: ReportOptions
) -> tuple[list[int], str | None]:
    """The chosen img_ids and the group they come from (None when given by the user)."""
    if opts.images:
        return list(opts.images), None
    ref = _reference(columns)
    group = ref.runs[0].record.worst_group
    common = set.intersection(*(set(p.index) for p in preds.values()))
    return pick_images(preds[ref.label].reset_index(), group, opts.n_images, among=common), group


# ---------------------------------------------------------------------------------------------
# Class probabilities


def _probs_of(df: pd.DataFrame, img_id: int, classes: Sequence[str]) -> np.ndarray | None:
    cols = [f"prob_{c}" for c in classes]
    if img_id not in df.index or not set(cols) <= set(df.columns):
        return None
    return df.loc[img_id, cols].to_numpy(dtype=float)


def _classes(preds: pd.DataFrame) -> list[str]:
    return [c.removeprefix("prob_") for c in preds.columns if c.startswith("prob_")]


def class_probs_items(
    columns: list[MethodRuns],
    preds: dict[str, pd.DataFrame],
    ids: Sequence[int],
    ds: GroupDataset | None,
    pretrained: dict[int, np.ndarray] | None,
) -> list[plots.ImageProbs]:
    """The probabilities each column's first seed gives each chosen image, pre-trained first."""
    ref = _reference(columns)
    classes = _classes(preds[ref.label])
    order = [ref] + [m for m in columns if m is not ref] if ref.is_zero_shot else columns
    items = []
    for i in ids:
        row = next(p.loc[i] for p in preds.values() if i in p.index)
        probs: dict[str, np.ndarray | None] = {}
        if pretrained is not None and not ref.is_zero_shot:
            probs[f"{PRETRAINED} (zero-shot)"] = pretrained.get(i)
        for m in order:
            name = f"{PRETRAINED} ({m.label})" if m.is_zero_shot else m.label
            probs[name] = _probs_of(preds[m.label], i, classes)
        items.append(
            plots.ImageProbs(int(i), str(row["group"]), int(row["y"]), _image(ds, i), probs)
        )
    return items


def _image(ds: GroupDataset | None, img_id: int):
    if ds is None:
        return None
    pos = np.flatnonzero(ds.img_ids == img_id)
    if not len(pos):
        return None
    try:
        return ds.load_image(int(pos[0]))
    except (OSError, ValueError) as e:
        log.warning("cannot load image %s: %s", img_id, e)
        return None


# ---------------------------------------------------------------------------------------------
# Models: the pre-trained bases and the fine-tuned runs


class Models:
    """Students loaded on demand and kept for reuse (alignment and saliency share them)."""

    def __init__(self, device: str):
        self.device = device
        self._loaded: dict[str, Student] = {}

    def get(self, spec: str) -> Student:
        if spec not in self._loaded:
            self._loaded[spec] = load_student(StudentConfig(spec=spec, device=self.device))
        return self._loaded[spec]


def model_pairs(
    columns: list[MethodRuns], models: Models, report: Report
) -> list[tuple[str, Student]]:
    """(label, student): each base checkpoint (pre-trained), then the first seed's ``model/`` of
    each fine-tuned method. A model that does not load is left out with a note."""
    bases = list(dict.fromkeys(m.base for m in columns))
    pairs: list[tuple[str, Student]] = []
    for base in bases:
        _try_load(
            pairs, _pretrained_label(base, len(bases)), _local_base(columns, base), models, report
        )
    for m in (m for m in columns if m.fine_tunes):  # the others' model/ is the base
        run = next((r for r in m.runs if r.model_dir is not None), None)
        if run is not None:
            _try_load(pairs, m.label, str(run.model_dir), models, report)
    return pairs


def _local_base(columns: list[MethodRuns], base: str) -> str:
    """A local copy of ``base`` when a run that trains nothing saved one (``lga fit`` zero-shot
    and linear-probe runs do), else ``base`` itself."""
    copies = (r.model_dir for m in columns if m.base == base and not m.fine_tunes for r in m.runs)
    return str(next((d for d in copies if d is not None), base))


def model_colors(columns: list[MethodRuns]) -> dict[str, str]:
    """The table's column colours, the pre-trained model(s) taking the zero-shot colour."""
    colors = plots.method_colors([m.label for m in columns])
    zero = next((colors[m.label] for m in columns if m.is_zero_shot), "#555555")
    bases = list(dict.fromkeys(m.base for m in columns))
    for base in bases:
        colors[_pretrained_label(base, len(bases))] = zero
    return colors


def _pretrained_label(base: str, n_bases: int) -> str:
    return PRETRAINED if n_bases == 1 else f"{PRETRAINED} [{base.rstrip('/').split('/')[-1]}]"


def _try_load(pairs: list, label: str, spec: str, models: Models, report: Report) -> None:
    try:
        pairs.append((label, models.get(spec)))
    except LgaError as e:
        report.note(f"{label}: cannot load {spec}: {e}")


def pretrained_probs(
    student: Student, ds: GroupDataset, ids: Sequence[int], templates: Sequence[str]
) -> dict[int, np.ndarray]:
    """Zero-shot class probabilities of a few images (when no zero-shot run was given)."""
    import torch

    from lga.evaluation.zero_shot import zero_shot_probs
    from lga.student.model import class_text_features

    sub = ds.select(np.flatnonzero(np.isin(ds.img_ids, list(ids))))
    imgs = [sub.load_image(k) for k in range(len(sub))]
    with torch.no_grad():
        cls = class_text_features(student, ds.config.classes, templates).cpu()
    probs = zero_shot_probs(student.encode_images(imgs), cls, student.logit_scale().cpu())
    return dict(zip(sub.img_ids.tolist(), probs, strict=True))


# ---------------------------------------------------------------------------------------------
# The report


def build_report(
    paths: Sequence[str | Path], out: str | Path, opts: ReportOptions | None = None
) -> Report:
    """Write the whole report for run directories ``paths`` into ``out``.

    Args:
        paths: run directories (a folder without ``metrics.json`` stands for those below it).
        out: the output folder (created).
        opts: what to make besides the tables (defaults: everything that can be made).

    Returns:
        The written files and the notes about parts left out.
    """
    opts = opts or ReportOptions()
    out = Path(out)
    make_output_dir(out, what="report folder")
    runs = load_runs(paths)
    columns = group_runs(runs)
    report = Report(out, tables.results_table(columns))
    report.files.update(write_tables(report.table, out))
    report.files["group_accuracy.png"] = plots.group_accuracy_plot(
        report.table, out / "group_accuracy.png", dpi=opts.dpi
    )
    ds = _dataset(runs)
    if ds is None:
        report.note(
            "the runs' dataset (config.yaml data.root) is not reachable: no images, "
            "no alignment diagnostics, no saliency maps"
        )
    models = Models(opts.device)
    _class_probs_part(report, columns, ds, models, opts)
    if ds is not None:
        pairs = model_pairs(columns, models, report) if (opts.alignment or opts.saliency) else []
        _alignment_part(report, columns, ds, pairs, opts)
        _saliency_part(report, columns, ds, pairs, opts)
    _write_summary(report)
    from lga.report.html import write_html

    report.files["report.html"] = write_html(report)
    return report


def _class_probs_part(
    report: Report,
    columns: list[MethodRuns],
    ds: GroupDataset | None,
    models: Models,
    opts: ReportOptions,
) -> None:
    try:
        preds = _predictions(columns)
    except LgaError as e:
        report.note(f"no class-probability figure: {e}")
        return
    ids, group = choose_images(columns, preds, opts)
    report.chosen, report.chosen_group = ids, group
    report.chosen_from = _reference(columns).label
    if not ids:
        report.note("no image to show in the class-probability figure")
        return
    spec = _spec([r for m in columns for r in m.runs], ds)
    ref = _reference(columns)
    classes = _classes(preds[ref.label])
    template = spec.class_templates[0] if spec else "a photo of a {}."
    pre = None
    if not ref.is_zero_shot and ds is not None:
        try:
            student = models.get(_local_base(columns, ref.base))
            pre = pretrained_probs(student, ds, ids, _templates(ds.config, ref.runs[0]))
        except LgaError as e:
            report.note(f"no pre-trained probabilities (no zero-shot run, base not loadable): {e}")
    items = class_probs_items(columns, preds, ids, ds, pre)
    prompts = [template.format(c) for c in classes]
    report.files["class_probs.png"] = plots.class_probs_plot(
        items, prompts, report.out / "class_probs.png", dpi=opts.dpi
    )


def _alignment_part(
    report: Report,
    columns: list[MethodRuns],
    ds: GroupDataset,
    pairs: list[tuple[str, Student]],
    opts: ReportOptions,
) -> None:
    if not opts.alignment:
        return
    if not any(
        label != PRETRAINED and not label.startswith(f"{PRETRAINED} [") for label, _ in pairs
    ):
        report.note("no alignment diagnostics: no run has a fine-tuned model/ folder")
        return
    try:
        sample = diagnostics.build_sample(
            ds,
            split=opts.alignment_split,
            per_group=opts.alignment_per_group,
            store=opts.descriptions,
            teacher=opts.teacher,
        )
    except LgaError as e:
        report.note(f"no alignment diagnostics: {e}")
        return
    templates = _templates(ds.config, columns[0].runs[0])
    df = diagnostics.alignment_frame(pairs, sample, templates=templates)
    report.alignment, report.alignment_source = df, sample.source
    df.to_csv(report.out / "alignment.csv", index=False)
    report.files["alignment.csv"] = report.out / "alignment.csv"
    report.files["alignment.png"] = plots.alignment_plot(
        df,
        report.out / "alignment.png",
        colors=model_colors(columns),
        targets=diagnostics.PLOTTED,
        dpi=opts.dpi,
    )


def _saliency_part(
    report: Report,
    columns: list[MethodRuns],
    ds: GroupDataset,
    pairs: list[tuple[str, Student]],
    opts: ReportOptions,
) -> None:
    if not opts.saliency or not pairs or not report.chosen:
        return
    from lga.report.explain import write_saliency_figures

    pos = [int(np.flatnonzero(ds.img_ids == i)[0]) for i in report.chosen if i in set(ds.img_ids)]
    images = [ds.load_image(p) for p in pos]
    names = [f"img_{ds.img_ids[p]}" for p in pos]
    titles = [
        f"img {ds.img_ids[p]} · {tables.group_display(ds.config.group_name(ds.y[p], ds.place[p]))}"
        for p in pos
    ]
    paths = write_saliency_figures(
        pairs,
        images,
        names,
        report.out / "saliency",
        class_names=ds.config.classes,
        templates=_templates(ds.config, columns[0].runs[0]),
        true_classes=[int(ds.y[p]) for p in pos],
        titles=titles,
        dpi=opts.dpi,
    )
    for p in paths:
        report.files[f"saliency/{p.name}"] = p


def _write_summary(report: Report) -> None:
    data = tables.summary(report.table)
    data["chosen_images"] = {"img_ids": report.chosen, "group": report.chosen_group}
    data["files"] = sorted([*report.files, "summary.json", "report.html"])
    data["notes"] = report.notes
    path = report.out / "summary.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    report.files["summary.json"] = path
