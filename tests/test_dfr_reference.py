"""lga's DFR against the authors' procedure (PolinaKirichenko/deep_feature_reweighting,
``dfr_evaluate_spurious.py``, "DFR on validation" with its defaults), re-implemented here in plain
scikit-learn step by step from the reference's ``dfr_on_validation_tune`` and
``dfr_on_validation_eval``, on seeded embeddings with group structure.

Two changes to the reference, both in lga too (see ``lga.train.dfr``): the global
``np.random`` is one ``RandomState`` passed in (also as liblinear's ``random_state``), and the
eval step's shuffle of the training indices it never uses (``notrain_dfr_val``) is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lga.data.dataset import GroupDataset
from lga.data.dataset_config import load_dataset_config
from lga.errors import DataError
from lga.train.config import C_GRID, DfrConfig
from lga.train.dfr import fit_dfr, fit_liblinear

sk = pytest.importorskip("sklearn.linear_model")
StandardScaler = pytest.importorskip("sklearn.preprocessing").StandardScaler

REG = "l1"
# penalty=REG as scikit-learn >= 1.8 spells it (`penalty` is deprecated there, gone in 1.10)
PENALTY = {"l1_ratio": 1.0} if sk.LogisticRegression().penalty == "deprecated" else {"penalty": REG}


# ---------------------------------------------------------------------------------------------
# The reference, transcribed (balance_val=True, add_train=False, num_retrains=1 / 20)


def ref_tune(all_embeddings, all_y, all_g, rs):
    worst_accs = {}
    x_val, y_val, g_val = all_embeddings["val"], all_y["val"], all_g["val"]
    n_val = len(x_val) // 2
    idx = np.arange(len(x_val))
    rs.shuffle(idx)
    x_valtrain, y_valtrain, g_valtrain = x_val[idx[n_val:]], y_val[idx[n_val:]], g_val[idx[n_val:]]
    n_groups = np.max(g_valtrain) + 1
    g_idx = [np.where(g_valtrain == g)[0] for g in range(n_groups)]
    min_g = np.min([len(g) for g in g_idx])
    for g in g_idx:
        rs.shuffle(g)
    x_valtrain = np.concatenate([x_valtrain[g[:min_g]] for g in g_idx])
    y_valtrain = np.concatenate([y_valtrain[g[:min_g]] for g in g_idx])
    x_val, y_val, g_val = x_val[idx[:n_val]], y_val[idx[:n_val]], g_val[idx[:n_val]]
    x_train, y_train = x_valtrain, y_valtrain
    scaler = StandardScaler()
    x_train = scaler.fit_transform(x_train)
    x_val = scaler.transform(x_val)
    for c in C_GRID:
        logreg = sk.LogisticRegression(
            C=c, solver="liblinear", class_weight={0: 1.0, 1: 1.0}, random_state=rs, **PENALTY
        )
        logreg.fit(x_train, y_train)
        preds_val = logreg.predict(x_val)
        group_accs = np.array([(preds_val == y_val)[g_val == g].mean() for g in range(n_groups)])
        worst_accs[c, 1.0, 1.0] = np.min(group_accs)
    ks, vs = list(worst_accs.keys()), list(worst_accs.values())
    return ks[np.argmax(vs)], worst_accs


def ref_eval(c, all_embeddings, all_y, all_g, rs, num_retrains=20):
    coefs, intercepts = [], []
    scaler = StandardScaler()
    scaler.fit(all_embeddings["train"])
    for _ in range(num_retrains):
        x_val, y_val, g_val = all_embeddings["val"], all_y["val"], all_g["val"]
        n_groups = np.max(g_val) + 1
        g_idx = [np.where(g_val == g)[0] for g in range(n_groups)]
        min_g = np.min([len(g) for g in g_idx])
        for g in g_idx:
            rs.shuffle(g)
        x_val = np.concatenate([x_val[g[:min_g]] for g in g_idx])
        y_val = np.concatenate([y_val[g[:min_g]] for g in g_idx])
        x_train = scaler.transform(x_val)
        logreg = sk.LogisticRegression(
            C=c, solver="liblinear", class_weight={0: 1.0, 1: 1.0}, random_state=rs, **PENALTY
        )
        logreg.fit(x_train, y_val)
        coefs.append(logreg.coef_)
        intercepts.append(logreg.intercept_)
    logreg = sk.LogisticRegression(C=c, solver="liblinear", **PENALTY)
    logreg.fit(x_train[:2], np.arange(2))  # the fit is only needed to set up logreg
    logreg.coef_ = np.mean(coefs, axis=0)
    logreg.intercept_ = np.mean(intercepts, axis=0)
    return logreg, scaler


# ---------------------------------------------------------------------------------------------
# Seeded embeddings with group structure


def _split(rng, counts, d=24):
    """Rows per (y, place) group; the class and the place each move a few directions."""
    y = np.concatenate([[g // 2] * n for g, n in enumerate(counts)])
    place = np.concatenate([[g % 2] * n for g, n in enumerate(counts)])
    x = rng.normal(size=(len(y), d))
    x[:, :3] += 0.9 * (2 * y[:, None] - 1)  # the core feature (weaker)
    x[:, 3:6] += 1.6 * (2 * place[:, None] - 1)  # the spurious one (stronger)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, y, place


def _dataset(y, place) -> GroupDataset:
    n = len(y)
    table = pd.DataFrame(
        {"img_id": np.arange(n), "img_filename": [f"{i}.png" for i in range(n)],
         "y": y, "split": 1, "place": place}
    )  # fmt: skip
    return GroupDataset(Path("."), load_dataset_config("waterbirds"), table)


def _worst_group(ds: GroupDataset, probs: np.ndarray):
    pred = probs.argmax(axis=1)
    accs = [(pred == ds.y)[ds.group == g].mean() for g in range(ds.config.n_groups)]
    return {}, float(min(accs))


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(7)
    train = _split(rng, [900, 45, 40, 300])  # correlated, as Waterbirds' training split
    val = _split(rng, [150, 60, 40, 70])
    test = _split(rng, [200, 200, 200, 200])
    return train, val, test


@pytest.mark.parametrize("seed", [0, 3])
def test_dfr_equals_the_reference(world, seed):
    (xt, yt, pt), (xv, yv, pv), (xs, ys, _) = world
    val = _dataset(yv, pv)
    ours = fit_dfr(
        torch.as_tensor(xv, dtype=torch.float32),
        val,
        _worst_group,
        DfrConfig(),
        seed=seed,
        x_train=torch.as_tensor(xt, dtype=torch.float32),
    )
    # The reference on the very same float32 values.
    f32 = {k: torch.as_tensor(v, dtype=torch.float32).double().numpy() for k, v in
           (("train", xt), ("val", xv), ("test", xs))}  # fmt: skip
    ys_ = {"train": yt, "val": yv}
    gs = {"train": 2 * yt + pt, "val": 2 * yv + pv}
    rs = np.random.RandomState(seed)
    (c, _, _), worst = ref_tune(f32, ys_, gs, rs)
    logreg, scaler = ref_eval(c, f32, ys_, gs, rs)

    assert ours.head.C == c
    assert [r["score"] for r in ours.grid] == [worst[k, 1.0, 1.0] for k in C_GRID]
    assert ours.n_tune_held_out == len(xv) // 2 and ours.n_fit == 4 * 40
    assert ours.scaler == "train"
    ref_probs = logreg.predict_proba(scaler.transform(f32["test"]))
    got = ours.head.probs(torch.as_tensor(xs, dtype=torch.float32))
    np.testing.assert_allclose(got, ref_probs, atol=2e-5)
    np.testing.assert_array_equal(got.argmax(1), logreg.predict(scaler.transform(f32["test"])))


def test_the_intercept_is_penalised_as_liblinear_does():
    """liblinear's L1 penalty is |w|_1 + |b|: at a small C on a 9:1 sample the intercept is
    driven to 0 (an unpenalised one would be near log 9)."""
    rng = np.random.RandomState(0)
    x = rng.normal(size=(200, 4))
    y = (np.arange(200) < 180).astype(int)
    coef, intercept = fit_liblinear(x, y, 2, C=0.002, penalty="l1", max_iter=100, rng=rng)
    assert np.all(coef == 0) and np.all(intercept == 0)
    _, intercept = fit_liblinear(x, y, 2, C=100.0, penalty="l1", max_iter=100, rng=rng)
    assert intercept[0] == pytest.approx(np.log(9), abs=0.3)


def test_the_final_scaler_falls_back_to_validation_without_training_images(world):
    _, (xv, yv, pv), _ = world
    out = fit_dfr(torch.as_tensor(xv, dtype=torch.float32), _dataset(yv, pv), _worst_group,
                  DfrConfig(subsets=2), seed=0, x_train=None)  # fmt: skip
    assert out.scaler == "val"


def test_a_group_missing_from_a_half_is_named():
    y = np.array([0] * 20 + [0] * 20 + [1] * 20 + [1] * 1)
    place = np.array([0] * 20 + [1] * 20 + [0] * 20 + [1] * 1)
    x = np.random.default_rng(0).normal(size=(len(y), 8))
    with pytest.raises(DataError, match="half of a shuffle.*waterbird/water"):
        fit_dfr(torch.as_tensor(x, dtype=torch.float32), _dataset(y, place), _worst_group,
                DfrConfig(), seed=0, x_train=None)  # fmt: skip
