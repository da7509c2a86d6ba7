"""`lga bench`: measure every stage of the pipeline as side-by-side ratios against their goals."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

EPILOG = """figures (goal):
  teacher_batch_speedup        hf: teacher, items/s at batch B over batch 1 (>= 3)
  teacher_concurrency_speedup  openai: teacher, items/s at concurrency 16 over 1, 50 ms (>= 10)
  train_pipeline_efficiency    full lga step images/s over bare forward+backward, ViT-B/32 (>= 0.9)
  eval_cache_speedup           second lga eval of a frozen model over the first (>= 20)
  store_writes_per_s           description rows committed per second (>= 5000)

examples:
  lga bench --quick --json bench.json      # about two minutes on two CPU cores
  lga bench --only store_writes_per_s,teacher_concurrency_speedup
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure teacher, training, evaluation and store throughput against their goals",
        description="Build a small dataset and random-weight checkpoints offline, measure each "
        "figure as a ratio of two runs timed side by side, print a table and optionally write "
        "JSON (each figure with value, goal, passed, sizes, command; the machine).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes (about two minutes on CPU)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results here")
    p.add_argument(
        "--only", default=None, metavar="NAME,...", help="measure only these figures (see below)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (teacher, training, evaluation)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's, or 1 when the machine is already loaded)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the datasets, checkpoints and runs here (default: a temporary folder, removed)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a figure misses its goal")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lga.bench.common import FIGURES, FULL, QUICK
    from lga.bench.run import format_table, run_benchmarks
    from lga.errors import ConfigError

    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    unknown = sorted(set(only or []) - set(FIGURES))
    if unknown:
        raise ConfigError(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lga-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["lga", *sys.argv[1:]]) if sys.argv[1:] else "lga bench"
    try:
        results = run_benchmarks(
            QUICK if args.quick else FULL,
            workdir,
            device=args.device,
            only=only,
            threads=args.threads,
            command=command,
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    results["plan"]["quick"] = args.quick
    print(format_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    failed = [n for n in FIGURES if n in results and not results[n]["passed"]]
    return 1 if args.strict and failed else 0
