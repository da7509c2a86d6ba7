"""Fine-tuning recipes on the demo world, compared on VALIDATION worst group only.

Usage (after `lga reproduce demo --out DEMO`, which writes DEMO/data and DEMO/descriptions.sqlite
for the seeds' samples):

    python docs/experiments/recipe_sweep.py DEMO GRID.yaml OUT [--seeds 0,1,2] [--student toy]

GRID.yaml maps a recipe name to ``{method: erm|lga|..., overrides: [KEY=VALUE, ...]}``; the
overrides go on top of the demo config's fit settings for that method, its ``method_overrides``
included (an erm recipe runs at the config's ERM lr unless it sets train.lr; each row prints the
lr it ran at) (``DEMO`` in them is replaced by the demo
folder, ``SEED`` by the seed, and any ``--var NAME=VALUE`` name by its value). For every
recipe and seed it runs `lga fit` in-process into OUT/<recipe>-seed<N> (finished runs are
kept) and prints, from train_log.jsonl, the validation worst group of the pre-trained model, the
best one over the evaluations (what checkpoint selection keeps) and at the last evaluation, as
mean over seeds. Test figures are
written by fit, as always, and this script reads them only with ``--test``, which is for reporting
recipes already chosen (ablations), never for choosing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import yaml

from lga.config import resolve_config
from lga.train import FitConfig, Method, fit
from lga.workflows.reproduce import load_reproduce_config, run_fit_config


def val_curve(run: Path) -> list[tuple[int, float, float]]:
    """(step, val worst group, val accuracy) of every evaluation in the run's train log."""
    rows = [json.loads(s) for s in (run / "train_log.jsonl").read_text().splitlines() if s]
    return [
        (r["step"], r["val"]["worst_group_accuracy"], r["val"]["accuracy"])
        for r in rows
        if "val" in r
    ]


def _fill(override: str, demo: Path, seed: int, variables: list[str]) -> str:
    """A recipe's override with DEMO, SEED and the --var names replaced."""
    for var in variables:
        name, _, value = var.partition("=")
        override = override.replace(name, value)
    return override.replace("DEMO", str(demo)).replace("SEED", str(seed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("demo", type=Path)
    p.add_argument("grid", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", default="0")
    p.add_argument("--config", default="demo")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--student", default=None, help="a toy checkpoint instead of the shipped one")
    p.add_argument("--set", action="append", default=[], help="reproduce-config overrides")
    p.add_argument(
        "--var",
        action="append",
        default=[],
        help="NAME=VALUE: NAME in a recipe's overrides becomes VALUE (SEED is always the seed)",
    )
    p.add_argument(
        "--test",
        action="store_true",
        help="also print test overall / worst group (mean ± std over seeds): for reporting "
        "recipes already chosen (ablations), never for choosing",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sets = list(args.set) + ([f"student.spec={args.student}"] if args.student else [])
    cfg = load_reproduce_config(args.config, quick=args.quick, overrides=sets)
    grid = yaml.safe_load(args.grid.read_text())
    seeds = [int(s) for s in args.seeds.split(",")]
    store = args.demo / "descriptions.sqlite"
    print(
        f"{'recipe':32s} {'lr':>7s} {'val wg: start':>13s} {'best':>6s} {'last':>6s} "
        f"{'val acc@best':>12s}  curve (seed {seeds[0]})"
    )
    for name, spec in grid.items():
        method = Method(spec["method"])
        stats = []
        for seed in seeds:
            run = args.out / f"{name}-seed{seed}"
            if not (run / "metrics.json").is_file():
                base = run_fit_config(cfg, method, seed, args.demo / "data", store)
                fc = resolve_config(
                    FitConfig,
                    base=base.model_dump(mode="json"),
                    overrides=[
                        _fill(o, args.demo, seed, args.var) for o in spec.get("overrides", [])
                    ],
                )
                fit(fc, run, overwrite=True, progress=False)
            curve = val_curve(run)
            best = max(curve, key=lambda c: c[1])  # first best, as selection does
            stats.append((curve[0][1], best[1], curve[-1][1], best[2], curve))
        m = np.mean([s[:4] for s in stats], axis=0)
        trace = " ".join(f"{c[0]}:{100 * c[1]:.0f}" for c in stats[0][4])
        if args.test:
            tests = [json.loads((args.out / f"{name}-seed{sd}" / "metrics.json").read_text())
                     for sd in seeds]  # fmt: skip
            acc = 100 * np.array([t["accuracy"] for t in tests])
            wg = 100 * np.array([t["worst_group_accuracy"] for t in tests])
            sd = lambda a: a.std(ddof=1) if len(a) > 1 else 0.0  # noqa: E731
            trace = (
                f"TEST overall {acc.mean():.2f} ± {sd(acc):.2f}, "
                f"worst {wg.mean():.2f} ± {sd(wg):.2f}"
            )
            if all("unseen" in t for t in tests):  # test images on places never seen in training
                un = 100 * np.array([t["unseen"]["accuracy"] for t in tests])
                trace += f", unseen {un.mean():.2f} ± {sd(un):.2f}"
        ran = yaml.safe_load((args.out / f"{name}-seed{seeds[0]}" / "config.yaml").read_text())
        print(
            f"{name:32s} {ran['train']['lr']:7.0e} "
            f"{100 * m[0]:13.1f} {100 * m[1]:6.1f} {100 * m[2]:6.1f} "
            f"{100 * m[3]:12.1f}  {trace}",
            flush=True,
        )


if __name__ == "__main__":
    main()
