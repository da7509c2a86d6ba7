"""The methods that train no CLIP weight: zero-shot, linear probe and DFR on frozen features.

Each runs on the main process alone and writes the run folder's results itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lga.data.dataset import GroupDataset
from lga.evaluation.zero_shot import (
    predict_zero_shot,
    predictions_table,
    score_unseen,
    templates_for,
)
from lga.rundir import RunDir
from lga.student.cache import FeatureCache
from lga.student.features import feature_cache, image_features
from lga.student.heads import PROBE_FILE, balance_weights, fit_linear_probe
from lga.student.model import Student, load_student
from lga.train.accel import run_accelerator
from lga.train.config import FitConfig, Method
from lga.train.dfr import fit_dfr
from lga.train.rundata import RunData
from lga.train.runfolder import final_metrics, write_results
from lga.train.tracking import flat_config, init_trackers, tracker_values


def _feature_cache(cfg: FitConfig, student: Student, full: GroupDataset) -> FeatureCache | None:
    return feature_cache(student, full, enabled=cfg.eval.use_cache, root=cfg.eval.cache_dir)


def zero_shot(cfg: FitConfig, data: RunData, out: Path, progress: bool) -> dict:
    """Class prompts through the unchanged student; validation is scored, nothing chosen."""
    student = load_student(cfg.student)
    cache = _feature_cache(cfg, student, data.full)
    templates = templates_for(data.full, cfg.student.templates)
    kw = dict(
        templates=templates,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.data.num_workers,
        cache=cache,
        progress=progress,
    )
    extra = {"selected_step": 0}
    if len(data.val):
        val, score = data.score(
            predictions_table(data.val, predict_zero_shot(student, data.val, **kw)),
            cfg.eval.select_by,
        )
        # Nothing is chosen, so no train_log.jsonl (lga eval's shape, lga.rundir): the
        # validation metrics go into metrics.json.
        extra |= {"val_score": score, "val": val}
    preds = predictions_table(data.test, predict_zero_shot(student, data.test, **kw))
    extra |= score_unseen(data.full, out, lambda ds: predict_zero_shot(student, ds, **kw))
    # No model/: the run scored cfg.student.spec unchanged (RunDir.model_source).
    return write_results(out, preds, final_metrics(cfg, data, preds, **extra))


def _frozen_features(cfg: FitConfig, data: RunData, progress: bool):
    """The student and a function: dataset -> (N, D) normalised image features (cached)."""
    student = load_student(cfg.student)
    cache = _feature_cache(cfg, student, data.full)

    def feats(ds: GroupDataset) -> torch.Tensor:
        return image_features(
            student,
            ds,
            batch_size=cfg.eval.batch_size,
            num_workers=cfg.data.num_workers,
            cache=cache,
            progress=progress,
        )

    return student, feats


def _save_head(student: Student, head, data: RunData, out: Path) -> None:
    RunDir(out).save_model(
        student.model,
        student.processor,
        extra=lambda d: head.save(d / PROBE_FILE, data.full.config.classes),
    )


def linear_probe(cfg: FitConfig, data: RunData, out: Path, progress: bool) -> dict:
    """Logistic regression on the sample's frozen image features, C chosen on validation."""
    student, feats = _frozen_features(cfg, data, progress)
    train_x, val_x, test_x = feats(data.sample), feats(data.val), feats(data.test)
    lp = cfg.linear_probe
    keys = {"none": None, "class": data.sample.y, "group": data.sample.group}[lp.balance]
    probe, grid = fit_linear_probe(
        train_x,
        torch.as_tensor(data.sample.y.copy(), dtype=torch.long),
        val_x,
        lambda probs: data.score(predictions_table(data.val, probs), cfg.eval.select_by)[1],
        n_classes=len(data.full.config.classes),
        grid=lp.c_grid,
        penalty=lp.penalty,
        sample_weight=None if keys is None else balance_weights(keys),
        max_iter=lp.max_iter,
    )
    probe.info["method"] = Method.LINEAR_PROBE.value
    val_metrics, score = data.score(
        predictions_table(data.val, probe.probs(val_x)), cfg.eval.select_by
    )
    RunDir(out).train_log().write(
        {
            "step": 0,
            "epoch": 0.0,
            "val": val_metrics,
            "score": score,
            "best": True,
            "C": probe.C,
            "grid": grid,
        }
    )
    _save_head(student, probe, data, out)
    preds = predictions_table(data.test, probe.probs(test_x))
    unseen = score_unseen(data.full, out, lambda ds: probe.probs(feats(ds)))
    return write_results(
        out,
        preds,
        final_metrics(cfg, data, preds, selected_step=0, val_score=score, C=probe.C, **unseen),
    )


def dfr(cfg: FitConfig, data: RunData, out: Path, progress: bool) -> dict:
    """Deep feature reweighting: a head fitted on group-balanced validation subsets."""
    student, feats = _frozen_features(cfg, data, progress)
    val_x, test_x = feats(data.val), feats(data.test)
    result = fit_dfr(
        val_x,
        data.val,
        lambda ds, probs: data.score_on(ds, predictions_table(ds, probs), cfg.eval.select_by),
        cfg.dfr,
        seed=cfg.train.seed,
        x_train=feats(data.sample) if len(data.sample) else None,  # the final scaler's
    )
    RunDir(out).train_log().write(
        {
            "step": 0,
            "epoch": 0.0,
            "val": result.held_out_metrics,  # the chosen C's head, on the half it was not fitted on
            "score": result.score,
            "best": True,
            "C": result.head.C,
            "grid": result.grid,
            "n_tune_fit": result.n_tune_fit,
            "n_tune_held_out": result.n_tune_held_out,
            "n_fit": result.n_fit,
            "scaler": result.scaler,
        }
    )
    _save_head(student, result.head, data, out)
    preds = predictions_table(data.test, result.head.probs(test_x))
    unseen = score_unseen(data.full, out, lambda ds: result.head.probs(feats(ds)))
    return write_results(
        out,
        preds,
        final_metrics(
            cfg,
            data,
            preds,
            selected_step=0,
            val_score=result.score,
            C=result.head.C,
            n_fit=result.n_fit,
            subsets=cfg.dfr.subsets,
            **unseen,
        ),
    )


FROZEN_METHODS = {Method.ZERO_SHOT: zero_shot, Method.LINEAR_PROBE: linear_probe, Method.DFR: dfr}


def track_frozen(cfg: FitConfig, out: Path, metrics: dict) -> None:
    """A frozen method's validation (from its train log) and test metrics, to the trackers."""
    with run_accelerator(cfg, out) as acc:
        init_trackers(acc, cfg, out, flat_config(cfg))
        records = RunDir(out).read_train_log()
        val = metrics.get("val") or next((r["val"] for r in reversed(records) if "val" in r), None)
        if val is not None:
            acc.log(tracker_values(val, "val"), step=0)
        acc.log(tracker_values(metrics, "test"), step=0)
