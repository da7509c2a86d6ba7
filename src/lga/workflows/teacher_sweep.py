"""``lga sweep CONFIG --over teacher``: accuracy against the teacher's fault rate.

The slides' first hypothesis is that a teacher that reasons better makes a better student. With
the oracle teacher's faults (:mod:`lga.teacher.faults`) the teacher's quality is a dial: each
fault kind alone at several rates, and the ``llava-like`` preset scaled from 0 (a perfect
teacher) to 2x. Every point is one reproduction of the config's columns that read the teacher
(lga, spurious-aware, any recipe with balanced batches) over its seeds, on one world and one
description store (other rates are other store rows). The columns that never read the teacher
(zero-shot, linear probe, plain ERM, DFR) run once and are drawn as flat lines.

Writes ``OUT/teacher_sweep.json`` (``{column: {point: {metric: [per seed]}}}`` plus the points),
``OUT/report/teacher_sweep.png`` and ``OUT/report/teacher_sweep.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lga.errors import ConfigError
from lga.report.runs import load_runs
from lga.report.table import metric_value
from lga.teacher.faults import KINDS, PRESETS
from lga.workflows.reproduce import ReproduceConfig, prepare_data, reproduce, run_fit_config

log = logging.getLogger(__name__)

PRESET = "llava-like"
DEFAULT_RATES = (0.25, 0.5, 1.0)
DEFAULT_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0)
# metrics.json keys drawn, and how they read
METRICS = {
    "worst": ("worst_group_accuracy", "worst group"),
    "overall": ("accuracy", "overall"),
    "unseen": ("unseen/accuracy", "unseen backgrounds"),
}


@dataclass(frozen=True)
class Point:
    """One teacher: a curve (a fault kind, or the preset), its x value, the teacher options."""

    curve: str
    x: float
    options: dict

    @property
    def name(self) -> str:
        return f"{self.curve}-{self.x:g}"


def sweep_points(
    kinds: Sequence[str] = KINDS,
    rates: Sequence[float] = DEFAULT_RATES,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> list[Point]:
    """Each kind alone at each rate, then the preset at each scale (scale 0: perfect)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ConfigError(f"unknown fault kinds {bad}; choose among {', '.join(KINDS)}")
    if any(not 0 <= r <= 1 for r in rates) or any(s < 0 for s in scales):
        raise ConfigError("rates must lie in [0, 1] and scales be >= 0")
    points = [Point(k, float(r), {k: float(r)}) for k in kinds for r in rates if r > 0]
    points += [Point(PRESET, float(s), {"faults": PRESET, "fault_scale": float(s)}) for s in scales]
    return points


def reads_teacher(cfg: ReproduceConfig, name: str) -> bool:
    """Whether column ``name`` reads the teacher's answers (its result moves with the teacher)."""
    return run_fit_config(cfg, name, cfg.seeds[0], Path("."), Path("store")).reads_teacher


def _collect(run_dirs: list[Path]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for run in load_runs(run_dirs):
        per = out.setdefault(run.name, {k: [] for k in METRICS})
        for key, (dotted, _) in METRICS.items():
            v = metric_value(run.metrics, dotted)
            if v is not None:
                per[key].append(v)
    return out


def teacher_sweep(
    cfg: ReproduceConfig,
    out: str | Path,
    points: Sequence[Point],
    *,
    data_root: Path | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> dict:
    """Run every point (``jobs`` runs at once, as :func:`reproduce`); return (and write)
    ``{"points": [...], "fixed": {...}, "curves": ...}``.

    Raises:
        ConfigError: the config's teacher is not the oracle (only it has fault rates), or no
            column reads the teacher.
    """
    if cfg.teacher.spec != "oracle":
        raise ConfigError(
            f"the teacher sweep varies the oracle's fault rates; config {cfg.name!r} has teacher "
            f"{cfg.teacher.spec!r}"
        )
    out = Path(out)
    root = data_root or prepare_data(cfg, out, None, progress)
    moving = [n for n in cfg.methods if reads_teacher(cfg, n)]
    fixed = [n for n in cfg.methods if n not in moving]
    if not moving:
        raise ConfigError(f"no column of {cfg.name!r} reads the teacher: nothing to sweep")
    store = out / "descriptions.sqlite"
    results: dict = {"points": [p.__dict__ for p in points], "fixed": {}, "curves": {}}
    if fixed:
        base = cfg.model_copy(update={"methods": fixed, "teacher": cfg.teacher.replace(spec=None)})
        results["fixed"] = _collect(reproduce(base, out / "fixed", data_root=root,
                                              progress=progress, jobs=jobs))  # fmt: skip
    for p in points:
        log.info("teacher sweep: %s (%s)", p.name, p.options)
        teacher = cfg.teacher.replace(request_options=dict(p.options), store=store)
        point_cfg = cfg.model_copy(update={"methods": moving, "teacher": teacher})
        found = _collect(reproduce(point_cfg, out / "points" / p.name, data_root=root,
                                   progress=progress, jobs=jobs))  # fmt: skip
        for name, per in found.items():
            results["curves"].setdefault(name, {})[p.name] = per
        (out / "teacher_sweep.json").write_text(json.dumps(results, indent=1))
    return results


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return (100 * float(np.mean(xs)), 100 * float(np.std(xs))) if xs else (np.nan, np.nan)


def teacher_sweep_plot(results: dict, path: str | Path, *, dpi: int = 120) -> Path:
    """One row per curve (each fault kind, the preset scaled), one column per metric; lines for
    the columns that read the teacher, dashed flat lines for those that do not."""
    from lga.report.plots import method_colors, subplots

    points = [Point(**p) for p in results["points"]]
    curves = list(dict.fromkeys(p.curve for p in points))
    names = [*results["curves"], *results["fixed"]]
    colors = method_colors(names)
    fig, axes = subplots(len(curves), len(METRICS), figsize=(4.2 * len(METRICS),
                         2.9 * len(curves)), layout="constrained", squeeze=False)  # fmt: skip
    for row, curve in enumerate(curves):
        on = sorted((p for p in points if p.curve == curve), key=lambda p: p.x)
        xs = [p.x for p in on]
        for col, (metric, (_, title)) in enumerate(METRICS.items()):
            ax = axes[row][col]
            for name, by_point in results["curves"].items():
                stats = [_mean_std(by_point.get(p.name, {}).get(metric, [])) for p in on]
                # the perfect teacher (the preset at scale 0) starts every single-kind curve
                zero = by_point.get(f"{PRESET}-0", {}).get(metric, [])
                x0, s0 = ([0.0], [_mean_std(zero)]) if curve != PRESET and zero else ([], [])
                m = np.array([s[0] for s in s0 + stats])
                sd = np.array([s[1] for s in s0 + stats])
                ax.errorbar(x0 + xs, m, yerr=sd, marker="o", ms=3, capsize=2, label=name,
                            color=colors[name])  # fmt: skip
            for name, per in results["fixed"].items():
                mean, _ = _mean_std(per.get(metric, []))
                if not np.isnan(mean):
                    ax.axhline(mean, ls="--", lw=1, color=colors[name], label=name)
            ax.set_title(f"{title}", fontsize=9)
            ax.set_xlabel(f"{curve} scale" if curve == PRESET else f"{curve} rate", fontsize=8)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(8, len(labels)), fontsize=8)
    fig.savefig(path, dpi=dpi)
    return Path(path)


def teacher_sweep_table(results: dict) -> str:
    """Markdown: one row per (column, point), mean ± std over seeds of each metric (%)."""
    head = "| column | teacher | " + " | ".join(t for _, t in METRICS.values()) + " |"
    lines = [head, "|" + "---|" * (2 + len(METRICS))]

    def cells(per: dict) -> str:
        out = []
        for key in METRICS:
            m, s = _mean_std(per.get(key, []))
            out.append("–" if np.isnan(m) else f"{m:.1f} ± {s:.1f}")
        return " | ".join(out)

    for name, per in results["fixed"].items():
        lines.append(f"| {name} | (does not read it) | {cells(per)} |")
    for name, by_point in results["curves"].items():
        for point, per in by_point.items():
            lines.append(f"| {name} | {point} | {cells(per)} |")
    return "\n".join(lines)


def write_teacher_report(results: dict, out: str | Path, command: str) -> Path:
    """``OUT/report/teacher_sweep.{png,md}``."""
    report = Path(out) / "report"
    report.mkdir(parents=True, exist_ok=True)
    teacher_sweep_plot(results, report / "teacher_sweep.png")
    rates = {k: v.model_dump() for k, v in PRESETS.items()}
    text = (
        "# Student accuracy against the teacher's fault rate\n\n"
        f"Made by `{command}`. Test figures, mean ± std over seeds; checkpoints chosen on "
        "validation. Each fault kind alone (x: its rate), and the `llava-like` preset scaled "
        f"(x: the scale; presets: {json.dumps(rates)}).\n\n"
        "![teacher sweep](teacher_sweep.png)\n\n" + teacher_sweep_table(results) + "\n"
    )
    path = report / "teacher_sweep.md"
    path.write_text(text)
    return path
