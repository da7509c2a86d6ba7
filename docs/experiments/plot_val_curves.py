"""Validation worst group against training step, mean over seeds (band: min to max), per recipe.

Usage:

    python docs/experiments/plot_val_curves.py OUT.png "TITLE" LABEL=RUN_PREFIX [...] \
        [--panel "TITLE" LABEL=RUN_PREFIX ...]

RUN_PREFIX-seed<N> are run folders written by ``recipe_sweep.py``; their ``train_log.jsonl``
holds every validation. Only validation figures are drawn.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def curves(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, (seeds, steps) validation worst group) of the runs ``prefix-seed*``."""
    runs = sorted(Path(prefix).parent.glob(Path(prefix).name + "-seed*"))
    if not runs:
        raise SystemExit(f"no runs {prefix}-seed*")
    rows = []
    for run in runs:
        log = [json.loads(s) for s in (run / "train_log.jsonl").read_text().splitlines() if s]
        rows.append([(r["step"], r["val"]["worst_group_accuracy"]) for r in log if "val" in r])
    steps = np.array([s for s, _ in rows[0]])
    return steps, 100 * np.array([[v for _, v in r] for r in rows])


def main(argv: list[str]) -> None:
    out, panels = Path(argv[0]), []
    for a in argv[1:]:
        if a == "--panel":
            continue
        if "=" not in a:
            panels.append((a, []))
        else:
            panels[-1][1].append(a.split("=", 1))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), sharey=True)
    for ax, (title, series) in zip(np.atleast_1d(axes), panels, strict=True):
        for label, prefix in series:
            steps, v = curves(prefix)
            line = ax.plot(steps, v.mean(0), marker="o", ms=3, label=f"{label} (n={len(v)})")[0]
            ax.fill_between(steps, v.min(0), v.max(0), color=line.get_color(), alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    np.atleast_1d(axes)[0].set_ylabel("validation worst-group accuracy (%)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
