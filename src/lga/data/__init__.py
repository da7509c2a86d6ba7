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
from lga.data.images import load_rgb
from lga.data.spec import DatasetSpec, load_dataset_spec

__all__ = [
    "SPLITS",
    "CheckResult",
    "DatasetSpec",
    "GroupDataset",
    "Problem",
    "ProblemKind",
    "check_dataset",
    "coverage_problems",
    "load_dataset",
    "load_dataset_spec",
    "load_rgb",
    "split_group_table",
    "subsample",
]
