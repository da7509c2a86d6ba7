"""DFR: deep feature reweighting (Kirichenko, Izmailov and Wilson, 2022), on frozen features.

The image encoder stays as it is (here: the pre-trained student); only a last layer is
retrained, by logistic regression on *group-balanced* subsets of the validation split, which
reads the validation split's group labels, as the paper does. The procedure is that of the
authors' ``dfr_evaluate_spurious.py`` (PolinaKirichenko/deep_feature_reweighting), "DFR on
validation" with its defaults (``balance_dfr_val=True``, ``notrain_dfr_val=True``):

1. Tuning (``dfr_on_validation_tune``): the validation rows are shuffled and cut in two halves
   (the first ``N // 2`` rows of the shuffle are held out, the rest fit): a shuffle of the whole
   split, not within groups. The fitting half is balanced (each group's rows shuffled, every
   group cut to the smallest one's count, concatenated in group order), a ``StandardScaler`` is
   fitted on that balanced subset and applied to both halves, and for each ``C`` of the grid
   (the reference's ``[1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]``) a liblinear logistic regression
   (``penalty="l1"``) is fitted and scored on the held-out half by ``eval.select_by`` (the
   reference: worst-group accuracy). The best ``C`` wins, ties to the first in grid order
   (``np.argmax``). One cut (the reference's ``num_retrains=1``).
2. The final head (``dfr_on_validation_eval``): a ``StandardScaler`` fitted on the *training*
   embeddings (here: the run's training sample, the images every other method trains on), then
   ``subsets`` (the reference: 20) heads with the chosen ``C``, each on a new balanced subset of
   the whole validation split standardised with that scaler; their ``coef_`` and
   ``intercept_`` are averaged.

The solver is scikit-learn's ``LogisticRegression(solver="liblinear")`` itself, as in the
reference: liblinear penalises the intercept like a weight (it is the weight of a constant
feature equal to ``intercept_scaling=1``), so the L1 penalty is ``|w|_1 + |b|``. Every random
draw (the shuffles, and liblinear's own seed, which scikit-learn draws from ``random_state``)
comes from one ``np.random.RandomState(seed)`` in the reference's order, so the test suite can
compare with a re-implementation of the reference's functions step by step.

Deliberately not copied (documented in the README):

- The reference's eval step shuffles ``arange(len(train))`` for training rows it then drops
  (``n_train = 0`` when ``notrain_dfr_val``): a no-op apart from consuming random numbers; it
  is left out, so the same seed gives other subsets than the reference script would.
- A group missing from one half (a small validation split) gives the reference an empty
  training set (liblinear fails) or a NaN worst-group accuracy that ``np.argmax`` then selects;
  here it is a :class:`DataError` naming the group.
- ``--balance_dfr_val`` and ``--notrain_dfr_val`` are ``type=bool`` flags in the reference, so
  ``--balance_dfr_val False`` still balances; only the defaults are reproduced.
- More than two classes: the reference is binary (``class_weight={0: .., 1: ..}``) and recent
  scikit-learn refuses liblinear for three classes or more; each class then gets its own
  one-vs-rest liblinear head (what liblinear did inside older scikit-learn), and probabilities
  are the softmax of the one-vs-rest scores.

Kept although it is questionable: the tuning scaler is fitted on the balanced tuning subset,
the final one on the training embeddings, so ``C`` is chosen under one standardisation and used
under another.

The head is saved like the linear probe's (``model/linear_probe.safetensors``), with the
standardisation folded into the weights, so ``lga eval`` of the run's model scores with it.
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
from lga.train.linear_probe import LinearProbe

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
    scaler: str  # which embeddings the final StandardScaler was fitted on: "train" or "val"


@dataclass
class Scaler:
    """scikit-learn's ``StandardScaler``: population std, 1 where a feature is constant."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)

    @classmethod
    def fit(cls, x: np.ndarray) -> Scaler:
        from sklearn.preprocessing import StandardScaler

        s = StandardScaler().fit(x)
        return cls(s.mean_, s.scale_)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def _require_groups(ds: GroupDataset, groups: np.ndarray, where: str) -> None:
    missing = sorted(set(range(ds.config.n_groups)) - set(groups.tolist()))
    if missing:
        names = ", ".join(ds.config.group_names()[g] for g in missing)
        raise DataError(f"DFR needs images of every group in {where}; none of: {names}")


def halves(n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, fitting rows): the first ``n // 2`` of a shuffle of all rows, the rest."""
    idx = np.arange(n)
    rng.shuffle(idx)
    return idx[: n // 2], idx[n // 2 :]


def balanced_subset(groups: np.ndarray, n_groups: int, rng: np.random.RandomState) -> np.ndarray:
    """Positions into ``groups``: each group's shuffled, cut to the smallest group's count,
    concatenated in group order (the reference's ``g_idx`` / ``min_g``)."""
    g_idx = [np.where(groups == g)[0] for g in range(n_groups)]
    min_g = min(len(g) for g in g_idx)
    for g in g_idx:
        rng.shuffle(g)
    return np.concatenate([g[:min_g] for g in g_idx])


def penalty_kwargs(logistic_regression: type, penalty: str) -> dict:
    """``penalty="l1"`` in scikit-learn's own words: ``l1_ratio`` from 1.8 on (``penalty`` is
    deprecated there and removed in 1.10), ``penalty`` before."""
    if logistic_regression().penalty == "deprecated":
        return {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    return {"penalty": penalty}


def fit_liblinear(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    C: float,
    penalty: str,
    max_iter: int,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's liblinear logistic regression: ``(coef (R, D), intercept (R,))``.

    Two classes: one row (the logit of class 1), as ``LogisticRegression`` gives it. More: one
    one-vs-rest row per class.
    """
    from sklearn.linear_model import LogisticRegression

    kw = penalty_kwargs(LogisticRegression, penalty)

    def one(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model = LogisticRegression(
            C=C, solver="liblinear", max_iter=max_iter, random_state=rng, **kw
        ).fit(x, target)
        return model.coef_, model.intercept_

    if n_classes == 2:
        return one(y)
    rows = [one((y == k).astype(int)) for k in range(n_classes)]
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])


def probabilities(coef: np.ndarray, intercept: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``(N, C)`` probabilities of liblinear rows on standardised features, in float64:
    ``[1 - p, p]`` with ``p = sigmoid(w.z + b)`` for one row, a softmax of one-vs-rest scores."""
    logits = z @ coef.T + intercept  # (N, R)
    if logits.shape[1] == 1:
        logits = np.concatenate([-logits / 2, logits / 2], axis=1)
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def to_head(coef: np.ndarray, intercept: np.ndarray, scaler: Scaler) -> tuple[Tensor, Tensor]:
    """liblinear rows on standardised features -> a softmax head on the features themselves.

    One binary row ``w`` becomes the two rows ``-w/2, w/2`` (softmax of them = sigmoid(w.x + b),
    scikit-learn's ``predict_proba``); one-vs-rest rows are kept as the class logits.
    """
    weight = coef / scaler.scale  # (R, D)
    bias = intercept - weight @ scaler.mean  # (R,)
    if len(weight) == 1:
        weight = np.concatenate([-weight / 2, weight / 2])
        bias = np.concatenate([-bias / 2, bias / 2])
    return torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32)


def fit_dfr(
    x: Tensor,
    val: GroupDataset,
    score: Callable[[GroupDataset, np.ndarray], tuple[dict, float]],
    cfg: DfrConfig,
    *,
    seed: int,
    x_train: Tensor | None,
) -> DfrResult:
    """Tune ``C`` on halves of the validation split, then average heads on balanced subsets.

    Args:
        x: ``(N, D)`` normalised image features of ``val``, in its row order.
        val: the validation split (classes and group labels).
        score: (a part of ``val``, its ``(M, C)`` probabilities) -> (metrics, selection
            score), higher is better.
        cfg: grid, penalty, number of final subsets, liblinear iterations.
        seed: every random draw (halves, subsets, liblinear's seed).
        x_train: ``(M, D)`` features of the training images, for the final scaler; None or
            empty: the validation features (logged; the reference always has training images).

    Raises:
        DataError: a group has no validation image (in the whole split or in either half).
    """
    xv = x.double().numpy()
    groups, y = val.group, np.asarray(val.y)
    n_groups, n_classes = val.config.n_groups, len(val.config.classes)
    _require_groups(val, groups, f"the validation split of {val.root}")
    rng = np.random.RandomState(seed)

    # 1. C on a random half (dfr_on_validation_tune).
    held, tune = halves(len(xv), rng)
    for part, name in ((tune, "fitting"), (held, "held-out")):
        _require_groups(
            val, groups[part], f"the {name} half of a shuffle of the validation split "
            "(too few images: the halves are cut from the whole split, as the reference does)"
        )  # fmt: skip
    fit_rows = tune[balanced_subset(groups[tune], n_groups, rng)]
    tune_scaler = Scaler.fit(xv[fit_rows])
    x_fit, x_held = tune_scaler(xv[fit_rows]), tune_scaler(xv[held])
    held_ds = val.select(held)
    kw = dict(penalty=cfg.penalty, max_iter=cfg.max_iter, rng=rng)
    grid, best = [], None
    for c in cfg.c_grid:
        coef, intercept = fit_liblinear(x_fit, y[fit_rows], n_classes, C=c, **kw)
        metrics, s = score(held_ds, probabilities(coef, intercept, x_held))
        grid.append({"C": c, "score": s})
        log.info("DFR C=%g: held-out score %.4f", c, s)
        if best is None or s > best[1]:
            best = (c, s, metrics)
    c, s, held_metrics = best

    # 2. The final head (dfr_on_validation_eval).
    on_train = x_train is not None and len(x_train) > 0
    if not on_train:
        log.warning("DFR: no training images: the final scaler is fitted on validation")
    scaler = Scaler.fit(x_train.double().numpy() if on_train else xv)
    coefs, intercepts, n_fit = [], [], 0
    for _ in range(cfg.subsets):
        rows = balanced_subset(groups, n_groups, rng)
        n_fit = len(rows)
        coef, intercept = fit_liblinear(scaler(xv[rows]), y[rows], n_classes, C=c, **kw)
        coefs.append(coef)
        intercepts.append(intercept)
    weight, bias = to_head(np.mean(coefs, axis=0), np.mean(intercepts, axis=0), scaler)
    head = LinearProbe(
        weight,
        bias,
        C=c,
        penalty=cfg.penalty,
        info={"method": Method.DFR.value, "subsets": str(cfg.subsets)},
    )
    log.info("DFR: C=%g, %d subsets of %d validation images", c, cfg.subsets, n_fit)
    return DfrResult(
        head, grid, s, held_metrics, len(fit_rows), len(held), n_fit, "train" if on_train else "val"
    )
