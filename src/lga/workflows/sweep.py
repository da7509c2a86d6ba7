"""``lga sweep``: accuracy against the number of training images, per method (the slides' next
step).

Each size is one reproduction (every method over the config's seeds) into ``OUT/n<size>``, so a
sweep resumes like a reproduction; the figure plots worst-group and overall accuracy (mean ± std
over seeds) against the training-set size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lga.config import deep_merge
from lga.report.runs import load_runs
from lga.workflows.reproduce import ReproduceConfig, prepare_data, reproduce

log = logging.getLogger(__name__)


def sweep(
    cfg: ReproduceConfig,
    sizes: Sequence[int],
    out: str | Path,
    *,
    data_root: Path | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> dict[str, dict[int, dict[str, list[float]]]]:
    """Run the reproduction at every size (``jobs`` runs at once, as :func:`reproduce`); return
    ``{method: {size: {metric: [per seed]}}}``."""
    out = Path(out)
    results: dict[str, dict[int, dict[str, list[float]]]] = {}
    for n in sizes:
        teacher = cfg.teacher
        if teacher.spec and teacher.store is None:  # one store: each size reuses finished answers
            teacher = teacher.replace(store=out / "descriptions.sqlite")
        sized = cfg.model_copy(
            update={"fit": deep_merge(cfg.fit, {"sample": {"n_train": int(n)}}), "teacher": teacher}
        )
        if cfg.data.synth is not None and data_root is None:  # one world for every size
            data_root = prepare_data(sized, out, None, progress)
        for run in load_runs(
            reproduce(sized, out / f"n{n}", data_root=data_root, progress=progress, jobs=jobs)
        ):
            per = results.setdefault(run.name, {}).setdefault(int(n), {"worst": [], "overall": []})
            per["worst"].append(run.record.worst_group_accuracy)
            per["overall"].append(run.record.accuracy)
    (out / "sweep.json").write_text(json.dumps(results, indent=1))
    return results


def sweep_plot(results: dict, path: str | Path, *, dpi: int = 130) -> Path:
    """Worst-group and overall accuracy (%) against training images, one line per method."""
    from lga.report.plots import method_colors, subplots

    colors = method_colors(list(results))
    fig, axes = subplots(1, 2, figsize=(10, 4), sharey=True, layout="tight")
    for ax, metric, title in zip(
        axes, ("worst", "overall"), ("worst-group accuracy", "overall accuracy"), strict=True
    ):
        for method, by_size in results.items():
            sizes = sorted(by_size)
            mean = np.array([100 * np.mean(by_size[n][metric]) for n in sizes])
            std = np.array([100 * np.std(by_size[n][metric]) for n in sizes])
            ax.errorbar(
                sizes, mean, yerr=std, marker="o", capsize=3, label=method, color=colors[method]
            )
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=dpi)
    return Path(path)
