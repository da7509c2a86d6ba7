"""What a fit reads and writes in its run folder: the configuration check before any work,
the results at the end, and what ``fit`` returns. The folder's layout is :mod:`lga.rundir`'s."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from lga.errors import LgaError
from lga.evaluation.zero_shot import metrics_from_predictions, train_group_counts
from lga.rundir import RunDir
from lga.student.toy import TOY_STUDENT, toy_checkpoint
from lga.train.config import RUN_CONTROL_KEYS, FitConfig
from lga.train.rundata import RunData

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What ``fit`` did.

    Attributes:
        run: the run directory.
        metrics: the test metrics written to ``metrics.json`` (``{}`` on the other processes
            of a multi-process run, and when the run stopped early).
        stopped_at_step: the step at which ``train.stop_after_steps`` ended this invocation
            (continue with ``resume=True``); None when the run finished.
    """

    run: RunDir
    metrics: dict
    stopped_at_step: int | None = None

    @property
    def finished(self) -> bool:
        return self.stopped_at_step is None


def config_changes(cfg: FitConfig, out: Path) -> list[str]:
    """What differs between ``cfg`` and the configuration saved in run folder ``out`` (the keys
    that control one invocation left out): ``["train.lr: 1e-05 -> 2e-05", ...]``."""
    saved = RunDir(out).config_file
    if not saved.is_file():
        return []
    return _config_diff(
        _comparable(yaml.safe_load(saved.read_text())), _comparable(cfg.model_dump(mode="json"))
    )


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _comparable(cfg_dict: dict) -> dict:
    d = yaml.safe_load(yaml.safe_dump(cfg_dict))
    for section, key in RUN_CONTROL_KEYS:
        d.get(section, {}).pop(key, None)
    student = d.get("student") or {}
    if student.get("spec") and _is_toy(student["spec"]):  # runs that recorded its folder
        student["spec"] = TOY_STUDENT
    return d


def _is_toy(spec: str) -> bool:
    try:
        return Path(spec).resolve() == toy_checkpoint().resolve()
    except (OSError, LgaError):
        return False


def prepare_run_dir(cfg: FitConfig, out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check ``out`` against the request and write ``config.yaml`` (main process only).

    A folder whose run never started (only ``config.yaml``: the previous attempt stopped
    before its first step, e.g. on a missing split) is reused as it is.

    Raises:
        LgaError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set,
            ``resume`` is asked with a configuration different from the run's, ``out`` holds
            names lga writes but no config.yaml of lga's, or ``out`` cannot be written.
    """
    rd = RunDir(out)
    rd.check_owned()  # never replace (or, with overwrite, remove) what lga did not write
    saved = rd.config_file
    if resume and saved.is_file():
        diff = config_changes(cfg, out)
        if diff:
            raise LgaError(
                f"--resume: the configuration differs from {saved}:\n  " + "\n  ".join(diff)
            )
    elif overwrite:
        rd.empty()
    elif saved.is_file() and rd.started:
        raise LgaError(
            f"{out} already holds a run; continue it with --resume, replace it "
            "with --overwrite, or choose another --out"
        )
    rd.write_config(cfg)


def final_metrics(cfg: FitConfig, data: RunData, preds, **extra) -> dict:
    """``metrics.json`` of a fit: the run's facts and the test metrics of ``preds``."""
    return {
        "name": cfg.run_name,
        "method": cfg.method.value,
        "student": cfg.student.spec,
        "split": "test",
        **metrics_from_predictions(
            preds, data.test, train_group_counts=train_group_counts(data.full)
        ),
        "n_train": len(data.sample),
        "select_by": cfg.eval.select_by,
        **extra,
        "skipped_rows": len(data.full.skipped),
    }


def write_results(out: Path, preds, metrics: dict) -> dict:
    """The test predictions, the model (published) and ``metrics.json``, in that order."""
    rd = RunDir(out)
    rd.write_predictions(preds)
    rd.publish_model()  # the staged model becomes RUN/model just before metrics.json
    rd.write_metrics(metrics)
    log.info(
        "wrote %s/metrics.json: accuracy %.2f%%, worst group %.2f%% (%s)",
        out,
        100 * metrics["accuracy"],
        100 * metrics["worst_group_accuracy"],
        metrics["worst_group"],
    )
    return metrics
