"""Recipes across worlds: mean validation worst group (best evaluation, as selection keeps it)
per world and over worlds; with ``--test``, the test worst group and unseen-place accuracy of
the selected checkpoints (mean ± std over seeds), for reporting recipes already chosen.

    python docs/experiments/world_table.py RECIPE[,RECIPE...] WORLD=DIR [WORLD=DIR ...] \
        [--seeds 0,1,2] [--test]

DIR holds recipe_sweep.py's runs (DIR/<recipe>-seed<N>); a recipe may live in any of a world's
DIRs (``WORLD=DIR1:DIR2``).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from recipe_sweep import val_curve  # this folder


def run_dir(dirs: list[Path], recipe: str, seed: int) -> Path:
    for d in dirs:
        if (d / f"{recipe}-seed{seed}" / "metrics.json").is_file():
            return d / f"{recipe}-seed{seed}"
    raise SystemExit(f"no finished run {recipe}-seed{seed} under {', '.join(map(str, dirs))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes")
    p.add_argument("worlds", nargs="+")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--test", action="store_true")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    worlds = {w.split("=")[0]: [Path(d) for d in w.split("=")[1].split(":")] for w in a.worlds}
    print(
        f"{'recipe':28s}", " ".join(f"{w:>7s}" for w in worlds), f"{'mean':>7s}   (val worst group)"
    )
    for r in a.recipes.split(","):
        vals = [np.mean([max(c[1] for c in val_curve(run_dir(d, r, s))) for s in seeds])
                for d in worlds.values()]  # fmt: skip
        print(f"{r:28s}", " ".join(f"{100 * v:7.1f}" for v in vals), f"{100 * np.mean(vals):7.2f}")
    if not a.test:
        return
    print("\nTEST (reporting only): worst group / unseen places, mean ± std over seeds")
    for r in a.recipes.split(","):
        cells, means = [], []
        for d in worlds.values():
            m = [json.loads((run_dir(d, r, s) / "metrics.json").read_text()) for s in seeds]
            wg = 100 * np.array([x["worst_group_accuracy"] for x in m])
            un = 100 * np.array([x["unseen"]["accuracy"] for x in m])
            cells.append(f"{wg.mean():.2f} ± {wg.std(ddof=1):.2f} / {un.mean():.2f}")
            means.append((wg.mean(), un.mean()))
        mw, mu = np.mean(means, axis=0)
        print(f"{r:28s}", " | ".join(cells), f"| mean {mw:.2f} / {mu:.2f}")


if __name__ == "__main__":
    main()
