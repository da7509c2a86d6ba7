"""lga.evaluation.probe: the balanced probe, the zero-shot bias, the biased-sample probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fit_support import make_fit_dataset
from lga.cli import main
from lga.evaluation.probe import probe_features
from lga.train.linear_probe import balanced_rows


def _world(n_per_group: int, seed: int, correlated: bool = False):
    """Features where dim 0 carries the class (noisy) and dim 1 the place (clean)."""
    rng = np.random.default_rng(seed)
    counts = {(0, 0): n_per_group, (0, 1): n_per_group, (1, 0): n_per_group, (1, 1): n_per_group}
    if correlated:
        counts = {(0, 0): 19 * n_per_group, (0, 1): n_per_group, (1, 0): n_per_group,
                  (1, 1): 19 * n_per_group}  # fmt: skip
    y = np.concatenate([np.full(c, g[0]) for g, c in counts.items()])
    place = np.concatenate([np.full(c, g[1]) for g, c in counts.items()])
    x = np.stack(
        [(2 * y - 1) + rng.normal(0, 0.5, len(y)), 3.0 * (2 * place - 1), rng.normal(0, 1, len(y))],
        axis=1,
    )
    feats = torch.nn.functional.normalize(torch.tensor(x, dtype=torch.float32), dim=1)
    return feats, y, place


NAMES = {"classes": ["landbird", "waterbird"], "places": ["land", "water"]}


def test_balanced_rows_equalises_groups():
    groups = np.array([0] * 10 + [1] * 3 + [2] * 7 + [3] * 5)
    rows = balanced_rows(groups, np.random.default_rng(1))
    assert np.bincount(groups[rows]).tolist() == [3, 3, 3, 3]
    assert len(set(rows.tolist())) == len(rows)


def test_probe_sees_the_object_and_zero_shot_shows_the_bias():
    fit, score = _world(60, 0), _world(60, 1)
    # class prompts that point along the *place* axis: a fully background-biased zero-shot rule
    class_feats = torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    r = probe_features(fit=fit, score=score, class_feats=class_feats,
                       biased_fit=_world(10, 2, correlated=True)[:2], **NAMES)  # fmt: skip
    assert r.probe_accuracy > 0.9 and r.probe_worst_group > 0.85
    assert r.zero_shot_worst_group == 0.0 and r.zero_shot_accuracy == 0.5
    assert r.biased_probe_worst_group is not None
    assert r.biased_probe_worst_group < r.probe_worst_group  # the sample's correlation costs
    # prompts along the class axis: an unbiased rule
    unbiased = probe_features(
        fit=fit,
        score=score,
        class_feats=torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
        **NAMES,
    )
    assert unbiased.zero_shot_worst_group > 0.85 and unbiased.biased_probe_worst_group is None


def test_probe_command(tmp_path, tiny_clip_dir, capsys, monkeypatch):
    monkeypatch.setenv("LGA_CACHE", str(tmp_path / "cache"))
    data = make_fit_dataset(tmp_path / "data", n_train=32, n_val=16, n_test=16)
    out = tmp_path / "probe.json"
    code = main(["probe", "--data", str(data), "--student", str(tiny_clip_dir), "--json",
                 str(out), "--no-progress", "--device", "cpu", "--dtype", "float32"])  # fmt: skip
    assert code == 0
    # the student flags are lga eval's: a device lga cannot use is refused, not ignored
    bad = ["probe", "--data", str(data), "--student", str(tiny_clip_dir), "--dtype", "int8"]
    with pytest.raises(SystemExit):
        main(bad)
    text = capsys.readouterr().out
    assert "balanced probe (16 val -> 16 test images)" in text and "zero-shot" in text
    got = json.loads(out.read_text())
    for key in ("probe_accuracy", "zero_shot_worst_group", "biased_probe_worst_group"):
        assert 0.0 <= got[key] <= 1.0
    assert set(got["zero_shot_group_accuracy"]) == {
        "landbird/land", "landbird/water", "waterbird/land", "waterbird/water"
    }  # fmt: skip
