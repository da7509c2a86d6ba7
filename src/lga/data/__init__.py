"""Datasets in the Waterbirds/WILDS layout: reading, validation, images, sub-sampling.

The names load on first use, so importing one submodule (the CLI's parsers import
:mod:`lga.data.dataset_config`) does not import pandas through :mod:`lga.data.dataset`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_DATASET = (
    "SPLITS",
    "CheckResult",
    "GroupDataset",
    "Problem",
    "ProblemKind",
    "check_dataset",
    "coverage_problems",
    "load_dataset",
    "split_group_table",
    "subsample",
)
_NAMES = {
    **dict.fromkeys(_DATASET, "lga.data.dataset"),
    "DatasetConfig": "lga.data.dataset_config",
    "load_dataset_config": "lga.data.dataset_config",
    "load_rgb": "lga.data.images",
}
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
assert set(__all__) == set(_NAMES)

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'lga.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
