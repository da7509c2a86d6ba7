"""The data of one fit: the dataset, the seeded training sample, validation and test."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lga.data.dataset import GroupDataset, load_dataset, missing_classes, subsample
from lga.errors import DataError
from lga.evaluation.zero_shot import metrics_from_predictions, train_group_counts
from lga.train.config import FitConfig, Method
from lga.train.trainer import SELECT_KEYS

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """The dataset and the three sets a run uses."""

    full: GroupDataset
    sample: GroupDataset
    val: GroupDataset
    test: GroupDataset

    def score(self, preds, select_by: str) -> tuple[dict, float]:
        """Validation metrics of a predictions table and the selection score."""
        return self.score_on(self.val, preds, select_by)

    def score_on(self, ds: GroupDataset, preds, select_by: str) -> tuple[dict, float]:
        """Metrics and selection score of a predictions table of ``ds`` (a part of validation)."""
        metrics = metrics_from_predictions(
            preds, ds, train_group_counts=train_group_counts(self.full)
        )
        return metrics, float(metrics[SELECT_KEYS[select_by]])


def load_run_data(cfg: FitConfig, *, check_images: bool, progress: bool) -> RunData:
    """Read the dataset; draw the training sample and the (optionally subsampled) validation set.

    Raises:
        DataError: a split the method needs has no rows, or the training split (or sample) lacks
            a class.
    """
    splits = ["val", "test"] if cfg.method is Method.ZERO_SHOT else ["train", "val", "test"]
    full = load_dataset(
        cfg.data.root,
        cfg.data.dataset_config,
        splits=splits,
        skip_bad_rows=cfg.data.skip_bad_rows,
        check_images=cfg.data.check_images and check_images,
        progress=progress,
        require={Method.ZERO_SHOT: ["test"], Method.DFR: ["val", "test"]}.get(cfg.method, splits),
    )
    sample = subsample(full.split("train"), cfg.sample.n_train, seed=cfg.sample.seed)
    val = subsample(full.split("val"), cfg.sample.val_n, seed=cfg.sample.seed)
    data = RunData(full, sample, val, full.split("test"))
    trains_on_sample = cfg.method not in (Method.ZERO_SHOT, Method.DFR)
    if trains_on_sample and (absent := missing_classes(sample)):
        raise DataError(
            f"the training sample of {len(sample)} image(s) (sample.n_train="
            f"{cfg.sample.n_train}) has no image of class(es) {absent}; draw a larger sample"
        )
    if cfg.sample.n_train and len(data.sample) < cfg.sample.n_train:
        log.warning(
            "the training split has %d images, fewer than n_train=%d: using them all",
            len(data.sample),
            cfg.sample.n_train,
        )
    log.info(
        "sample: %d training images %s; %d validation; %d test",
        len(sample),
        sample.group_counts(),
        len(val),
        len(data.test),
    )
    return data
