"""`lga eval`: zero-shot group-robustness evaluation of a CLIP-family checkpoint."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def add_student_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "--student",
        required=required,
        help="hub id (openai/clip-vit-large-patch14), a directory saved by transformers, or toy",
    )
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 on a CUDA GPU that has it, else float32",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a checkpoint's own Python code to run (off by default)",
    )


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="dataset folder holding metadata.csv")
    p.add_argument(
        "--dataset-config",
        default=None,
        help="shipped name (waterbirds) or YAML; default: DIR/dataset.yaml, else waterbirds",
    )
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="leave out faulty rows (each reported) instead of refusing the dataset",
    )
    p.add_argument(
        "--num-workers", type=int, default=2, help="DataLoader workers for image decoding"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: overall, per-class, per-group, worst-group accuracy",
        description="Classify a split through the class prompts (zero-shot), or through the "
        "linear head saved in a run's model/ folder (linear probe, DFR, or lga's description "
        "or projected head), and write "
        "RUN/metrics.json, RUN/predictions.parquet and RUN/config.yaml. Example: lga eval --data "
        "~/data/waterbird_complete95_forest2water2 "
        "--student openai/clip-vit-large-patch14 --out runs/zs-l14",
    )
    add_data_args(p)
    add_student_args(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default: runs/eval-<student>-<split>)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--templates",
        default="dataset",
        choices=["dataset", "single"],
        help="dataset: the config's template ensemble, averaged; single: the first only",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="feature cache (default $LGA_CACHE or ~/.cache/lga)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def default_run_name(prefix: str, student: str, suffix: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", student.rstrip("/").split("/")[-1]).strip("-")
    return Path("runs") / f"{prefix}-{name}-{suffix}"


def _run(args: argparse.Namespace) -> int:
    from lga.config import EvalRunConfig, resolve_config
    from lga.evaluation.metrics import format_metrics
    from lga.evaluation.zero_shot import run_eval

    cfg = resolve_config(
        EvalRunConfig,
        base={
            "data": {
                "root": args.data,
                "dataset_config": args.dataset_config,
                "skip_bad_rows": args.skip_bad_rows,
                "num_workers": args.num_workers,
            },
            "student": {
                "spec": args.student,
                "revision": args.revision,
                "device": args.device,
                "dtype": args.dtype,
                "trust_remote_code": args.trust_remote_code,
                "templates": args.templates,
            },
            "eval": {
                "split": args.split,
                "batch_size": args.batch_size,
                "cache_dir": args.cache_dir,
                "use_cache": not args.no_cache,
            },
        },
    )
    out = args.out or default_run_name("eval", args.student, args.split)
    metrics = run_eval(cfg, out, progress=not args.no_progress)
    print(f"{metrics['method']} {args.student} on {args.data} [{args.split}]")
    print(format_metrics(metrics))
    if metrics.get("skipped_rows"):
        print(f"({metrics['skipped_rows']} faulty row(s) skipped; see the warnings above)")
    print(f"wrote {out}/metrics.json and {out}/predictions.parquet")
    return 0
