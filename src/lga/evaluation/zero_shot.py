"""Prediction through class prompts, predictions tables and the run directory's metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lga.config import EvalRunConfig
from lga.data.dataset import GroupDataset, load_dataset
from lga.evaluation.metrics import group_metrics
from lga.rundir import RunDir
from lga.student.cache import FeatureCache
from lga.student.features import feature_cache, image_features
from lga.student.heads import saved_head
from lga.student.model import Student, class_text_features, load_student

log = logging.getLogger(__name__)


def templates_for(ds: GroupDataset, which: str = "dataset") -> list[str]:
    """The dataset config's prompt templates (ensemble), or only its first one."""
    return ds.config.class_templates if which == "dataset" else ds.config.class_templates[:1]


@torch.no_grad()
def zero_shot_probs(
    image_feats: torch.Tensor,
    class_feats: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float = 0.0,
) -> np.ndarray:
    """(N, C) class probabilities: softmax over the classes of the model's own logits.

    The logits are ``scale * cos(image, class prompt) + bias`` with the student's scale and bias
    (:meth:`lga.student.model.Student.logits`). The class probabilities of a zero-shot classifier
    must be a distribution over the classes (predictions, accuracy, the report's plots), so they
    are a softmax for every family. For SigLIP, whose own probability is a sigmoid per (image,
    prompt) pair (:meth:`~lga.student.model.Student.pair_probs`), this is the softmax of the
    same logits at the model's own scale (the bias cancels): the prediction, the argmax, is the
    same under either.
    """
    logits = logit_scale * image_feats @ class_feats.T + logit_bias  # (N, C)
    return logits.softmax(dim=-1).numpy()


def predictions_table(ds: GroupDataset, probs: np.ndarray) -> pd.DataFrame:
    """One row per image: img_id, y, place, group, pred, and ``prob_<class>`` per class."""
    df = pd.DataFrame(
        {
            "img_id": ds.img_ids,
            "y": ds.y,
            "place": ds.place,
            "group": [ds.config.group_name(y, p) for y, p in zip(ds.y, ds.place, strict=True)],
            "pred": probs.argmax(axis=1),
        }
    )
    for ci, c in enumerate(ds.config.classes):
        df[f"prob_{c}"] = probs[:, ci]
    return df


def metrics_from_predictions(
    preds: pd.DataFrame, ds: GroupDataset, *, train_group_counts: dict | None
) -> dict:
    return group_metrics(
        preds["pred"].to_numpy(),
        preds["y"].to_numpy(),
        preds["place"].to_numpy(),
        classes=ds.config.classes,
        places=ds.config.places,
        train_group_counts=train_group_counts,
    )


def unseen_metrics(preds: pd.DataFrame, ds: GroupDataset) -> dict:
    """Metrics of the unseen-place test images (``GroupDataset.unseen``), under metrics.json's
    ``unseen``: overall and per-class accuracy, and per (class, unseen place) group with the
    worst of those groups. No weighted accuracy: no training image is on these places."""
    m = metrics_from_predictions(preds, ds, train_group_counts=None)
    counts = {g: n for g, n in m["group_count"].items() if n}
    return {
        "n": m["n"],
        "accuracy": m["accuracy"],
        "class_accuracy": m["class_accuracy"],
        "group_accuracy": m["group_accuracy"],
        "group_count": counts,
        "worst_group_accuracy": m["worst_group_accuracy"],
        "worst_group": m["worst_group"],
        "places": list(dict.fromkeys(g.split("/", 1)[1] for g in counts)),
    }


def score_unseen(full: GroupDataset, out: Path, predict) -> dict:
    """Score the unseen-place test images of ``full`` with ``predict`` (dataset -> (N, C)
    probabilities), write ``predictions_unseen.parquet`` into ``out`` and return
    ``{"unseen": metrics}``; ``{}`` when the dataset has none."""
    ds = full.unseen
    if ds is None or len(ds) == 0:
        return {}
    preds = predictions_table(ds, predict(ds))
    RunDir(out).write_predictions(preds, unseen=True)
    metrics = unseen_metrics(preds, ds)
    log.info(
        "unseen places %s: accuracy %.2f%%, worst group %.2f%% (%s)",
        metrics["places"],
        100 * metrics["accuracy"],
        100 * metrics["worst_group_accuracy"],
        metrics["worst_group"],
    )
    return {"unseen": metrics}


def train_group_counts(full: GroupDataset) -> dict[str, int] | None:
    """Group counts of the training split, or None when the dataset has no training rows."""
    train = full.split("train")
    return train.group_counts() if len(train) else None


def predict_zero_shot(
    student: Student,
    ds: GroupDataset,
    *,
    templates: list[str],
    batch_size: int,
    num_workers: int,
    cache: FeatureCache | None,
    progress: bool = True,
) -> np.ndarray:
    feats = image_features(
        student, ds, batch_size=batch_size, num_workers=num_workers, cache=cache, progress=progress
    )
    with torch.no_grad():
        class_feats = class_text_features(student, ds.config.classes, templates).cpu()
    return zero_shot_probs(
        feats, class_feats, student.logit_scale().cpu(), student.logit_bias().cpu()
    )


def run_eval(cfg: EvalRunConfig, out: Path, *, progress: bool = True) -> dict:
    """``lga eval``: evaluation of a checkpoint on one split, written to ``out``.

    Zero-shot through the class prompts, or, for the model of a linear-probe or DFR run (a
    folder with ``linear_probe.safetensors``), through that head: the run's predictions again.
    """
    from lga.rundir import output_dir
    from lga.student.model import resolve_student_spec

    resolve_student_spec(cfg.student.spec)  # a missing folder fails before any work
    RunDir(out).check_owned()  # never replace a metrics.json or config.yaml of the user's
    with output_dir(out, what="--out folder"):
        full = load_dataset(
            cfg.data.root,
            cfg.data.dataset_config,
            splits=[cfg.eval.split],
            skip_bad_rows=cfg.data.skip_bad_rows,
            check_images=cfg.data.check_images,
            progress=progress,
        )
        ds = full.split(cfg.eval.split)
        if len(ds) == 0:
            from lga.errors import DataError

            raise DataError(f"split {cfg.eval.split!r} of {cfg.data.root} has no valid rows")
        student = load_student(cfg.student)
        cache = feature_cache(student, ds, enabled=cfg.eval.use_cache, root=cfg.eval.cache_dir)
        kw = dict(
            batch_size=cfg.eval.batch_size,
            num_workers=cfg.data.num_workers,
            cache=cache,
            progress=progress,
        )
        head = saved_head(student.spec, ds.config.classes)
        templates = templates_for(ds, cfg.student.templates)

        def predict(part: GroupDataset) -> np.ndarray:
            if head is None:
                return predict_zero_shot(student, part, templates=templates, **kw)
            # a linear-probe or DFR run's model: score with its head, as the run did
            return head.probs(image_features(student, part, **kw))

        method = cfg.method if head is None else head.info.get("method", "linear-probe")
        preds = predictions_table(ds, predict(ds))
        unseen = score_unseen(full, out, predict) if cfg.eval.split == "test" else {}
        metrics = {
            "method": method,
            "student": cfg.student.spec,
            "split": cfg.eval.split,
            **metrics_from_predictions(preds, ds, train_group_counts=train_group_counts(full)),
            **unseen,
            "skipped_rows": len(full.skipped),
        }
        rd = RunDir(out)
        rd.write_config(cfg)
        rd.write_predictions(preds)
        rd.write_metrics(metrics)
        return metrics
