"""Run directories read back for the report: method, student base, seed, metrics, predictions.

A run directory holds ``metrics.json``, ``predictions.parquet`` (or ``.csv``), ``config.yaml`` and,
for fine-tuned runs, ``model/``. Runs of the same method from the same base checkpoint are seeds of
one method: the report groups them and gives mean ± std. Both records are read typed:
``metrics.json`` as a :class:`~lga.records.RunMetrics`, ``config.yaml`` as the run's FitConfig
(its seeds: ``sample.seed`` and ``train.seed``) or EvalRunConfig (no seed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from lga.config import EvalRunConfig
from lga.errors import LgaError
from lga.records import RunMetrics
from lga.rundir import CHECKPOINTS, METRICS, MODEL, RunDir
from lga.train.config import FitConfig, Method, load_run_config

log = logging.getLogger(__name__)

# The slides' column order (``lga fit``'s methods); other names come after, alphabetically.
METHOD_ORDER = tuple(m.value for m in Method)
# Spellings of the same methods seen in run names and other tools (exact matches only).
METHOD_ALIASES = {
    "zero_shot": "zero-shot",
    "zeroshot": "zero-shot",
    "linear_probe": "linear-probe",
    "binary-clip": "erm",
    "binary_clip": "erm",
    "spurious_aware": "spurious-aware",
}


@dataclass
class Run:
    """One run directory, read.

    Attributes:
        path: the run directory.
        record: ``metrics.json``.
        config: ``config.yaml``: the FitConfig of an ``lga fit`` run, the EvalRunConfig of an
            ``lga eval`` run, None when absent.
    """

    path: Path
    record: RunMetrics
    config: FitConfig | EvalRunConfig | None = None

    @property
    def method(self) -> str:
        return self.record.method

    @property
    def name(self) -> str:
        """The column it belongs to: ``metrics.json``'s ``name`` (two recipes of one method
        are two names), else the config's, else the method."""
        return self.record.name or getattr(self.config, "name", None) or self.method

    @property
    def base(self) -> str:
        """The checkpoint the run started from (``student.spec``)."""
        return self.config.student.spec if self.config else (self.record.student or "?")

    @property
    def seed(self) -> dict[str, int]:
        """The seeds of an ``lga fit`` run (``{}`` for others: the run is its own seed)."""
        if not isinstance(self.config, FitConfig):
            return {}
        return {"sample.seed": self.config.sample.seed, "train.seed": self.config.train.seed}

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` as a dict, for the table's metric paths (``group_accuracy/...``)."""
        return self.record.to_json()

    @property
    def model_dir(self) -> Path | None:
        """``RUN/model`` when the run saved a model (fine-tuned, or with a head), else None."""
        return RunDir(self.path).model_dir

    @property
    def seed_label(self) -> str:
        if not self.seed:
            return self.path.name
        return ",".join(f"{k}={v}" for k, v in self.seed.items())

    @property
    def sort_key(self) -> tuple:
        return (tuple(str(v).zfill(12) for v in self.seed.values()), str(self.path))

    def predictions(self) -> pd.DataFrame:
        """``predictions.parquet`` (or ``.csv``) of the run."""
        return RunDir(self.path).read_predictions()

    @property
    def n_train(self) -> int | None:
        """Training images (``metrics.json`` ``n_train``, else ``sample.n_train``), if known."""
        if self.record.n_train is not None:
            return self.record.n_train
        return self.config.sample.n_train if isinstance(self.config, FitConfig) else None

    def data_root(self) -> Path | None:
        return Path(self.config.data.root) if self.config else None

    def dataset_config(self) -> str | None:
        return self.config.data.dataset_config if self.config else None

    @property
    def templates(self) -> str | None:
        """``student.templates``: the class prompts the run scored with, if known."""
        return self.config.student.templates if self.config else None


@dataclass
class MethodRuns:
    """The seeds of one method from one base checkpoint: a column of the results table."""

    label: str
    method: str
    base: str
    runs: list[Run]
    n_train: int | None = None

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    @property
    def is_zero_shot(self) -> bool:
        return canonical_method(self.method) == "zero-shot"

    @property
    def fine_tunes(self) -> bool:
        """Whether the method trains CLIP, so that its ``model/`` differs from the base (an
        unknown method is taken to)."""
        return fine_tunes(self.method)


def canonical_method(method: str) -> str:
    m = method.strip().lower()
    return METHOD_ALIASES.get(m, m)


def fine_tunes(method: str) -> bool:
    """Whether ``method`` fine-tunes the student (zero-shot and linear probe do not)."""
    try:
        return Method(canonical_method(method)).fine_tunes
    except ValueError:
        return True


def load_run(path: str | Path) -> Run:
    """Read one run directory: its ``metrics.json`` and ``config.yaml``, typed.

    Raises:
        LgaError: the folder or its ``metrics.json`` is missing, or a record is malformed (the
            file and the key named).
    """
    path = Path(path)
    return Run(path, RunDir(path).read_record(), load_run_config(path))


def _short(base: str) -> str:
    return base.rstrip("/").split("/")[-1]


def group_runs(runs: Iterable[Run]) -> list[MethodRuns]:
    """Group runs by (name, base checkpoint, training-set size) into the table's columns, in
    the slides' method order (recipes of a method after it).

    The label is the method name, with the base checkpoint's short name and/or ``n=<n_train>``
    added when the runs differ in them (a sweep over sample sizes is not a set of seeds). Two
    runs of one group with the same seed are kept (each is a sample) but logged, since it
    usually means the same run was passed twice under two names.
    """
    runs = list(runs)
    groups: dict[tuple[str, str, int | None], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.name, r.base, _size(r)), []).append(r)
    several_bases = len({r.base for r in runs}) > 1
    several_sizes = len({_size(r) for r in runs if _size(r) is not None}) > 1
    out = []
    for (name, base, n_train), members in groups.items():
        members.sort(key=lambda r: r.sort_key)
        seeds = [r.seed_label for r in members]
        if len(set(seeds)) < len(seeds):
            log.warning("method %s (%s): several runs share a seed (%s)", name, base, seeds)
        tags = [_short(base)] if several_bases else []
        if several_sizes and n_train is not None:
            tags.append(f"n={n_train}")
        label = f"{name} [{', '.join(tags)}]" if tags else name
        out.append(MethodRuns(label, members[0].method, base, members, n_train))
    return sorted(out, key=_column_key)


def _size(run: Run) -> int | None:
    """The training-set size that tells runs apart (none for zero-shot, which trains nothing)."""
    return None if canonical_method(run.method) == "zero-shot" else run.n_train


def _column_key(m: MethodRuns) -> tuple:
    c = canonical_method(m.method)
    rank = METHOD_ORDER.index(c) if c in METHOD_ORDER else len(METHOD_ORDER)
    name = m.runs[0].name
    recipe = canonical_method(name) != c  # a named recipe comes after its method's own column
    return (rank, c, recipe, name, m.base, -(m.n_train or 0))


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: a folder without ``metrics.json`` stands for the run
    directories below it (e.g. the output folder of ``lga demo``), found recursively."""
    out: list[Path] = []
    for p in map(Path, paths):
        if RunDir(p).finished or not p.is_dir():
            out.append(p)
            continue
        found = sorted(
            f.parent
            for f in p.rglob(METRICS)
            if not {MODEL, CHECKPOINTS} & set(f.relative_to(p).parts[:-1])
        )
        if not found:
            raise LgaError(f"{p} holds no run directory (no metrics.json in it or below it)")
        out.extend(found)
    return out


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Read run directories, each once (the same folder given twice is read once).

    A folder without ``metrics.json`` stands for the run directories below it.
    """
    seen: dict[Path, Run] = {}
    for p in expand_run_dirs(paths):
        key = p.resolve()
        if key not in seen:
            seen[key] = load_run(p)
    if not seen:
        raise LgaError("no run directories given")
    return list(seen.values())
