"""The run directory: the one interface between training, evaluation, report, explain and export.

Every producer (``lga eval`` and every ``lga fit`` method) writes the same shape, and every reader
goes through :class:`RunDir`::

    RUN/config.yaml          the resolved configuration (FitConfig, or EvalRunConfig for eval)
    RUN/metrics.json         the evaluated split's metrics (``lga.evaluation.metrics``
                             schema) and the run's facts (method, student, selection, size)
    RUN/predictions.parquet  one row per evaluated image: every metric can be recomputed from it
    RUN/train_log.jsonl      one record per logged step and per validation (runs that validate)
    RUN/model/               only when the run changed the model: fine-tuned weights
                             (save_pretrained), or the base weights with a linear head
                             (linear_probe.safetensors: linear probe, DFR). A run without it
                             (zero-shot, eval) scored its config's ``student.spec`` unchanged.
    RUN/balance.json         balanced batches: their source (teacher or groups), group counts
    RUN/checkpoints/         fine-tuning with train.checkpoint_every (Accelerate save_state)
    RUN/logs/                experiment trackers (TensorBoard)

A run is *finished* when ``metrics.json`` is there, *started* once it has produced anything
beyond its ``config.yaml`` (so a folder left by a run that stopped before its first step is
reused), and *resumable* when it holds a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lga.errors import LgaError

CONFIG = "config.yaml"
METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
TRAIN_LOG = "train_log.jsonl"
MODEL = "model"
BALANCE = "balance.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
CHECKPOINT_STATE = "trainer_state.json"  # written last into a checkpoint: it is complete

# What a run has produced once it has started: such a run is continued or replaced, never reused.
STARTED_FILES = (METRICS, PREDICTIONS, TRAIN_LOG, MODEL, CHECKPOINTS)
# Everything lga writes in a run directory (``--overwrite`` removes these and nothing else).
LGA_FILES = (
    CONFIG,
    METRICS,
    PREDICTIONS,
    TRAIN_LOG,
    MODEL,
    BALANCE,
    CHECKPOINTS,
    LOGS,
    METRICS + ".tmp",
    PREDICTIONS + ".tmp",
    MODEL + ".tmp",
    MODEL + ".old",
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

    def write_metrics(self, metrics: dict) -> Path:
        tmp = self.path / (METRICS + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(self.metrics_file)
        return self.metrics_file

    def write_predictions(self, preds: pd.DataFrame) -> Path:
        """``predictions.parquet`` (pyarrow), so any metric can be recomputed without the model."""
        tmp = self.path / (PREDICTIONS + ".tmp")
        preds.to_parquet(tmp, index=False)
        tmp.replace(self.predictions_file)
        return self.predictions_file

    def write_balance(self, summary: dict) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / BALANCE
        path.write_text(json.dumps(summary, indent=2) + "\n")
        return path

    def save_model(
        self, model: Any, processor: Any, extra: Callable[[Path], None] | None = None
    ) -> Path:
        """``RUN/model`` through a temporary folder (``extra(dir)`` adds files, e.g. a head)."""
        save_pretrained_atomic(model, processor, self.model_path, extra)
        return self.model_path

    def empty(self) -> None:
        """Remove what lga wrote; refuse, naming them, if other files are there.

        Raises:
            LgaError: the folder holds files lga did not write (nothing is removed then).
        """
        if not self.path.is_dir():
            return
        foreign = sorted(p.name for p in self.path.iterdir() if p.name not in LGA_FILES)
        if foreign:
            raise LgaError(
                f"--overwrite: {self.path} holds files lga did not write "
                f"({', '.join(foreign[:10])}{', ...' if len(foreign) > 10 else ''}); "
                "move them away or choose another --out"
            )
        for name in LGA_FILES:
            p = self.path / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

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

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json``.

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

    def read_train_log(self) -> list[dict]:
        return self.train_log().read()
