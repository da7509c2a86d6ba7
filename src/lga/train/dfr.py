"""DFR: deep feature reweighting (Kirichenko, Izmailov and Wilson, 2022), on frozen features.

The image encoder stays as trained (here: the pre-trained student); only a last layer is
retrained, by logistic regression on *group-balanced* subsets of the validation split (which
uses the validation split's group labels, as the paper does):

1. Tuning: the validation split is cut in two random halves (within each group, so that both
   hold every group: a small split's halves cannot miss one). For each ``C`` of the grid, a head
   is fitted on a group-balanced subset of one half (every class x place group down to the
   smallest one's count) and scored (``eval.select_by``, worst group by default) on the other.
2. The final head: ``subsets`` heads with the chosen ``C``, each on a new group-balanced subset
   of the whole validation split, features standardised with the whole split's statistics;
   their weights are averaged.

The head is saved like the linear probe's (``model/linear_probe.safetensors``), so ``lga eval``
of the run's model scores with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lga.data.dataset import GroupDataset
from lga.errors import DataError
from lga.train.config import DfrConfig, Method
from lga.train.linear_probe import LinearProbe, balanced_rows, train_head

log = logging.getLogger(__name__)


@dataclass
class DfrResult:
    """The averaged head, the tuning grid and how many images each stage used."""

    head: LinearProbe
    grid: list[dict]  # [{"C", "score"}], scores on the held-out half
    score: float  # the chosen C's
    held_out_metrics: dict  # the chosen C's tuning head on the held-out half
    n_tune_fit: int
    n_tune_held_out: int
    n_fit: int  # images per final subset


def _require_groups(ds: GroupDataset, groups: np.ndarray, where: str) -> None:
    missing = sorted(set(range(ds.config.n_groups)) - set(groups.tolist()))
    if missing:
        names = ", ".join(ds.config.group_names()[g] for g in missing)
        raise DataError(f"DFR needs images of every group in {where}; none of: {names}")


def _halves(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random halves of the rows, cut within every group (so both halves hold every group)."""
    held, tune = [], []
    for g in np.unique(groups):
        rows = rng.permutation(np.flatnonzero(groups == g))
        held.append(rows[: len(rows) // 2])
        tune.append(rows[len(rows) // 2 :])
    return np.sort(np.concatenate(held)), np.sort(np.concatenate(tune))


def fit_dfr(
    x: Tensor,
    val: GroupDataset,
    score: Callable[[GroupDataset, np.ndarray], tuple[dict, float]],
    cfg: DfrConfig,
    *,
    seed: int,
) -> DfrResult:
    """Tune ``C`` on halves of the validation split, then average heads on balanced subsets.

    Args:
        x: ``(N, D)`` normalised image features of ``val``, in its row order.
        val: the validation split (classes and group labels).
        score: (a part of ``val``, its ``(M, C)`` probabilities) -> (metrics, selection
            score), higher is better.
        cfg: grid, penalty, number of final subsets, iterations.
        seed: the random halves and subsets.

    Raises:
        DataError: a group has no validation image (in the whole split or in the fitting half).
    """
    groups, y = val.group, torch.as_tensor(val.y.copy(), dtype=torch.long)
    n_classes = len(val.config.classes)
    _require_groups(val, groups, f"the validation split of {val.root}")
    rng = np.random.default_rng(seed)
    held, tune = _halves(groups, rng)
    _require_groups(val, groups[held], "both halves of the validation split (too small)")
    fit_rows = tune[balanced_rows(groups[tune], rng)]
    held_ds = val.select(held)
    grid, best = [], None
    for c in cfg.c_grid:
        head = train_head(
            x[fit_rows], y[fit_rows], n_classes, C=c, penalty=cfg.penalty, max_iter=cfg.max_iter
        )
        metrics, s = score(held_ds, head.probs(x[held]))
        grid.append({"C": c, "score": s})
        log.info("DFR C=%g: held-out score %.4f", c, s)
        if best is None or s > best[1]:
            best = (c, s, metrics)
    c, s, held_metrics = best
    stats = (x.float().mean(dim=0), x.float().std(dim=0))
    weights, biases, n_fit = [], [], 0
    for _ in range(cfg.subsets):
        rows = balanced_rows(groups, rng)
        n_fit = len(rows)
        head = train_head(
            x[rows],
            y[rows],
            n_classes,
            C=c,
            penalty=cfg.penalty,
            stats=stats,
            max_iter=cfg.max_iter,
        )
        weights.append(head.weight)
        biases.append(head.bias)
    # The heads share one standardisation, so averaging the folded weights averages the heads.
    head = LinearProbe(
        torch.stack(weights).mean(dim=0),
        torch.stack(biases).mean(dim=0),
        C=c,
        penalty=cfg.penalty,
        info={"method": Method.DFR.value, "subsets": str(cfg.subsets)},
    )
    log.info("DFR: C=%g, %d subsets of %d validation images", c, cfg.subsets, n_fit)
    return DfrResult(head, grid, s, held_metrics, len(fit_rows), len(held), n_fit)
