"""Datasets in the Waterbirds/WILDS layout: reading, validation, images, sub-sampling."""

from lga.data.dataset import (
    SPLITS,
    CheckResult,
    GroupDataset,
    Problem,
    ProblemKind,
    check_dataset,
    coverage_problems,
    load_dataset,
    split_group_table,
    subsample,
)
from lga.data.dataset_config import DatasetConfig, load_dataset_config
from lga.data.images import load_rgb

__all__ = [
    "SPLITS",
    "CheckResult",
    "DatasetConfig",
    "GroupDataset",
    "Problem",
    "ProblemKind",
    "check_dataset",
    "coverage_problems",
    "load_dataset",
    "load_dataset_config",
    "load_rgb",
    "split_group_table",
    "subsample",
]
