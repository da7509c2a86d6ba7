"""The run's Accelerate setup: precision, TF32 for the float32 matmuls, and its release.

Accelerate keeps its state in process-wide singletons (``PartialState``, ``AcceleratorState``,
``GradientState``): the first ``Accelerator`` of a process fixes the precision for every later
one. :func:`release_accelerator` forgets that state in a single process, so that a second
``fit`` in the same Python process (a sweep, a notebook) may use other settings. Accelerate
1.16 has no public call for it: :func:`forget_accelerate_state` uses the ``_reset_state``
static methods, as Accelerate's own ``AccelerateTestCase`` and transformers'
``TrainingArguments`` do, and nothing else here touches a private name.

TF32 is switched on only inside :func:`run_accelerator` (the fine-tuning run, the trackers of a
frozen one) and the previous settings are restored when it ends, rather than set for the whole
process as a side effect of building an ``Accelerator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from lga.rundir import RunDir
from lga.train.config import FitConfig


def mixed_precision(setting: str) -> str:
    """``train.mixed_precision`` for Accelerate: ``auto`` is bf16 on a GPU that has it, else no."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


@contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """TF32 tensor cores for the float32 matmuls and convolutions inside the block.

    They are the ones bf16 autocast leaves (or all of them under ``mixed_precision=no``): about
    8x the float32 rate on A100/H100, with a 10-bit mantissa. The two flags are restored on exit
    whatever happens inside; ``enabled=False`` leaves them untouched.
    """
    if not enabled:
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def make_accelerator(cfg: FitConfig, out: Path):
    """The run's ``Accelerator``: precision, accumulation, trackers, project directory, and
    ``torch.compile`` of the model in ``prepare`` with ``train.compile``.

    TF32 is the caller's (:func:`run_accelerator` switches it on for the run)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    tc = cfg.train
    return Accelerator(
        mixed_precision=mixed_precision(tc.mixed_precision),
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        cpu=cfg.student.device == "cpu",
        log_with=list(cfg.tracking.report_to) or None,
        project_config=ProjectConfiguration(
            project_dir=str(out), logging_dir=str(RunDir(out).logs)
        ),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=tc.find_unused_parameters)
        ],
        step_scheduler_with_optimizer=False,
        dynamo_backend="inductor" if tc.compile else None,  # None: accelerate config / env
    )


def release_accelerator(acc) -> None:
    """End trackers; in a single process, forget Accelerate's global state so that another
    ``fit`` in the same Python process (a sweep, a notebook) may use other precision settings."""
    acc.end_training()
    if acc.num_processes == 1:
        forget_accelerate_state()


@contextmanager
def run_accelerator(cfg: FitConfig, out: Path) -> Iterator:
    """:func:`make_accelerator` with TF32 on (on a GPU) until the block ends; then
    :func:`release_accelerator` and the TF32 settings as they were."""
    with tf32_matmuls(torch.cuda.is_available()):
        acc = make_accelerator(cfg, out)
        try:
            yield acc
        finally:
            release_accelerator(acc)


def forget_accelerate_state() -> None:
    """Clear Accelerate's process-wide state (single process only: a launched multi-process
    job keeps its process group). The one use of Accelerate's private ``_reset_state``."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def main_process_only() -> tuple[bool, int]:
    """(whether this is the main process, how many processes) for a method that runs on the
    main process alone (the frozen ones); the state read is forgotten again in one process."""
    from accelerate import PartialState

    state = PartialState()
    main, n = state.is_main_process, state.num_processes
    if n == 1:
        forget_accelerate_state()
    return main, n
