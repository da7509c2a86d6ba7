"""``lga reproduce`` and ``lga demo``: every method of a config, over seeds, then the report.

A reproduction config names the data (a folder, or a synthetic world to generate), the teacher,
the student, the methods, the seeds, and the fit settings shared by every method (with optional
per-method changes). Every stage is resumable: the teacher never re-asks a finished description,
and a (method, seed) run that has its ``metrics.json`` is not run again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, PlainSerializer, PlainValidator, model_validator

from lga.config import (
    Strict,
    deep_merge,
    read_yaml,
    resolve_config,
    resolve_config_file,
    shipped_names,
)
from lga.data.dataset import GroupDataset, load_dataset, subsample
from lga.errors import ConfigError, DataError, LgaError
from lga.outputs import make_output_dir
from lga.rundir import RunDir
from lga.teacher.config import TeacherConfig
from lga.train.config import FitConfig, Method, build_fit_config

if TYPE_CHECKING:
    from lga.teacher import DescribeSummary

log = logging.getLogger(__name__)


class ReproduceData(Strict):
    root: Path | None = None  # a Waterbirds-layout folder (or given with --data)
    synth: dict[str, Any] | None = None  # SynthConfig keys: generate the data into OUT/data
    dataset_config: str | None = None


@dataclass(frozen=True)
class TeacherRun:
    """A reproduce config's ``teacher:`` block: the teacher's settings (the keys of
    :class:`lga.teacher.TeacherConfig`; ``options`` is read as ``request_options``, the
    ``--teacher-option`` fields) and ``store``. ``spec`` unset: no teacher runs, and the
    methods read the store given."""

    config: TeacherConfig = field(default_factory=TeacherConfig)
    store: Path | None = None  # default OUT/descriptions.sqlite

    @property
    def spec(self) -> str | None:
        return self.config.spec

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any] | None, *, where: str | None = None
    ) -> TeacherRun:
        """The block from its keys.

        Raises:
            ConfigError: ``<where>: teacher.<key>: ...`` for an unknown key or a bad value.
        """
        head = f"{where}: " if where else ""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{head}teacher: must be a mapping of settings, not {values!r}")
        values = dict(values)
        if "options" in values:  # the block's older name for request_options
            if "request_options" in values:
                raise ConfigError(f"{head}teacher: give options or request_options, not both")
            values["request_options"] = values.pop("options")
        known = [*TeacherConfig.keys(), "store"]
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{head}teacher.{key}: unknown teacher setting; the settings are "
                    + ", ".join(known)
                )
        store = values.pop("store", None)
        if store is not None and not isinstance(store, str | Path):
            raise ConfigError(f"{head}teacher.store: {store!r} is not a path")
        config = TeacherConfig.from_mapping(values, where=where)
        return cls(config, None if store is None else Path(store))

    def to_mapping(self) -> dict[str, Any]:
        """Every setting and the store (what :meth:`from_mapping` reads back)."""
        return {
            **self.config.to_mapping(),
            "store": None if self.store is None else str(self.store),
        }

    def replace(self, **changes: Any) -> TeacherRun:
        """A copy with ``changes`` (settings or ``store``), checked."""
        return TeacherRun.from_mapping({**self.to_mapping(), **changes})


def _teacher_block(value: Any) -> TeacherRun:
    if isinstance(value, TeacherRun):
        return value
    try:
        return TeacherRun.from_mapping(value)
    except ConfigError as e:  # pydantic reports it under the `teacher` key
        raise ValueError(str(e).removeprefix("teacher.").removeprefix("teacher: ")) from None


TeacherBlock = Annotated[
    TeacherRun, PlainValidator(_teacher_block), PlainSerializer(TeacherRun.to_mapping)
]


class DescribeFailed(LgaError):
    """Describing left failed items: no method is fitted on a partial store (rerun to retry)."""

    def __init__(self, message: str, summary: DescribeSummary):
        super().__init__(message)
        self.summary = summary


class Recipe(Strict):
    """A named column: a method with its own settings (``lga-slides``: lga with the slides'
    weights). Its ``fit`` changes apply on top of the shared ``fit``, not on the method's
    ``method_overrides``: a recipe says everything that differs."""

    method: Method
    fit: dict[str, Any] = Field(default_factory=dict)


class ReproduceConfig(Strict):
    """What ``lga reproduce`` runs.

    ``methods`` lists the table's columns: a method's name (its ``method_overrides`` apply) or
    the name of one of ``recipes``."""

    name: str
    data: ReproduceData = ReproduceData()
    teacher: TeacherBlock = TeacherRun()
    student: dict[str, Any] = Field(
        default_factory=lambda: {"spec": "openai/clip-vit-base-patch32"}
    )
    methods: list[str] = Field(min_length=1)
    recipes: dict[str, Recipe] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    fit_base: str | None = None  # a run config (shipped name or YAML) under the `fit` keys
    fit: dict[str, Any] = Field(default_factory=dict)  # FitConfig keys shared by every method
    method_overrides: dict[Method, dict[str, Any]] = Field(default_factory=dict)
    quick: dict[str, Any] = Field(default_factory=dict)  # changes applied by --quick

    @model_validator(mode="after")
    def _names(self) -> ReproduceConfig:
        methods = {m.value for m in Method}
        clash = sorted(set(self.recipes) & methods)
        if clash:
            raise ValueError(f"recipes {clash} are named like methods; give them other names")
        unknown = [n for n in self.methods if n not in methods and n not in self.recipes]
        if unknown:
            raise ValueError(
                f"methods {unknown} are neither methods ({', '.join(sorted(methods))}) nor "
                f"recipes ({', '.join(sorted(self.recipes)) or 'none defined'})"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a name twice: {self.methods}")
        return self

    def method_of(self, name: str) -> Method:
        """The method a column name runs."""
        return self.recipes[name].method if name in self.recipes else Method(name)


def shipped_configs() -> list[str]:
    return shipped_names("reproduce")


def load_reproduce_config(
    name_or_path: str | Path, *, quick: bool = False, overrides: list[str] = ()
) -> ReproduceConfig:
    """A shipped config name (``demo``, ``waterbirds-vitl14``) or a YAML file, validated."""
    path = resolve_config_file(name_or_path, "reproduce", "reproduction config")
    raw = read_yaml(path)
    if quick:
        raw = deep_merge(raw, raw.get("quick", {}))
    TeacherRun.from_mapping(raw.get("teacher"), where=str(path))  # a bad key named with its file
    cfg = resolve_config(ReproduceConfig, base=raw, overrides=list(overrides))
    store = Path("descriptions.sqlite") if cfg.teacher.spec or cfg.teacher.store else None
    for name in cfg.methods:  # every column's fit settings checked now, before any data is made
        run_fit_config(cfg, name, cfg.seeds[0], Path("data"), store)
    return cfg


def run_fit_config(
    cfg: ReproduceConfig,
    name: str | Method,
    seed: int,
    root: Path,
    store: Path | None,
    group: str | None = None,
    variant: dict[str, str | None] | None = None,
) -> FitConfig:
    """The FitConfig of one (column, seed): shared settings, the method's changes or the
    recipe's, seed, data; the trackers' group defaults to ``group`` (the reproduction folder's
    name); ``variant`` (``{"teacher", "settings_hash"}``) picks the store's answers of this
    config's teacher where the store holds others too. The store is given only to a run whose
    result moves with the teacher (:attr:`FitConfig.reads_teacher`)."""
    name = name.value if isinstance(name, Method) else name
    method = cfg.method_of(name)
    changes = cfg.recipes[name].fit if name in cfg.recipes else cfg.method_overrides.get(method, {})
    settings = deep_merge(
        deep_merge(cfg.fit, changes),
        {
            "name": name if name in cfg.recipes else None,
            "data": {"dataset_config": cfg.data.dataset_config},
            "student": {k: v for k, v in cfg.student.items() if k != "spec"},
        },
    )
    build = partial(
        build_fit_config,
        method=method,
        data=root,
        student=cfg.student["spec"],  # as given ("toy" stays "toy", as with lga fit)
        seed=seed,
        run_file=cfg.fit_base,
        defaults={"tracking": {"group": group}} if group is not None else None,
    )
    if store is None:
        return build(settings=settings)
    given = build(
        settings=deep_merge(settings, {"descriptions": {"store": str(store), **(variant or {})}})
    )
    return given if given.reads_teacher else build(settings=settings)


def prepare_data(cfg: ReproduceConfig, out: Path, data_root: Path | None, progress: bool) -> Path:
    """The dataset folder: ``--data``, the config's root, or the synthetic world generated."""
    if data_root is not None or cfg.data.root is not None:
        return Path(data_root or cfg.data.root)
    if cfg.data.synth is None:
        raise ConfigError(f"config {cfg.name!r} names no data: pass --data DIR")
    from lga.data.synth import SynthConfig, generate

    workers = min(2, os.cpu_count() or 1)  # the images do not depend on the worker count
    return generate(out / "data", SynthConfig(**cfg.data.synth), progress=progress, workers=workers)


def training_images(cfg: ReproduceConfig, root: Path, store: Path) -> GroupDataset:
    """The union of every seed's training sample: the only images the teacher must describe."""
    full = load_dataset(root, cfg.data.dataset_config, splits=[], check_images=False)
    train = full.split("train")
    ids = set()
    for seed in cfg.seeds:
        for name in cfg.methods:  # the sample each run draws, with fit_base and overrides
            sample = run_fit_config(cfg, name, seed, root, store).sample
            ids |= set(subsample(train, sample.n_train, seed=sample.seed).img_ids.tolist())
    return train.select(train.table["img_id"].isin(ids).to_numpy())


def describe_samples(
    cfg: ReproduceConfig, root: Path, store: Path, progress: bool
) -> DescribeSummary:
    """Ask the teacher about every training image any seed uses (finished ones are skipped).

    Raises:
        DescribeFailed: items are left failed (their rows say why; a rerun retries them).
        DescribeStopped: the run stopped early (unreachable server, refusals, a failure streak).
    """
    from lga.teacher import build_describe_run

    ids = training_images(cfg, root, store).img_ids.tolist()
    run = build_describe_run(
        root,
        cfg.teacher.config,
        store,
        dataset_config=cfg.data.dataset_config,
        img_ids=ids,
        progress=progress,
    )
    summary = run.run()
    log.info("descriptions: %s", summary.line())
    if summary.failed:
        raise DescribeFailed(
            f"{summary.failure_line()}: no method fitted on incomplete descriptions; the answers "
            f"are kept in {store}, rerun the same command to retry the failed ones",
            summary,
        )
    return summary


def run_dir(out: Path, name: str | Method, seed: int) -> Path:
    return out / "runs" / f"{name.value if isinstance(name, Method) else name}-seed{seed}"


def reproduce(
    cfg: ReproduceConfig,
    out: str | Path,
    *,
    data_root: Path | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> list[Path]:
    """Run every (method, seed) of ``cfg`` into ``out/runs`` and write ``out/report``.

    Args:
        jobs: runs at once, each in its own process with ``cpu_count // jobs`` threads (1: one
            after the other in this process). Every run is seeded by its config alone, so the
            runs are the same either way up to float rounding of other thread counts.

    Returns:
        The run directories.
    """
    from lga.train.fit import config_changes

    out = Path(out)
    given = data_root or cfg.data.root
    if given is not None and not Path(given).is_dir():  # before any folder is made
        raise DataError(f"dataset folder not found: {given}", listed=False)
    make_output_dir(out, what="reproduction folder")
    root = prepare_data(cfg, out, data_root, progress)
    store = cfg.teacher.store or (out / "descriptions.sqlite" if cfg.teacher.spec else None)
    variant = None
    if cfg.teacher.spec:
        done = describe_samples(cfg, root, store, progress)
        variant = {"teacher": done.teacher, "settings_hash": done.settings_hash}
    runs, todo = [], []
    for seed in cfg.seeds:
        for name in cfg.methods:
            rd = run_dir(out, name, seed)
            runs.append(rd)
            fc = run_fit_config(
                cfg, name, seed, root, store, group=out.resolve().name, variant=variant
            )
            if RunDir(rd).finished:
                if changed := config_changes(fc, rd):  # never a stale result under a new recipe
                    raise LgaError(
                        f"{rd} holds a finished run of another configuration ("
                        + "; ".join(changed[:5])
                        + "): choose another --out, or remove that run folder to redo it"
                    )
                log.info("%s: done already", rd)
                continue
            todo.append((f"{name} (seed {seed})", fc, rd))
    if jobs > 1 and len(todo) > 1:
        _fit_in_processes(todo, jobs, progress)
    else:
        for label, fc, rd in todo:
            _fit_one(label, fc, rd, progress)
    return runs


def _fit_one(label: str, fc: FitConfig, rd: Path, progress: bool) -> None:
    from lga.train import fit

    resume = RunDir(rd).resumable  # a killed run continues where it stopped
    log.info("fitting %s%s", label, " (resuming)" if resume else "")
    fit(fc, rd, resume=resume, overwrite=not resume, progress=progress)


def _worker_init(threads: int, level: int, start_method: str) -> None:
    """A run process: its share of the cores, the parent's log level (its environment, with the
    CLI's transformers settings, comes with the spawn), and the parent's start method for its
    data loader workers (a spawned process would otherwise spawn them too, each importing torch
    anew: 20 s per split)."""
    import multiprocessing

    import torch

    multiprocessing.set_start_method(start_method, force=True)
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _fit_in_processes(todo: list[tuple[str, FitConfig, Path]], jobs: int, progress: bool) -> None:
    """The runs of ``todo``, ``jobs`` at a time in spawned processes, in the order given; one bar
    counts finished runs. A failed run stops the ones not started (those that finished keep
    their results, a killed one resumes next time) and its error is raised here."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm

    jobs = min(jobs, len(todo))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log.info("%d runs, %d at a time (%d thread%s each)", len(todo), jobs, threads,
             "" if threads == 1 else "s")  # fmt: skip
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),  # no forked torch or thread state
        initializer=_worker_init,
        initargs=(
            threads,
            logging.getLogger().getEffectiveLevel(),
            multiprocessing.get_start_method(),
        ),
    ) as pool:
        futures = {pool.submit(_fit_one, label, fc, rd, False): label for label, fc, rd in todo}
        bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress)
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    if (e := f.exception()) is not None:
                        log.error("%s failed; the runs not started are left for next time",
                                  futures[f])  # fmt: skip
                        raise e
                    bar.update(1)
                    bar.set_postfix_str(futures[f])
        finally:
            bar.close()
            for f in pending:
                f.cancel()
