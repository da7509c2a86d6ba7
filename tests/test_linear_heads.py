"""The linear probe's and DFR's heads: scikit-learn's C, balancing, saving and reloading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lga.train.linear_probe import (
    LinearProbe,
    balance_weights,
    balanced_rows,
    read_head,
    train_head,
)

sklearn = pytest.importorskip("sklearn.linear_model")


def _blobs(n: int, d: int, n_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, d, generator=g)
    y = torch.arange(n) % n_classes
    x = F.normalize(centres[y] + 1.5 * torch.randn(n, d, generator=g), dim=-1)
    return x, y


def _sklearn_probs(x, y, C, penalty="l2", class_weight=None):
    """scikit-learn on the features standardised the same way (the mean and unbiased std)."""
    mean, std = x.mean(0), x.std(0)
    z = ((x - mean) / std).numpy().astype(np.float64)
    solver = "lbfgs" if penalty == "l2" else "saga"
    kw = {"l1_ratio": 1.0} if penalty == "l1" else {}
    model = sklearn.LogisticRegression(
        C=C, solver=solver, tol=1e-10, max_iter=20000, class_weight=class_weight, **kw
    )
    model.fit(z, y.numpy())
    return model.predict_proba(z)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("C", [0.01, 0.3, 1.0])
def test_C_means_what_it_means_in_scikit_learn(n_classes, C):
    x, y = _blobs(90, 6, n_classes)
    head = train_head(x, y, n_classes, C=C, max_iter=500)
    # 3e-4: with scikit-learn 1.9.1 its lbfgs and newton-cg agree to 1e-9 and our float32 L-BFGS
    # differs by up to 2.2e-4 (C=0.3, two classes). The objective is the same: at
    # scikit-learn's optimum the gradient of ours is 1e-14, and in float64 with tight L-BFGS
    # tolerances three classes agree to 1e-7 (two to 2e-5). The gap is float32 arithmetic.
    np.testing.assert_allclose(head.probs(x), _sklearn_probs(x, y, C), atol=3e-4)
    assert head.C == C and head.penalty == "l2"


@pytest.mark.parametrize("n_classes", [2, 3])
def test_l1_penalty_matches_scikit_learn_and_is_sparse(n_classes):
    x, y = _blobs(120, 10, n_classes, seed=1)
    head = train_head(x, y, n_classes, C=0.05, penalty="l1", max_iter=5000)
    np.testing.assert_allclose(head.probs(x), _sklearn_probs(x, y, 0.05, "l1"), atol=3e-3)
    dense = train_head(x, y, n_classes, C=0.05, max_iter=500)
    assert (head.weight.abs() < 1e-9).sum() > (dense.weight.abs() < 1e-9).sum()


def test_class_balancing_is_scikit_learns_balanced():
    x, y = _blobs(120, 5, 2, seed=2)
    keep = torch.cat([torch.nonzero(y == 0).flatten(), torch.nonzero(y == 1).flatten()[:15]])
    x, y = x[keep], y[keep]  # 60 against 15
    w = balance_weights(y.numpy())
    np.testing.assert_allclose(w[y.numpy() == 0], 75 / (2 * 60))
    np.testing.assert_allclose(w[y.numpy() == 1], 75 / (2 * 15))
    head = train_head(x, y, 2, C=0.3, sample_weight=w, max_iter=500)
    ref = _sklearn_probs(x, y, 0.3, class_weight="balanced")
    np.testing.assert_allclose(head.probs(x), ref, atol=2e-4)
    plain = train_head(x, y, 2, C=0.3, max_iter=500)
    assert not np.allclose(plain.probs(x), ref, atol=1e-2)  # balancing changed the head


def test_balanced_rows_equalises_groups():
    groups = np.array([0] * 10 + [1] * 3 + [2] * 7 + [3] * 5)
    rows = balanced_rows(groups, np.random.default_rng(1))
    assert np.bincount(groups[rows]).tolist() == [3, 3, 3, 3]
    assert len(set(rows.tolist())) == len(rows)


def test_save_and_load(tmp_path):
    x, y = _blobs(40, 4, 3)
    head = train_head(x, y, 3, C=0.7, max_iter=200)
    head.info["method"] = "dfr"
    (tmp_path / "model").mkdir()
    head.save(tmp_path / "model" / "linear_probe.safetensors", ["a", "b", "c"])
    back, classes = read_head(tmp_path / "model")
    assert classes == ["a", "b", "c"] and back.C == 0.7 and back.info == {"method": "dfr"}
    assert torch.equal(back.weight, head.weight) and torch.equal(back.bias, head.bias)
    assert read_head(tmp_path) is None
    (tmp_path / "bad.safetensors").write_bytes(b"not a head")
    from lga.errors import LgaError

    with pytest.raises(LgaError, match="bad.safetensors"):
        LinearProbe.load(tmp_path / "bad.safetensors")
