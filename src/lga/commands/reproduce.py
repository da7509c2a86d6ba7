"""`lga reproduce CONFIG` and `lga demo`: every method over seeds, then the report."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from lga.commands import intermixed, positive_int
from lga.commands.fit import add_report_to


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="the embedded offline demo: synthetic Waterbirds, a faulty oracle teacher, toy CLIP",
        description="Generate Waterbirds in miniature (with test birds on snow and desert, "
        "backgrounds no training image has), describe it with the oracle teacher erring as "
        "LLaVA-class models do (faults=llava-like), fit zero-shot, linear probe, ERM, ERM on "
        "teacher-balanced batches, spurious-aware, lga, lga with the slides' recipe and DFR "
        "from the shipped toy CLIP over 3 seeds, print the results table and write the report. "
        "About 4-5 minutes on 2 CPU cores (--quick: about 2). Example: lga demo --out lga-demo",
    )
    demo.add_argument("--out", type=Path, default=Path("lga-demo"), help="output folder")
    demo.add_argument("--quick", action="store_true", help="smaller sets, for a smoke test / CI")
    demo.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="runs at once, each in its own process with its share of the CPU cores "
        "(default: the number of cores, at most 4)",
    )
    demo.set_defaults(func=_demo)

    rep = intermixed(
        sub,
        lambda s: s.add_parser(
            "reproduce",
            help="run every method of a config over its seeds, then the report",
            description="CONFIG is a shipped name (demo, waterbirds-vitb32, waterbirds-vitl14) "
            "or a YAML file. Finished descriptions and runs are never redone, so a killed "
            "reproduction resumes. When describing leaves failed items (or stops early), the "
            "failures are summarised and it exits 1 before fitting; a rerun retries them. "
            "Example: lga reproduce waterbirds-vitl14 --data "
            "~/data/waterbird_complete95_forest2water2 --out repro-l14",
        ),
    )
    _config_args(rep)
    rep.set_defaults(func=_reproduce)

    sw = intermixed(
        sub,
        lambda s: s.add_parser(
            "sweep",
            help="accuracy against the number of training images, or against the teacher's "
            "fault rate (--over teacher)",
            description="--over size (default): run a reproduction config at several training-set "
            "sizes and plot accuracy against size per method. --over teacher: run the columns "
            "that read the teacher (lga, spurious-aware, balanced batches) with the oracle "
            "teacher's faults at each rate of each kind alone, and the llava-like preset scaled "
            "from 0 to 2x; worst group, overall and unseen-background accuracy against the rate, "
            "in OUT/report/teacher_sweep.{png,md}. Examples: lga sweep demo --sizes "
            "1000,500,200,100 --out sweep; lga sweep demo --over teacher --quick --out tsweep",
        ),
    )
    _config_args(sw)
    sw.add_argument("--over", choices=["size", "teacher"], default="size", help="what varies")
    sw.add_argument(
        "--sizes",
        type=_sizes,
        default=[2000, 1000, 500, 200, 100],
        help="training-set sizes, comma-separated (default 2000,1000,500,200,100)",
    )
    sw.add_argument(
        "--kinds",
        type=_names,
        default=None,
        help="--over teacher: fault kinds swept alone (default: species_error,background_bias,"
        "object_leak,background_error)",
    )
    sw.add_argument(
        "--rates",
        type=_floats,
        default=[0.25, 0.5, 1.0],
        help="--over teacher: rates of each kind alone (default 0.25,0.5,1)",
    )
    sw.add_argument(
        "--scales",
        type=_floats,
        default=[0.0, 0.5, 1.0, 1.5, 2.0],
        help="--over teacher: scales of the llava-like preset (default 0,0.5,1,1.5,2)",
    )
    sw.set_defaults(func=_sweep)


def _config_args(p: argparse.ArgumentParser) -> None:
    """The arguments shared by reproduce and sweep: a reproduction config and where it runs."""
    p.add_argument("config", help="shipped reproduction config name or YAML file")
    add_report_to(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (overrides the config)")
    p.add_argument("--quick", action="store_true", help="apply the config's `quick` changes")
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="(method, seed) runs at once, each in its own process with its share of the CPU "
        "cores (default 1: one after the other; more share one GPU)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="changes to the config, e.g. seeds=[0] fit.train.lr=2e-5",
    )


def _run(
    config: str, out: Path, *, data: Path | None, quick: bool, overrides: list[str], jobs: int
) -> int:
    from lga.report.build import build_report
    from lga.teacher import DescribeStopped
    from lga.workflows.reproduce import DescribeFailed, load_reproduce_config, reproduce

    cfg = load_reproduce_config(config, quick=quick, overrides=overrides)
    start = time.monotonic()
    try:
        runs = reproduce(cfg, out, data_root=data, jobs=jobs)
    except (DescribeFailed, DescribeStopped) as e:  # as `lga describe`: non-zero, nothing fitted
        print(f"describe: {e.summary.line()}", file=sys.stderr)
        raise  # the CLI prints the failures by kind and exits 1
    build_report(runs, out / "report")
    print((out / "report" / "results.md").read_text())
    print(
        f"\n{len(runs)} runs in {out / 'runs'}; report: {out / 'report' / 'report.html'} "
        f"({time.monotonic() - start:.0f} s)"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    jobs = args.jobs or max(1, min(os.cpu_count() or 1, 4))
    return _run("demo", args.out, data=None, quick=args.quick, overrides=[], jobs=jobs)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The KEY=VALUE overrides, with ``--report-to`` as ``fit.tracking.report_to``."""
    if args.report_to is None:
        return list(args.overrides)
    return [f"fit.tracking.report_to=[{','.join(args.report_to)}]", *args.overrides]


def _reproduce(args: argparse.Namespace) -> int:
    return _run(
        args.config,
        args.out,
        data=args.data,
        quick=args.quick,
        overrides=_overrides(args),
        jobs=args.jobs,
    )


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes like 1000,500,100, got {text!r}"
        ) from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,0.5,1, got {text!r}") from None


def _sweep_teacher(args: argparse.Namespace, cfg) -> int:
    from lga.teacher.faults import KINDS
    from lga.workflows.teacher_sweep import (
        sweep_points,
        teacher_sweep,
        teacher_sweep_table,
        write_teacher_report,
    )

    points = sweep_points(args.kinds or KINDS, args.rates, args.scales)
    results = teacher_sweep(cfg, args.out, points, data_root=args.data, jobs=args.jobs)
    report = write_teacher_report(results, args.out, "lga " + " ".join(sys.argv[1:]))
    print(teacher_sweep_table(results))
    print(f"\nwrote {args.out / 'teacher_sweep.json'} and {report} (figure beside it)")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from lga.workflows.reproduce import load_reproduce_config
    from lga.workflows.sweep import sweep, sweep_plot

    cfg = load_reproduce_config(args.config, quick=args.quick, overrides=_overrides(args))
    if args.over == "teacher":
        return _sweep_teacher(args, cfg)
    results = sweep(cfg, args.sizes, args.out, data_root=args.data, jobs=args.jobs)
    plot = sweep_plot(results, args.out / "sweep.png")
    for method, by_size in results.items():
        row = "  ".join(
            f"n={n}: {100 * sum(v['worst']) / len(v['worst']):5.1f}%"
            for n, v in sorted(by_size.items())
        )
        print(f"{method:15s} worst group  {row}")
    print(f"wrote {args.out / 'sweep.json'} and {plot}")
    return 0
