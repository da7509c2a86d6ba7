"""`lga data check`, `lga data synth` and `lga data import`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lga.errors import LgaError

if TYPE_CHECKING:
    from lga.data.importers import ImportPlan


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="check, generate or import datasets in the Waterbirds layout"
    )
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
    synth.add_argument(
        "--n-unseen",
        type=int,
        default=0,
        help="extra test images on places no training image has (snow, desert; place codes "
        "2 and 3, named in dataset.yaml's unseen_places), scored apart as 'unseen' in "
        "metrics.json: the abstraction test. Example: --n-unseen 800",
    )
    synth.set_defaults(func=_synth)
    _register_import(dsub)


def _register_import(dsub: argparse._SubParsersAction) -> None:
    imp = dsub.add_parser(
        "import",
        help="turn CelebA or a table of image paths and labels into a dataset",
        description="Write metadata.csv and dataset.yaml beside the images, so that the source "
        "folder becomes a dataset as it is (no image is copied), or with --out into a separate "
        "folder where the images are symlinked (or copied with --copy).",
    )
    isub = imp.add_subparsers(dest="import_source", metavar="SOURCE", required=True)
    celeba = isub.add_parser(
        "celeba",
        help="CelebA: img_align_celeba/, list_attr_celeba and list_eval_partition (.csv or .txt)",
        description="Class = --target, spurious attribute = --spurious (CelebA's -1/1 become "
        "0/1); splits from list_eval_partition. The default attributes get the shipped "
        "celeba-blond config (Sagawa et al. 2020: blond hair x male). "
        "Example: lga data import celeba ~/data/celeba",
    )
    celeba.add_argument("src", type=Path, help="the CelebA folder")
    celeba.add_argument("--target", default="Blond_Hair", help="class attribute (Blond_Hair)")
    celeba.add_argument("--spurious", default="Male", help="spurious attribute (Male)")
    _add_import_args(celeba)
    celeba.set_defaults(func=_import_celeba)

    table = isub.add_parser(
        "table",
        help="a csv/tsv/parquet/jsonl table: image path, label, spurious attribute, split",
        description="One row per image. Image paths are relative to the table's folder, or "
        "absolute. Splits: train/val/test or 0/1/2 (also training, valid, validation, dev, "
        "testing; any case). Labels and places: integer indices (-1/1 become 0/1) or names "
        "(numbered in sorted order unless --classes/--places or --dataset-config name them). "
        "Example: lga data import table ~/data/faces/labels.parquet --image-col path "
        "--label-col hair --place-col gender --split-col fold --classes dark,blond",
    )
    table.add_argument("file", type=Path, help="the table (.csv, .tsv, .parquet, .jsonl)")
    table.add_argument("--image-col", default="image", help="image path column (image)")
    table.add_argument("--label-col", default="label", help="class column (label)")
    table.add_argument("--place-col", default="place", help="spurious attribute column (place)")
    table.add_argument("--split-col", default="split", help="split column (split)")
    table.add_argument("--classes", default=None, help="class names in code order: a,b")
    table.add_argument("--places", default=None, help="spurious attribute names in order: a,b")
    _add_import_args(table)
    table.set_defaults(func=_import_table)


def _add_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset-config",
        default=None,
        help="shipped name or YAML file for dataset.yaml; default: made from the names",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write a separate dataset folder (images symlinked) instead of importing in place",
    )
    p.add_argument("--copy", action="store_true", help="with --out: copy the images, not link")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a metadata.csv/dataset.yaml that no earlier import wrote (never an "
        "image file of yours)",
    )


def _check(args: argparse.Namespace) -> int:
    from lga.data.dataset import GroupDataset, check_dataset, split_group_table  # pandas: here
    from lga.data.dataset_config import load_dataset_config

    root = args.dir or args.data_dir
    spec = load_dataset_config(args.dataset_config, root)
    res = check_dataset(root, spec, check_images=not args.no_images, progress=True)
    print(
        f"dataset: {root}  ({spec.name}: classes {spec.classes}, "
        f"{spec.spurious_attribute} {spec.places})"
    )
    print(f"rows: {res.n_rows}, valid: {res.n_rows - res.n_bad_rows}")
    print("\nimages per split x group (valid rows):")
    print(split_group_table(GroupDataset.from_table(root, spec, res.table)).to_string())
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
        n_unseen=args.n_unseen,
    )
    out = generate(args.out, cfg, progress=True)
    unseen = f" ({cfg.n_unseen} of them on unseen places)" if cfg.n_unseen else ""
    print(f"wrote {cfg.n_total} images to {out}{unseen}")
    print(f"check it with: lga data check {out}")
    return 0


def _import_celeba(args: argparse.Namespace) -> int:
    from lga.data.dataset_config import load_dataset_config
    from lga.data.importers import read_celeba

    spec = load_dataset_config(args.dataset_config) if args.dataset_config else None
    plan = read_celeba(args.src, target=args.target, spurious=args.spurious, spec=spec)
    return _write_import(plan, args)


def _import_table(args: argparse.Namespace) -> int:
    from lga.data.dataset_config import load_dataset_config
    from lga.data.importers import parse_names, read_table

    spec = load_dataset_config(args.dataset_config) if args.dataset_config else None
    plan = read_table(
        args.file,
        image_col=args.image_col,
        label_col=args.label_col,
        place_col=args.place_col,
        split_col=args.split_col,
        classes=parse_names(args.classes),
        places=parse_names(args.places),
        spec=spec,
    )
    return _write_import(plan, args)


def _write_import(plan: ImportPlan, args: argparse.Namespace) -> int:
    from lga.data.dataset import GroupDataset, check_dataset, split_group_table
    from lga.data.importers import write_import

    if args.copy and args.out is None:
        raise LgaError("--copy needs --out (an import in place copies nothing)")
    res = write_import(plan, args.out, copy=args.copy, overwrite=args.overwrite, progress=True)
    spec = res.spec
    print(
        f"imported {res.n_images} images into {res.root} ({res.mode.value}; {spec.name}: "
        f"classes {spec.classes}, {spec.spurious_attribute} {spec.places})"
    )
    checked = check_dataset(res.root, spec, check_images=False)
    print(split_group_table(GroupDataset.from_table(res.root, spec, checked.table)).to_string())
    print(f"check the images with: lga data check {res.root}")
    return 0
