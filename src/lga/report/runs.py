"""Run directories read back for the report: method, student base, seed, metrics, predictions.

A run directory holds ``metrics.json``, ``predictions.parquet`` (or ``.csv``), ``config.yaml`` and,
for fine-tuned runs, ``model/``. Runs of the same method from the same base checkpoint are seeds of
one method: the report groups them and gives mean ± std.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lga.errors import LgaError
from lga.rundir import CHECKPOINTS, METRICS, MODEL, RunDir
from lga.train.config import Method

log = logging.getLogger(__name__)

# Dotted config keys that identify a seed, in the order they are looked up (``lga fit`` writes
# ``sample.seed``, the data seed, and ``train.seed``, the model-side seed).
SEED_KEYS = (
    "seed",
    "data_seed",
    "sample.seed",
    "data.seed",
    "data.data_seed",
    "train.seed",
    "train.data_seed",
)

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
        method: from ``metrics.json`` (else ``config.yaml``, else the folder name).
        name: the column it belongs to: ``metrics.json``'s ``name`` (two recipes of one method
            are two names), else the method.
        base: the checkpoint the run started from (``config.yaml`` ``student.spec``).
        seed: the seed keys found in ``config.yaml`` (``{}`` when none: the run is its own seed).
        metrics: ``metrics.json``.
        config: ``config.yaml`` (``{}`` when absent).
    """

    path: Path
    method: str
    base: str
    seed: dict[str, Any]
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.method

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
        n = self.metrics.get("n_train", dig(self.config, "sample.n_train"))
        return None if n is None else int(n)

    def data_root(self) -> Path | None:
        root = dig(self.config, "data.root")
        return Path(root) if root else None

    def dataset_config(self) -> str | None:
        return dig(self.config, "data.dataset_config")


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


def dig(d: Mapping[str, Any], dotted: str) -> Any:
    """``d["a"]["b"]`` for ``"a.b"``, or None when any part is missing."""
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def canonical_method(method: str) -> str:
    m = method.strip().lower()
    return METHOD_ALIASES.get(m, m)


def fine_tunes(method: str) -> bool:
    """Whether ``method`` fine-tunes the student (zero-shot and linear probe do not)."""
    try:
        return Method(canonical_method(method)).fine_tunes
    except ValueError:
        return True


def find_seed(config: Mapping[str, Any]) -> dict[str, Any]:
    """The seed keys present in a resolved config (``SEED_KEYS``), e.g. ``{"train.seed": 1}``."""
    return {k: v for k in SEED_KEYS if (v := dig(config, k)) is not None}


def load_run(path: str | Path) -> Run:
    """Read one run directory.

    Raises:
        LgaError: the folder or its ``metrics.json`` is missing or unreadable.
    """
    path = Path(path)
    rd = RunDir(path)
    metrics = rd.read_metrics()
    for key in ("accuracy", "group_accuracy", "worst_group_accuracy"):
        if key not in metrics:
            raise LgaError(f"{rd.metrics_file} has no {key!r}; is it an lga metrics file?")
    config = rd.read_config()
    method = metrics.get("method") or config.get("method") or path.name
    name = metrics.get("name") or config.get("name") or method
    base = dig(config, "student.spec") or metrics.get("student") or "?"
    return Run(path, str(method), str(base), find_seed(config), metrics, config, str(name))


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
