"""`lga report`: the results table, figures and an HTML page from run directories."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="results table (md/csv/tex), figures and an HTML page from run directories",
        description="Group runs by method (and base checkpoint) as seeds, and write the slides' "
        "table (mean ± std over seeds), group-accuracy and class-probability figures, alignment "
        "diagnostics and saliency maps (when the models load), and a self-contained report.html. "
        "Example: lga report runs/demo/* --out report",
    )
    p.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="run directories (a folder without metrics.json: every run below it)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument(
        "--images",
        type=int,
        nargs="+",
        default=None,
        metavar="IMG_ID",
        help="test images for the class-probability and saliency figures "
        "(default: evenly spaced over the zero-shot run's worst group)",
    )
    p.add_argument("--n-images", type=int, default=4, help="how many images to pick (default 4)")
    p.add_argument(
        "--descriptions",
        type=Path,
        default=None,
        metavar="STORE",
        help="description store: adds cosines to the object/background descriptions",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="the teacher whose descriptions to use, when the store holds several",
    )
    p.add_argument("--alignment-split", default="test", choices=["train", "val", "test"])
    p.add_argument(
        "--alignment-per-group",
        type=int,
        default=100,
        help="images per group for the alignment diagnostics (default 100)",
    )
    p.add_argument("--no-alignment", action="store_true", help="skip the alignment diagnostics")
    p.add_argument("--no-saliency", action="store_true", help="skip the saliency maps")
    p.add_argument("--dpi", type=int, default=130, help="figure resolution (default 130)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lga.report import ReportOptions, build_report, to_markdown

    opts = ReportOptions(
        images=args.images,
        n_images=args.n_images,
        descriptions=args.descriptions,
        teacher=args.teacher,
        alignment=not args.no_alignment,
        saliency=not args.no_saliency,
        alignment_split=args.alignment_split,
        alignment_per_group=args.alignment_per_group,
        device=args.device,
        dpi=args.dpi,
    )
    report = build_report(args.runs, args.out, opts)
    print(to_markdown(report.table))
    for note in report.notes:
        print(f"note: {note}")
    print(f"wrote {len(report.files)} file(s) to {args.out}; open {args.out / 'report.html'}")
    return 0
