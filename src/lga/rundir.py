"""The run directory: the one interface between training, evaluation, report, explain and export.

Every producer (``lga eval`` and every ``lga fit`` method) writes the same shape, and every reader
goes through :class:`RunDir`. A run that scores a frozen model without choosing anything
(``lga eval``, ``lga fit --method zero-shot``) holds exactly config.yaml, metrics.json and the
predictions; the other files come only with what a run does beyond that::

    RUN/config.yaml          the resolved configuration (FitConfig, or EvalRunConfig for eval)
    RUN/metrics.json         the evaluated split's metrics (``lga.evaluation.metrics``
                             schema) and the run's facts (method, student, selection, size),
                             written and read as a :class:`lga.records.RunMetrics`
    RUN/predictions.parquet  one row per evaluated image: every metric can be recomputed from it
    RUN/predictions_unseen.parquet  the same for the test images on places no training image
                             has (the dataset config's ``unseen_places``), when there are any:
                             metrics.json's ``unseen`` is computed from it alone
    RUN/train_log.jsonl      one record per logged step and per validation, for the runs that
                             train or choose on validation (fine-tuning; the C of linear probe
                             and DFR); a zero-shot fit's validation is in metrics.json (``val``)
    RUN/model/               only when the run changed the model: fine-tuned weights
                             (save_pretrained), or the base weights with a linear head
                             (linear_probe.safetensors: linear probe, DFR). A run without it
                             (zero-shot, eval) scored its config's ``student.spec`` unchanged.
                             Written only when the run finishes: until then the model is
                             staged in RUN/model.partial/, so a run that failed or stopped
                             has no model/.
    RUN/model.partial/       the model of a run in progress (the best so far)
    RUN/balance.json         balanced batches: their source (teacher or groups), group counts
    RUN/checkpoints/         fine-tuning with train.checkpoint_every (Accelerate save_state)
    RUN/logs/                experiment trackers (TensorBoard)

A run is *finished* when ``metrics.json`` is there (its model, if any, is moved to ``model/``
just before), *started* once it has produced anything
beyond its ``config.yaml`` (so a folder left by a run that stopped before its first step is
reused), and *resumable* when it holds a complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lga.errors import ConfigError, LgaError
from lga.outputs import honour_umask, make_output_dir
from lga.records import RunMetrics

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
UNSEEN_PREDICTIONS = "predictions_unseen.parquet"
TRAIN_LOG = "train_log.jsonl"
MODEL = "model"
BALANCE = "balance.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
CHECKPOINT_STATE = "trainer_state.json"  # written last into a checkpoint: it is complete
STAGED_MODEL = "model.partial"  # the model of a run in progress, moved to model/ at the end

# What a run has produced once it has started: such a run is continued or replaced, never reused.
STARTED_FILES = (
    METRICS,
    PREDICTIONS,
    UNSEEN_PREDICTIONS,
    TRAIN_LOG,
    MODEL,
    STAGED_MODEL,
    CHECKPOINTS,
)
# Everything lga writes in a run directory (``--overwrite`` removes these and nothing else).
LGA_FILES = (
    CONFIG,
    METRICS,
    PREDICTIONS,
    UNSEEN_PREDICTIONS,
    TRAIN_LOG,
    MODEL,
    STAGED_MODEL,
    BALANCE,
    CHECKPOINTS,
    LOGS,
    METRICS + ".tmp",
    PREDICTIONS + ".tmp",
    UNSEEN_PREDICTIONS + ".tmp",
    MODEL + ".tmp",
    MODEL + ".old",
    STAGED_MODEL + ".tmp",
    STAGED_MODEL + ".old",
)


def save_pretrained_atomic(
    model: Any, processor: Any, path: Path, extra: Callable[[Path], None] | None = None
) -> None:
    """``save_pretrained`` of model and processor into a temporary folder, then swap it in."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if extra is not None:
        extra(tmp)
    honour_umask(tmp)
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


class TrainLog:
    """``RUN/train_log.jsonl``: one JSON object per logged step and per validation."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a killed run's tail, about to be redone on resume)."""
        if not (self.enabled and self.path.is_file()):
            return
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in kept))


class RunDir:
    """One run directory: its files, their writers and readers, and its state."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths -------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def model_path(self) -> Path:
        """Where the run's model is (or would be) saved: ``RUN/model``."""
        return self.path / MODEL

    @property
    def staged_model_path(self) -> Path:
        """The model of a run in progress (the best so far): ``RUN/model.partial``."""
        return self.path / STAGED_MODEL

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    def train_log(self, enabled: bool = True) -> TrainLog:
        return TrainLog(self.path / TRAIN_LOG, enabled)

    # -- state -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.metrics_file.is_file()

    @property
    def started(self) -> bool:
        """Whether the run produced anything (a bare ``config.yaml`` is not a run)."""
        return any((self.path / name).exists() for name in STARTED_FILES)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        if not self.checkpoints.is_dir():
            return None
        done = sorted(
            p for p in self.checkpoints.glob("step_*") if (p / CHECKPOINT_STATE).is_file()
        )
        return done[-1] if done else None

    @property
    def resumable(self) -> bool:
        return self.latest_checkpoint() is not None

    @property
    def model_dir(self) -> Path | None:
        """``RUN/model`` when the run saved one (fine-tuned weights or a head), else None."""
        return self.model_path if (self.model_path / "config.json").is_file() else None

    def model_source(self) -> str:
        """What to load to get the run's model: ``RUN/model``, else the student it scored.

        Raises:
            LgaError: neither (no model/ and no ``student.spec`` in config.yaml).
        """
        if self.model_dir is not None:
            return str(self.model_dir)
        spec = (self.read_config().get("student") or {}).get("spec")
        if not spec:
            raise LgaError(f"{self.path}: no model/ folder and no student.spec in {CONFIG}")
        return str(spec)

    # -- writers -----------------------------------------------------------------------------

    def write_config(self, cfg: Any) -> Path:
        """The resolved configuration (a pydantic model) as YAML."""
        from lga.config import dump_config

        dump_config(cfg, self.config_file)
        return self.config_file

    def write_metrics(self, metrics: RunMetrics | dict) -> Path:
        """``metrics.json``, checked as a :class:`~lga.records.RunMetrics` before it is written.

        Raises:
            LgaError: a malformed record (the key named), before anything is written.
        """
        if not isinstance(metrics, RunMetrics):
            metrics = RunMetrics.from_json(metrics, source=self.metrics_file)
        return metrics.write(self.metrics_file)

    def write_predictions(self, preds: pd.DataFrame, *, unseen: bool = False) -> Path:
        """``predictions.parquet`` (pyarrow), so any metric can be recomputed without the model;
        ``unseen``: ``predictions_unseen.parquet``, the unseen-place test images."""
        path = self.path / UNSEEN_PREDICTIONS if unseen else self.predictions_file
        tmp = path.with_name(path.name + ".tmp")
        preds.to_parquet(tmp, index=False)
        tmp.replace(path)
        return path

    def write_balance(self, summary: dict) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / BALANCE
        path.write_text(json.dumps(summary, indent=2) + "\n")
        return path

    def save_model(
        self, model: Any, processor: Any, extra: Callable[[Path], None] | None = None
    ) -> Path:
        """The run's model so far, staged in :attr:`staged_model_path` (through a temporary
        folder; ``extra(dir)`` adds files, e.g. a head) until :meth:`publish_model`."""
        save_pretrained_atomic(model, processor, self.staged_model_path, extra)
        return self.staged_model_path

    def current_model(self) -> Path:
        """The staged model if there is one, else ``RUN/model`` (the run's model as it is now)."""
        staged = self.staged_model_path
        return staged if (staged / "config.json").is_file() else self.model_path

    def publish_model(self) -> None:
        """Move the staged model to ``RUN/model``: the last step before ``metrics.json``."""
        staged = self.staged_model_path
        if not (staged / "config.json").is_file():
            return
        old = self.path / (MODEL + ".old")
        if self.model_path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.model_path, old)
        os.replace(staged, self.model_path)
        shutil.rmtree(old, ignore_errors=True)

    def discard_unfinished_model(self) -> None:
        """Remove ``RUN/model`` of a run that has no ``metrics.json`` (a failed run)."""
        if not self.finished and self.model_path.is_dir():
            shutil.rmtree(self.model_path, ignore_errors=True)

    @property
    def written_by_lga(self) -> bool:
        """Whether ``config.yaml`` is one lga wrote (a mapping with ``method``, ``data`` and
        ``student``): only then are the folder's run files lga's to replace."""
        try:
            raw = yaml.safe_load(self.config_file.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False
        return isinstance(raw, dict) and {"method", "data", "student"} <= raw.keys()

    def check_owned(self) -> None:
        """Refuse a folder where lga would replace files it did not write.

        A folder without lga's ``config.yaml`` (the user's own, or any folder given as ``--out``)
        may hold other files, but none of the names lga writes (``model/``, ``metrics.json``
        ...): those would be replaced or, with ``--overwrite``, removed.

        Raises:
            LgaError: naming the files lga did not write that it would replace.
        """
        if not self.path.is_dir() or self.written_by_lga:
            return
        clash = [n for n in LGA_FILES if (self.path / n).exists() or (self.path / n).is_symlink()]
        if clash:
            names = ", ".join(n + ("/" if (self.path / n).is_dir() else "") for n in clash)
            raise LgaError(
                f"{self.path} is not an lga run folder (no config.yaml written by lga) and holds "
                f"{names}, which lga did not write and would replace; move them away or choose "
                "another --out"
            )

    def empty(self) -> None:
        """Remove what lga wrote (its names in :data:`LGA_FILES`); the user's other files stay.

        Raises:
            LgaError: the folder is not an lga run folder but holds names lga writes
                (:meth:`check_owned`): nothing is removed then.
        """
        if not self.path.is_dir():
            return
        self.check_owned()
        kept = sorted(p.name for p in self.path.iterdir() if p.name not in LGA_FILES)
        if kept:
            log.info("--overwrite: %s keeps files lga did not write: %s", self.path, kept)
        for name in LGA_FILES:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    # -- readers -----------------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a dict (``{}`` when absent).

        Raises:
            LgaError: it cannot be parsed.
        """
        if not self.config_file.is_file():
            return {}
        try:
            raw = yaml.safe_load(self.config_file.read_text()) or {}
        except yaml.YAMLError as e:
            raise LgaError(f"cannot parse {self.config_file}: {e}") from e
        return raw if isinstance(raw, dict) else {}

    def read_record(self) -> RunMetrics:
        """``metrics.json`` typed.

        Raises:
            LgaError: missing, not JSON, or malformed (the key named).
        """
        return RunMetrics.from_json(self.read_metrics(), source=self.metrics_file)

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` as written (:meth:`read_record` checks it and types it).

        Raises:
            LgaError: missing or not JSON.
        """
        if not self.metrics_file.is_file():
            raise LgaError(f"{self.path} is not a run directory: no {METRICS}")
        try:
            return json.loads(self.metrics_file.read_text())
        except json.JSONDecodeError as e:
            raise LgaError(f"cannot parse {self.metrics_file}: {e}") from e

    def read_predictions(self) -> pd.DataFrame:
        """``predictions.parquet`` (or a ``predictions.csv`` made by other tools)."""
        if self.predictions_file.is_file():
            return pd.read_parquet(self.predictions_file)
        csv = self.path / "predictions.csv"
        if csv.is_file():
            return pd.read_csv(csv)
        raise LgaError(f"{self.path} has no {PREDICTIONS} or predictions.csv")

    def read_unseen_predictions(self) -> pd.DataFrame | None:
        """``predictions_unseen.parquet``, or None when the run scored no unseen place."""
        path = self.path / UNSEEN_PREDICTIONS
        return pd.read_parquet(path) if path.is_file() else None

    def read_train_log(self) -> list[dict]:
        return self.train_log().read()


@contextmanager
def output_dir(path: str | Path, *, what: str = "output folder") -> Iterator[Path]:
    """:func:`make_output_dir` up front; if the work inside fails, a folder created here whose
    run never started (:attr:`lga.rundir.RunDir.started`: nothing but its config) is removed
    again, so that a failed command leaves nothing behind."""
    path = Path(path)
    created = not path.exists()
    make_output_dir(path, what=what)
    try:
        yield path
    except BaseException:
        if created and path.is_dir() and not RunDir(path).started:
            shutil.rmtree(path, ignore_errors=True)
        raise


def run_model_spec(spec: str) -> str:
    """A run folder given as a model: the model of a finished run, never of an unfinished one.

    ``RUN`` (a folder with ``config.yaml`` and no ``config.json``) names the run's model
    (:meth:`RunDir.model_source`); ``RUN/model`` is refused while ``RUN`` has no
    ``metrics.json``, as is ``RUN``; any other spec is returned as it is.

    Raises:
        ConfigError: the run has not finished; the message names what is missing.
    """
    path = Path(spec).expanduser()
    if not path.is_dir():
        return spec
    if (path / CONFIG).is_file() and not (path / "config.json").is_file():
        rd = RunDir(path)
        if not rd.finished:
            raise ConfigError(_unfinished(rd))
        return rd.model_source()
    if path.name == MODEL and (path.parent / CONFIG).is_file():
        rd = RunDir(path.parent)
        if not rd.finished:
            raise ConfigError(_unfinished(rd))
    return spec


def _unfinished(rd: RunDir) -> str:
    return (
        f"{rd.path} is a run that has not finished: no {rd.metrics_file}; continue it with "
        "`lga fit --resume` or pass a finished run or a checkpoint folder"
    )
