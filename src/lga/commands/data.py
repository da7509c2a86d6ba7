"""`lga data check` and `lga data synth`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lga.data.dataset import GroupDataset, check_dataset, split_group_table
from lga.data.spec import load_dataset_spec


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check or generate datasets in the Waterbirds layout")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = dsub.add_parser(
        "check",
        help="validate a dataset folder and print counts per split x group",
        description="Validate metadata.csv and decode every image. Prints each problem with its "
        "img_id and file; exits 1 if there is any. Warnings (an image listed twice with the same "
        "labels, a split with no rows, a class missing from the training split) do not fail it. "
        "Example: lga data check ~/data/waterbird_complete95_forest2water2",
    )
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("dir", type=Path, nargs="?", help="dataset folder holding metadata.csv")
    where.add_argument("--data", type=Path, dest="data_dir", help="the same, as in `lga fit`")
    check.add_argument(
        "--dataset-config",
        default=None,
        help="shipped name (waterbirds) or YAML file; "
        "default: DIR/dataset.yaml if present, else waterbirds",
    )
    check.add_argument("--no-images", action="store_true", help="check metadata only (fast)")
    check.set_defaults(func=_check)

    synth = dsub.add_parser(
        "synth",
        help="generate 'Waterbirds in miniature' (the embedded offline dataset)",
        description="Procedurally drawn birds on land/water backgrounds in the Waterbirds layout, "
        "with per-image attributes in attributes.csv. Example: lga data synth --out synth-wb",
    )
    synth.add_argument("--out", type=Path, required=True, help="output folder (created)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--n-train", type=int, default=4795)
    synth.add_argument("--n-val", type=int, default=1199)
    synth.add_argument("--n-test", type=int, default=5794)
    synth.add_argument(
        "--correlation",
        type=float,
        default=0.95,
        help="P(background matches class) in the training split (val/test are balanced)",
    )
    synth.add_argument("--size", type=int, default=64, help="image side in pixels")
    synth.add_argument(
        "--bird-scale",
        type=float,
        default=1.0,
        help="bird size multiplier (1: 25-45%% of the side; the demo uses 1.6)",
    )
    synth.set_defaults(func=_synth)


def _check(args: argparse.Namespace) -> int:
    root = args.dir or args.data_dir
    spec = load_dataset_spec(args.dataset_config, root)
    res = check_dataset(root, spec, check_images=not args.no_images, progress=True)
    print(
        f"dataset: {root}  ({spec.name}: classes {spec.classes}, "
        f"{spec.spurious_attribute} {spec.places})"
    )
    print(f"rows: {res.n_rows}, valid: {res.n_rows - res.n_bad_rows}")
    print("\nimages per split x group (valid rows):")
    print(split_group_table(GroupDataset(root, spec, res.table)).to_string())
    if res.warnings:
        print(f"\n{len(res.warnings)} warning(s):")
        for w in res.warnings:
            print(f"  warning: {w}")
    if res.problems:
        print(f"\n{len(res.problems)} problem(s) in {res.n_bad_rows} row(s):")
        for p in res.problems:
            print(f"  {p}")
        return 1
    print("\nno problems found")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from lga.data.synth import SynthConfig, generate

    cfg = SynthConfig(
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        correlation=args.correlation,
        size=args.size,
        bird_scale=args.bird_scale,
    )
    out = generate(args.out, cfg, progress=True)
    print(f"wrote {cfg.n_train + cfg.n_val + cfg.n_test} images to {out}")
    print(f"check it with: lga data check {out}")
    return 0
