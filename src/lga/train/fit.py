"""``fit``: one method on one sample, written as a run directory.

Every method goes through the same steps: the dataset is read, the training sample drawn
(``subsample(train, n_train, seed=sample.seed)``: the same images for every method), the method
run, the checkpoint chosen on validation, and the test split evaluated from the saved model.
What a run directory holds is :mod:`lga.rundir`'s contract.

The jobs live beside this entry point, one module each:

- :mod:`lga.train.rundata`: the dataset, the training sample, validation and test;
- :mod:`lga.train.runfolder`: the run folder checked before any work, the results written;
- :mod:`lga.train.frozen`: zero-shot, linear probe and DFR on frozen features;
- :mod:`lga.train.accel`: the Accelerate setup (precision, TF32 within the run) and release;
- :mod:`lga.train.balance`: balanced batches (dataset groups or the teacher's backgrounds);
- :mod:`lga.train.finetune`: the fine-tuning methods' trainer, training and test.
"""

from __future__ import annotations

from pathlib import Path

from lga.rundir import RunDir, output_dir
from lga.student.model import resolve_student_spec
from lga.train.accel import (
    main_process_only,
    make_accelerator,
    release_accelerator,
    run_accelerator,
)
from lga.train.balance import batch_balance
from lga.train.config import FitConfig
from lga.train.finetune import build_fine_tuner, fine_tune
from lga.train.frozen import FROZEN_METHODS, track_frozen
from lga.train.rundata import RunData, load_run_data
from lga.train.runfolder import FitResult, config_changes, prepare_run_dir
from lga.train.tracking import check_trackers

# Imported from here by the bench, the tests and reproduce.
__all__ = [
    "FitResult",
    "RunData",
    "batch_balance",
    "build_fine_tuner",
    "config_changes",
    "fit",
    "load_run_data",
    "make_accelerator",
    "prepare_run_dir",
    "release_accelerator",
    "run_accelerator",
]


def fit(
    cfg: FitConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> FitResult:
    """Run one method and write the run directory ``out``.

    Under ``accelerate launch`` every process calls this; only the main process writes files
    and gets the metrics (the others get ``{}``). The frozen methods run on the main process
    alone.

    Args:
        cfg: the resolved configuration.
        out: the run directory.
        resume: continue from the newest checkpoint in ``out/checkpoints`` (fine-tuning).
        overwrite: replace the results of a previous run in ``out``.
        progress: progress bars.

    Returns:
        The run directory, the test metrics written to its ``metrics.json``, and the step at
        which ``train.stop_after_steps`` ended the run early (then no metrics), if it did.

    Raises:
        LgaError: a bad run directory, dataset, configuration or description store.
    """
    out = Path(out)
    resolve_student_spec(cfg.student.spec)  # a missing folder fails here, before any output
    RunDir(out).check_owned()  # and a folder holding the user's model/ or metrics.json
    check_trackers(cfg.tracking.report_to)  # a tracker that cannot start stops the run here
    # A bad --out fails here too; a run that fails before producing anything leaves no folder,
    # and a run that fails later leaves no model/ (its model is staged until metrics.json).
    with output_dir(out, what="run folder"):
        try:
            if cfg.method.fine_tunes:
                return _fine_tune(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
            return _frozen(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
        except BaseException:
            RunDir(out).discard_unfinished_model()
            raise


def _frozen(
    cfg: FitConfig, out: Path, *, resume: bool, overwrite: bool, progress: bool
) -> FitResult:
    is_main, _ = main_process_only()
    if not is_main:
        return FitResult(RunDir(out), {})
    data = load_run_data(cfg, check_images=True, progress=progress)  # before the run dir
    prepare_run_dir(cfg, out, resume=resume, overwrite=overwrite)
    metrics = FROZEN_METHODS[cfg.method](cfg, data, out, progress)
    if cfg.tracking.report_to:
        track_frozen(cfg, out, metrics)
    return FitResult(RunDir(out), metrics)


def _fine_tune(
    cfg: FitConfig, out: Path, *, resume: bool, overwrite: bool, progress: bool
) -> FitResult:
    with run_accelerator(cfg, out) as acc:
        # One process decodes every image to validate the dataset; the others read the metadata.
        # A dataset the method cannot use is refused before the run directory is made.
        data = load_run_data(cfg, check_images=acc.is_main_process, progress=progress)
        if acc.is_main_process:
            prepare_run_dir(cfg, out, resume=resume, overwrite=overwrite)
        acc.wait_for_everyone()
        return fine_tune(cfg, data, out, acc, resume=resume, progress=progress)
