"""`lga fit`: fine-tune, probe or evaluate a CLIP student with one method: one run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from lga.commands import intermixed, positive_int
from lga.commands.eval import add_data_args, add_student_args, default_run_name
from lga.train.method import Method  # the parsers import nothing heavy (`lga --help`)

METHODS = tuple(m.value for m in Method)


def _n_train(value: str) -> int | None:
    return None if value == "all" else positive_int(value, also=" or 'all'")


def report_to(value: str) -> list[str]:
    """``--report-to tensorboard,wandb`` -> ["tensorboard", "wandb"]; ``none`` -> []."""
    from lga.train.config import TRACKERS

    names = [v.strip() for v in value.split(",") if v.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected none or a comma-separated list of {', '.join(TRACKERS)}; got {value!r}"
        )
    return names


def add_report_to(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--report-to",
        type=report_to,
        default=None,
        metavar="TRACKERS",
        help="experiment trackers: tensorboard, wandb, mlflow (comma-separated) or none "
        "(default). Install the tracker's extra: pip install 'lga[tensorboard]'",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = intermixed(sub, _add_parser)
    add_data_args(p)
    _add_arguments(p)
    p.set_defaults(func=_run)


def _add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser(
        "fit",
        help="train one method (zero-shot, linear-probe, erm, spurious-aware, lga, dfr)",
        description="Fit a CLIP student with one method on a seeded training sample, select the "
        "checkpoint on validation, evaluate on test, and write RUN/{config.yaml, model/, "
        "metrics.json, predictions.parquet, train_log.jsonl, checkpoints/}. Settings come from "
        "the defaults, then --config, then the flags, then KEY=VALUE overrides (train.lr=5e-6). "
        "Runs on several GPUs or nodes under `accelerate launch -m lga.cli fit ...`. Example: "
        "lga fit --data ~/data/waterbird_complete95_forest2water2 --config waterbirds-vitl14 "
        "--method lga --descriptions runs/llava.sqlite --out runs/lga-l14",
    )


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_student_args(p, required=False)
    # Only flags given on the command line override the --config file.
    p.set_defaults(num_workers=None, device=None, dtype=None)
    p.add_argument("--method", choices=METHODS, default=None)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default: runs/fit-<student>-<method>)",
    )
    p.add_argument(
        "--descriptions",
        type=Path,
        default=None,
        help="description store written by `lga describe`",
    )
    p.add_argument(
        "--n-train",
        type=_n_train,
        default=argparse.SUPPRESS,
        help="training images sampled from the train split (default 2000; 'all')",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sets sample.seed and train.seed (override them apart with KEY=VALUE)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="run file: a YAML path or a shipped name (waterbirds-vitb32, waterbirds-vitl14)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in RUN/checkpoints",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run in RUN: removes the files lga wrote there, no others",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_report_to(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, applied last (train.lr=5e-6 lga.supcon=in)",
    )


def _put(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for k in parents:
        d = d.setdefault(k, {})
    d[last] = value


def flag_layer(args: argparse.Namespace) -> dict:
    """The flags that :func:`build_fit_config` does not name, as nested settings (absent
    flags leave the layers below them in place)."""
    flags = {
        "data.dataset_config": args.dataset_config,
        "data.num_workers": args.num_workers,
        "student.revision": args.revision,
        "student.device": args.device,
        "student.dtype": args.dtype,
        "train.epochs": args.epochs,
        "train.lr": args.lr,
        "train.batch_size": args.batch_size,
        "tracking.report_to": args.report_to,
    }
    layer: dict = {}
    for key, value in flags.items():
        if value is not None:
            _put(layer, key, value)
    for key, on in (
        ("data.skip_bad_rows", args.skip_bad_rows),
        ("student.trust_remote_code", args.trust_remote_code),
    ):
        if on:
            _put(layer, key, True)
    if hasattr(args, "n_train"):
        _put(layer, "sample.n_train", args.n_train)
    return layer


def resolve_fit_config(args: argparse.Namespace):
    """Defaults < ``--config`` file < flags < ``KEY=VALUE`` overrides, validated
    (:func:`lga.train.config.build_fit_config`)."""
    from lga.train.config import build_fit_config

    return build_fit_config(
        method=args.method,
        data=args.data,
        student=args.student,
        descriptions=args.descriptions,
        seed=args.seed,
        run_file=args.config,
        settings=flag_layer(args),
        overrides=args.overrides,
    )


def _run(args: argparse.Namespace) -> int:
    from lga.evaluation.metrics import format_metrics
    from lga.train import fit

    cfg = resolve_fit_config(args)
    out = args.out or default_run_name("fit", cfg.student.spec, cfg.method.value)
    result = fit(
        cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress
    )
    if not result.finished:
        print(f"stopped after step {result.stopped_at_step}; continue with --resume")
    elif result.metrics:  # the main process
        print(f"{cfg.method.value} / {cfg.student.spec} on {cfg.data.root} [test]")
        print(format_metrics(result.metrics))
        from lga.rundir import METRICS, PREDICTIONS, TRAIN_LOG

        written = ", ".join(
            n for n in (METRICS, PREDICTIONS, TRAIN_LOG) if (Path(out) / n).exists()
        )
        print(f"wrote {out}/{written}" + (", model/" if result.run.model_dir else ""))
    return 0
