"""lga.train.accel: TF32 only within a run, and Accelerate's state released between runs."""

from __future__ import annotations

import pytest
import torch

from lga.train.accel import run_accelerator, tf32_matmuls
from lga.train.config import FitConfig


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.fixture
def tf32_off():
    before = _flags()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_tf32_is_on_inside_the_block_and_restored_after(tf32_off):
    with tf32_matmuls(True):
        assert _flags() == (True, True)
    assert _flags() == (False, False)
    with pytest.raises(RuntimeError), tf32_matmuls(True):
        raise RuntimeError("the run failed")
    assert _flags() == (False, False)  # restored on failure too
    with tf32_matmuls(False):
        assert _flags() == (False, False)


def _cfg(tmp_path, precision: str) -> FitConfig:
    return FitConfig.model_validate(
        {
            "method": "erm",
            "data": {"root": str(tmp_path)},
            "student": {"device": "cpu"},
            "train": {"mixed_precision": precision},
        }
    )


def test_a_second_run_in_one_process_gets_its_own_precision(tmp_path, tf32_off):
    with run_accelerator(_cfg(tmp_path, "no"), tmp_path) as acc:
        assert acc.mixed_precision == "no"
    with run_accelerator(_cfg(tmp_path, "bf16"), tmp_path) as acc:
        assert acc.mixed_precision == "bf16"
    assert _flags() == (False, False)  # no TF32 left behind (and none switched on without CUDA)


def test_the_split_modules_keep_the_names_imported_from_lga_train_fit():
    import importlib

    fit_module = importlib.import_module("lga.train.fit")  # (lga.train.fit names the function)

    for name in fit_module.__all__:
        assert callable(getattr(fit_module, name)), name
