"""The Python API: the pipeline's stages as functions, for notebooks and scripts.

Each function is what the matching ``lga`` command does, without the command line::

    import lga

    data = lga.make_synthetic("synth-wb", n_train=600, n_val=200, n_test=400)
    lga.describe(data, teacher="oracle", store="synth-wb/descriptions.sqlite")
    cfg = lga.fit_config("lga", data, student="toy", descriptions="synth-wb/descriptions.sqlite")
    result = lga.fit(cfg, "runs/lga")
    lga.evaluate(data, "runs/lga/model", "runs/lga-eval")
    report = lga.make_report(["runs"], "report")

Everything here is imported lazily by ``import lga`` (which stays fast) and none of it selects
a matplotlib backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lga.report.model import Report, ReportOptions
    from lga.teacher.config import TeacherConfig
    from lga.teacher.runner import DescribeSummary
    from lga.train.config import FitConfig


def make_synthetic(out: str | Path, **settings: Any) -> Path:
    """Generate Waterbirds in miniature into ``out`` (``lga data synth``) and return the folder.

    Args:
        out: the dataset folder (new, empty, or an earlier output with the same settings).
        **settings: fields of :class:`lga.data.synth.SynthConfig` (``n_train``, ``n_val``,
            ``n_test``, ``correlation``, ``seed``, ``bird_scale``, ...).
    """
    from lga.data.synth import SynthConfig, generate

    return generate(out, SynthConfig(**settings))


def describe(
    data: str | Path,
    *,
    teacher: str = "oracle",
    store: str | Path,
    split: str = "train",
    dataset_config: str | None = None,
    prompts: str | None = None,
    progress: bool = False,
    **settings: Any,
) -> DescribeSummary:
    """Ask a teacher every prompt about every image of a split (``lga describe``).

    Finished answers in ``store`` are kept, so a second call asks only what is missing.

    Args:
        data: the dataset folder.
        teacher: ``oracle`` (synthetic datasets), ``hf:<hub id or folder>`` or
            ``openai:<base_url>#<model>``.
        store: the description store (SQLite file, created).
        split: ``train``, ``val``, ``test`` or ``all``.
        dataset_config: a shipped name or YAML file (default: the folder's dataset.yaml).
        prompts: a prompt set name or YAML file (default: the dataset's).
        progress: a progress bar.
        **settings: the teacher's settings, fields of :class:`lga.teacher.TeacherConfig`
            (``max_new_tokens``, ``batch_size``, ``concurrency``, ``request_options``, ...);
            the others keep its defaults.

    Raises:
        ConfigError: an unknown setting or a bad value, named.
        DescribeStopped: the run stopped early; what was done is stored.
    """
    from lga.teacher import build_describe_run

    run = build_describe_run(
        data,
        teacher_config(teacher, **settings),
        store,
        split=split,
        dataset_config=dataset_config,
        prompts=prompts,
        progress=progress,
    )
    return run.run()


def teacher_config(teacher: str = "oracle", **settings: Any) -> TeacherConfig:
    """The :class:`lga.teacher.TeacherConfig` that :func:`describe` runs with these arguments."""
    from lga.errors import ConfigError
    from lga.teacher.config import TeacherConfig

    if "spec" in settings:
        raise ConfigError("lga.describe(): the teacher's spec is given as teacher=")
    return TeacherConfig.from_mapping(
        {"spec": teacher, **settings},
        where="lga.describe()",
        name=lambda key: "teacher" if key == "spec" else key,
    )


def fit_config(
    method: str,
    data: str | Path,
    *,
    student: str = "toy",
    descriptions: str | Path | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> FitConfig:
    """The validated configuration of one ``lga fit`` run.

    Args:
        method: ``zero-shot``, ``linear-probe``, ``erm``, ``spurious-aware``, ``lga`` or ``dfr``.
        data: the dataset folder.
        student: ``toy`` (the shipped toy CLIP), a hub id or a checkpoint folder.
        descriptions: the description store (lga, ``sample.balance=background``).
        config: a run file (YAML path or a shipped name such as ``waterbirds-vitl14``).
        overrides: dotted ``KEY=VALUE`` settings applied last (``train.epochs=1``).

    Raises:
        ConfigError: an unknown key or a bad value, named.
    """
    from lga.train.config import build_fit_config

    return build_fit_config(
        method=method,
        data=data,
        student=student,
        descriptions=descriptions,
        run_file=config,
        overrides=overrides,
    )


def evaluate(
    data: str | Path,
    student: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    dataset_config: str | None = None,
    progress: bool = False,
) -> dict:
    """Score a checkpoint on a split and write a run directory (``lga eval``).

    ``student`` may be ``toy``, a hub id, a checkpoint folder or a run's ``model/`` (a
    linear-probe or DFR run's model is scored through its head). Returns the metrics.
    """
    from lga.config import EvalRunConfig, resolve_config
    from lga.evaluation.zero_shot import run_eval

    cfg = resolve_config(
        EvalRunConfig,
        base={
            "data": {"root": str(data), "dataset_config": dataset_config},
            "student": {"spec": str(student)},
            "eval": {"split": split},
        },
    )
    return run_eval(cfg, Path(out), progress=progress)


def make_report(
    runs: Sequence[str | Path], out: str | Path, options: ReportOptions | None = None
) -> Report:
    """The results table, plots and diagnostics of run directories (``lga report``).

    A folder without ``metrics.json`` stands for the runs below it. The returned report holds
    the table (``report.table``) and the written files (``report.files``: name -> path).
    """
    from lga.report.build import build_report

    return build_report(runs, out, options)
