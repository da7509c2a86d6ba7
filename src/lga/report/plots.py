"""The report's figures: group accuracies, class probabilities of chosen images, alignment.

Every function draws one figure and saves it as PNG. Figures are built as
``matplotlib.figure.Figure`` objects, not through pyplot: no backend is selected and no global
state is touched, so importing this module in a notebook leaves its inline figures alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from lga.report.table import ResultsTable, group_display

log = logging.getLogger(__name__)

DPI = 130
WORST_COLOR = "#c0392b"
TRUE_COLOR, OTHER_COLOR = "#2e86c1", "#b3b6b7"


# tab10 without its red, which marks worst groups.
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def _colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def method_colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per table column, the same in every figure."""
    return dict(zip(labels, _colors(len(labels)), strict=True))


def _bars(
    ax,
    pos: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    width: float,
    color: str,
    label: str | None = None,
) -> None:
    """Bars with error bars where a std exists (none for a single seed)."""
    ax.bar(pos, mean, width, color=color, label=label)
    ok = ~np.isnan(std) & ~np.isnan(mean)
    if ok.any():
        ax.errorbar(
            pos[ok], mean[ok], yerr=std[ok], fmt="none", ecolor="black", elinewidth=0.8, capsize=2
        )


def subplots(nrows: int, ncols: int, *, figsize, layout: str | None = None, **kw):
    """``pyplot.subplots`` without pyplot: a ``Figure`` (no backend, no global figure list)."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kw)


def _save(fig, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi)
    log.info("wrote %s", path)
    return path


# ---------------------------------------------------------------------------------------------
# Group accuracies


def _group_means(table: ResultsTable, label: str, groups: list[str]) -> tuple[np.ndarray, ...]:
    stats = [table.stats(label, f"group_accuracy/{g}") for g in groups]
    mean = np.array([s[0] for s in stats]) * 100
    std = np.array([s[1] for s in stats]) * 100
    return mean, std


def group_accuracy_plot(table: ResultsTable, path: str | Path, *, dpi: int = DPI) -> Path:
    """Grouped bars: accuracy per group (x) per method (colour), ± std over seeds; each
    method's worst group (lowest mean) outlined and labelled. A right panel puts overall,
    weighted and worst-group accuracy side by side."""
    groups, counts = table.groups, table.group_counts
    cols = table.columns
    fig, (ax, ax2) = subplots(
        1,
        2,
        figsize=(max(9.0, 2.2 * len(groups) + 5), 4.8),
        gridspec_kw={"width_ratios": [max(2.0, len(groups) * 0.8), 1.6]},
        layout="constrained",
    )
    width = 0.8 / max(1, len(cols))
    x = np.arange(len(groups))
    for k, (m, color) in enumerate(zip(cols, _colors(len(cols)), strict=True)):
        mean, std = _group_means(table, m.label, groups)
        pos = x - 0.4 + width * (k + 0.5)
        _bars(ax, pos, mean, std, width, color, m.label)
        _mark_worst(ax, pos, mean, std, width, vertical=len(cols) > 4)
    ax.set_xticks(x, [_tick(g, counts.get(g)) for g in groups])
    _percent_axis(ax, "accuracy per group (mean ± std over seeds)")
    ax.plot([], [], "v", color=WORST_COLOR, label="worst group of the method")
    _headline_panel(ax2, table)
    fig.legend(loc="outside upper center", ncols=min(6, len(cols) + 1), fontsize=9, frameon=False)
    return _save(fig, Path(path), dpi)


def _tick(group: str, count: int | None) -> str:
    name = group_display(group).replace(" on ", "\non ")
    return f"{name}\n(n={count})" if count else name


def _mark_worst(
    ax, pos: np.ndarray, mean: np.ndarray, std: np.ndarray, width: float, *, vertical: bool = False
) -> None:
    """Outline the lowest bar and label its value above a marker; ``vertical`` turns the label
    so that neighbouring columns' labels do not overlap when the bars are narrow."""
    if np.all(np.isnan(mean)):
        return
    k = int(np.nanargmin(mean))
    ax.bar(pos[k], mean[k], width, fill=False, edgecolor=WORST_COLOR, linewidth=2)
    top = min(mean[k] + np.nan_to_num(std[k]), 100.0)  # the label stays inside the axes
    ax.plot(pos[k], top + 4, "v", color=WORST_COLOR, markersize=7)
    ax.text(
        pos[k],
        top + 6.5,
        f"{mean[k]:.1f}",
        ha="center",
        va="bottom",
        fontsize=8,
        color=WORST_COLOR,
        fontweight="bold",
        rotation=90 if vertical else 0,
    )


def _percent_axis(ax, title: str) -> None:
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _headline_panel(ax, table: ResultsTable) -> None:
    metrics = [
        ("accuracy", "overall"),
        ("weighted_accuracy", "weighted\n(train mix)"),
        ("worst_group_accuracy", "worst group"),
    ]
    cols = table.columns
    width = 0.8 / max(1, len(cols))
    x = np.arange(len(metrics))
    for k, (m, color) in enumerate(zip(cols, _colors(len(cols)), strict=True)):
        stats = [table.stats(m.label, key) for key, _ in metrics]
        mean = np.array([s[0] for s in stats]) * 100
        std = np.array([s[1] for s in stats]) * 100
        _bars(ax, x - 0.4 + width * (k + 0.5), mean, std, width, color)
    ax.set_xticks(x, [name for _, name in metrics])
    _percent_axis(ax, "overall and worst group")


# ---------------------------------------------------------------------------------------------
# Class probabilities of chosen images


@dataclass
class ImageProbs:
    """The class probabilities several models give one image.

    Attributes:
        img_id: the image's id.
        group: its ``"<class>/<place>"`` group.
        y: its true class index.
        image: the picture, or None when the dataset is not reachable.
        probs: model label -> (C,) probabilities, pre-trained first.
    """

    img_id: int
    group: str
    y: int
    image: Image.Image | None
    probs: dict[str, np.ndarray]


def class_probs_plot(
    items: Sequence[ImageProbs], prompts: Sequence[str], path: str | Path, *, dpi: int = DPI
) -> Path:
    """One row per image: the picture, then per model horizontal bars of the probability of each
    class prompt (true class in blue), as on the source slides."""
    models = list(items[0].probs)
    n_cols = len(models) + 1
    fig, axes = subplots(
        len(items),
        n_cols,
        figsize=(1.9 + 3.1 * len(models), 1.75 * len(items) + 0.5),
        squeeze=False,
        gridspec_kw={"width_ratios": [0.55] + [1] * len(models)},
        layout="constrained",
    )
    for r, item in enumerate(items):
        _image_cell(axes[r][0], item)
        for c, model in enumerate(models):
            _prob_bars(
                axes[r][c + 1],
                item.probs.get(model),
                item.y,
                prompts,
                title=model if r == 0 else None,
                show_prompts=c == 0,
            )
    axes[0][0].set_title("test image", fontsize=10)
    fig.suptitle(
        "class probabilities (blue: the true class; ✓/✗: the prediction is right/wrong)",
        fontsize=10,
        color="#444",
    )
    return _save(fig, Path(path), dpi)


def _image_cell(ax, item: ImageProbs) -> None:
    if item.image is not None:
        ax.imshow(item.image)
    else:
        ax.text(0.5, 0.5, "image not\nfound", ha="center", va="center", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"img {item.img_id}\n{group_display(item.group)}", fontsize=8)


def _prob_bars(
    ax,
    probs: np.ndarray | None,
    y: int,
    prompts: Sequence[str],
    *,
    title: str | None,
    show_prompts: bool,
) -> None:
    pos = np.arange(len(prompts))[::-1]  # first prompt on top
    if probs is None:
        ax.text(
            0.5,
            0.5,
            "not in this run's predictions",
            ha="center",
            va="center",
            fontsize=8,
            transform=ax.transAxes,
        )
        probs = np.zeros(len(prompts))
    colors = [TRUE_COLOR if k == y else OTHER_COLOR for k in range(len(prompts))]
    ax.barh(pos, probs, color=colors, height=0.6)
    for p, v in zip(pos, probs, strict=True):
        inside = v > 0.78
        ax.text(
            v - 0.02 if inside else v + 0.02,
            p,
            f"{v:.3f}",
            va="center",
            ha="right" if inside else "left",
            fontsize=9,
            color="white" if inside else "black",
        )
    ax.set_xlim(0, 1)
    ax.set_yticks(pos, prompts if show_prompts else [""] * len(prompts), fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ok = probs.argmax() == y and probs.any()
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    ax.text(
        1.0,
        0.02,
        "✓" if ok else "✗",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=12,
        color="#1e8449" if ok else WORST_COLOR,
    )


# ---------------------------------------------------------------------------------------------
# Alignment


def alignment_plot(
    df: pd.DataFrame,
    path: str | Path,
    *,
    colors: dict[str, str] | None = None,
    targets: Sequence[str] | None = None,
    dpi: int = DPI,
) -> Path:
    """One panel per target (class-prompt margin, own class prompt, object / background
    description): mean cosine per group (x) per model (colour), error bars = std over the
    images of the group.

    Args:
        df: ``lga.report.diagnostics.ALIGNMENT_COLUMNS`` rows.
        path: the PNG.
        colors: model -> colour (default: the palette in order).
        targets: the targets to draw, in order (default: all in ``df``).
    """
    targets = [t for t in (targets or dict.fromkeys(df["target"])) if t in set(df["target"])]
    models = list(dict.fromkeys(df["model"]))
    groups = list(dict.fromkeys(df["group"]))
    n = len(targets)
    n_cols = min(n, 2)
    fig, axes = subplots(
        math.ceil(n / n_cols),
        n_cols,
        figsize=(6.2 * n_cols, 3.6 * math.ceil(n / n_cols)),
        squeeze=False,
        layout="constrained",
    )
    width = 0.8 / len(models)
    x = np.arange(len(groups))
    colors = {**method_colors(models), **(colors or {})}
    for ax, target in zip(axes.flat, targets, strict=False):
        sub = df[df["target"] == target].set_index(["model", "group"])
        for k, m in enumerate(models):
            color = colors[m]
            vals = [sub["mean_cos"].get((m, g), np.nan) for g in groups]
            errs = [sub["std_cos"].get((m, g), 0.0) for g in groups]
            ax.bar(
                x - 0.4 + width * (k + 0.5),
                vals,
                width,
                yerr=errs,
                color=color,
                label=m,
                capsize=2,
                error_kw={"elinewidth": 0.7},
            )
        ax.set_xticks(x, [group_display(g).replace(" on ", "\non ") for g in groups], fontsize=8)
        ax.set_title(
            target if target.startswith("margin") else f"cosine: image ↔ {target}", fontsize=10
        )
        ax.set_ylabel("mean cosine" if not target.startswith("margin") else "mean difference")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.legend(
        *axes.flat[0].get_legend_handles_labels(),
        loc="outside upper center",
        ncols=min(6, len(models)),
        fontsize=9,
        frameon=False,
    )
    return _save(fig, Path(path), dpi)
