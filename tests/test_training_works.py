"""Training does what it claims: losses fall and the student learns (a sign-flipped or detached
loss fails here). Tiny random CLIP on fit_support's data, where the class shows in the object's
colour and the training background matches the class 75% of the time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fit_support import (
    fill_store,
    make_fit_dataset,
    one_thread,  # noqa: F401  (autouse fixture)
)
from lga.config import resolve_config
from lga.train import FitConfig, fit


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("learns")
    data = make_fit_dataset(root / "data", n_train=64, n_val=32, n_test=32, seed=3)
    return {"root": root, "data": data, "store": fill_store(root / "store.sqlite", data)}


def _fit(env, clip, method: str, name: str, *overrides: str) -> tuple[list[dict], list[dict]]:
    base = {
        "method": method,
        "data": {"root": str(env["data"]), "num_workers": 0},
        "student": {"spec": str(clip), "device": "cpu"},
        "descriptions": {"store": str(env["store"])},
        "sample": {"n_train": None},
        "train": {"batch_size": 16, "epochs": 6, "lr": 1e-3, "warmup_ratio": 0.0},
        "eval": {"use_cache": False, "at_start": True, "every": 4},
    }
    cfg = resolve_config(FitConfig, base=base, overrides=list(overrides))
    fit(cfg, env["root"] / name, progress=False)
    lines = [
        json.loads(s) for s in (env["root"] / name / "train_log.jsonl").read_text().split("\n") if s
    ]
    return [r for r in lines if "loss" in r], [r for r in lines if "val" in r]


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_erm_loss_falls_and_validation_beats_chance(env, tiny_clip_dir):
    steps, vals = _fit(env, tiny_clip_dir, "erm", "erm")
    assert len(steps) == 24  # 64 images / 16 per step x 6 epochs
    first, last = _mean(steps[:4], "class_ce"), _mean(steps[-4:], "class_ce")
    assert last < 0.6 * first, (first, last)
    start, end = vals[0]["val"], vals[-1]["val"]
    assert vals[0]["step"] == 0  # the pre-trained model, scored before any step
    assert end["accuracy"] >= 0.75 > start["accuracy"] - 0.1, (start, end)


def test_lga_contrastive_term_falls(env, tiny_clip_dir):
    steps, _ = _fit(env, tiny_clip_dir, "lga", "lga")
    for term in ("supcon", "instance"):
        first, last = _mean(steps[:4], term), _mean(steps[-4:], term)
        assert last < 0.8 * first, (term, first, last)


def test_balanced_sampler_draws_groups_evenly():
    from lga.train.data import GlobalBatchSampler

    groups = np.array([0] * 90 + [1] * 10)
    weights = 1.0 / np.bincount(groups)[groups]
    sampler = GlobalBatchSampler(100, global_batch=20, accum=1, world=1, rank=0, seed=0,
                                 weights=weights)  # fmt: skip
    drawn = np.concatenate([sampler.permutation(e) for e in range(20)])
    share = (groups[drawn] == 1).mean()
    assert 0.45 < share < 0.55, share  # 10% of the sample, half of what is drawn
    plain = GlobalBatchSampler(100, global_batch=20, accum=1, world=1, rank=0, seed=0)
    assert sorted(plain.permutation(0).tolist()) == list(range(100))


def test_balance_reads_the_background_from_descriptions(env, tiny_clip_dir):
    _fit(env, tiny_clip_dir, "erm", "erm-balanced", "sample.balance=background")
    got = json.loads((env["root"] / "erm-balanced" / "balance.json").read_text())
    assert got["prompt"] == "background_description"
    counts = got["inferred_group_counts"]
    assert sum(counts.values()) == 64 and set(counts) == {
        "landbird/land", "landbird/water", "waterbird/land", "waterbird/water"
    }  # fmt: skip
    assert 0.0 <= got["agreement_with_place_column"] <= 1.0


def test_balance_needs_a_store(env, tiny_clip_dir):
    from lga.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="sample.balance"):
        resolve_config(
            FitConfig,
            base={
                "method": "erm",
                "data": {"root": str(env["data"])},
                "student": {"spec": str(tiny_clip_dir)},
            },  # fmt: skip
            overrides=["sample.balance=background"],
        )
