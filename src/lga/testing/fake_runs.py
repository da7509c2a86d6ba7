"""Fake run directories with chosen group accuracies, for tests and for trying the report.

``write_fake_run`` writes ``metrics.json``, ``predictions.parquet`` and ``config.yaml`` exactly
as the run-directory contract has them (a FitConfig for a seeded run, an EvalRunConfig for an
unseeded one), with predictions that hit the requested accuracy in each group, so a test knows
every number the report should print.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lga.config import EvalRunConfig
from lga.data.dataset import GroupDataset
from lga.evaluation.metrics import group_metrics
from lga.rundir import RunDir
from lga.train.config import FitConfig, Method


def _probs(
    correct: np.ndarray, y: np.ndarray, n_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, C) probabilities whose argmax is y where ``correct`` and another class elsewhere."""
    pred = np.where(correct, y, (y + 1 + rng.integers(0, n_classes - 1, len(y))) % n_classes)
    top = rng.uniform(0.55, 0.99, len(y))
    probs = np.tile(((1 - top) / (n_classes - 1))[:, None], (1, n_classes))
    probs[np.arange(len(y)), pred] = top
    return probs


def _config(
    ds: GroupDataset, method: str, base: str, seed: int | None, split: str, n_train: int | None
) -> FitConfig | EvalRunConfig:
    common: dict[str, Any] = {"data": {"root": str(ds.root)}, "student": {"spec": base}}
    if seed is None:
        return EvalRunConfig.model_validate({**common, "method": method, "eval": {"split": split}})
    reads_store = method in (Method.LGA.value, Method.SPURIOUS_AWARE.value)
    return FitConfig.model_validate(
        {
            **common,
            "method": method,
            "sample": {"seed": seed, "n_train": n_train or 2000},
            "train": {"seed": seed},
            "descriptions": {"store": "descriptions.sqlite" if reads_store else None},
        }
    )


def write_fake_run(
    out: str | Path,
    ds: GroupDataset,
    *,
    method: str,
    group_accuracy: Mapping[str, float],
    base: str = "base-clip",
    seed: int | None = None,
    split: str = "test",
    model_dir: str | Path | None = None,
    n_train: int | None = None,
    rng_seed: int = 0,
) -> dict:
    """Write a run directory whose predictions on ``ds``'s ``split`` hit ``group_accuracy``.

    Args:
        out: the run directory (created).
        ds: the dataset (its ``split`` rows are predicted; counts set the reachable accuracies).
        method: the run's method.
        group_accuracy: ``{"<class>/<place>": fraction}``; in each group the first
            ``round(fraction * count)`` images (by img_id) are right.
        base: ``student.spec`` in ``config.yaml`` (the base checkpoint).
        seed: the ``lga fit`` run's ``sample.seed`` and ``train.seed``; None: an ``lga eval``
            run (no seed: it is its own).
        split: the split evaluated.
        model_dir: a checkpoint directory copied to ``out/model`` (a fine-tuned run).
        n_train: the training-set size recorded in ``metrics.json`` (as ``lga fit`` does).
        rng_seed: seeds the (irrelevant) probability values.

    Returns:
        The metrics written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sub = ds.split(split)
    names = [ds.config.group_name(y, p) for y, p in zip(sub.y, sub.place, strict=True)]
    correct = np.zeros(len(sub), dtype=bool)
    for g, acc in group_accuracy.items():
        idx = [i for i, n in enumerate(names) if n == g]
        correct[idx[: round(acc * len(idx))]] = True
    rng = np.random.default_rng(rng_seed)
    probs = _probs(correct, sub.y, len(ds.config.classes), rng)
    preds = pd.DataFrame(
        {
            "img_id": sub.img_ids,
            "y": sub.y,
            "place": sub.place,
            "group": names,
            "pred": probs.argmax(1),
        }
    )
    for k, c in enumerate(ds.config.classes):
        preds[f"prob_{c}"] = probs[:, k]
    rd = RunDir(out)
    rd.write_predictions(preds)
    train = ds.split("train")
    metrics = {
        "method": method,
        "student": str(rd.model_path) if model_dir else base,
        "split": split,
        **group_metrics(
            preds["pred"],
            sub.y,
            sub.place,
            classes=ds.config.classes,
            places=ds.config.places,
            train_group_counts=train.group_counts() if len(train) else None,
        ),
    }
    if n_train is not None:
        metrics["n_train"] = n_train
    rd.write_metrics(metrics)
    rd.write_config(_config(ds, method, base, seed, split, n_train))
    if model_dir is not None:
        shutil.copytree(model_dir, rd.model_path, dirs_exist_ok=True)
    return metrics
