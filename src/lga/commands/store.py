"""`lga store stats|export|import|merge|recover`: inspect, export, import, join and rescue
description stores."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    store = sub.add_parser(
        "store", help="inspect, export, import, merge or recover description stores"
    )
    ssub = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    stats = ssub.add_parser(
        "stats",
        help="counts by prompt, status and teacher; throughput",
        description="Example: lga store stats wb.sqlite",
    )
    stats.add_argument("file", type=Path, help="description store")
    stats.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a dataset made by `lga data synth`: also say, per image group, how often the "
        "stored answers are wrong (wrong species or class, background leaking into the object "
        "answer, wrong or ambiguous place), checked against its attributes.csv. "
        "Example: lga store stats wb.sqlite --data lga-demo/data",
    )
    stats.set_defaults(func=_stats)

    export = ssub.add_parser(
        "export",
        help="write every row to JSONL, Parquet or CSV",
        description="One record per row: img_id, prompt, teacher, status, text, keywords, error, "
        "... Example: lga store export wb.sqlite --to wb.parquet",
    )
    export.add_argument("file", type=Path, help="description store")
    export.add_argument("--to", type=Path, required=True, help="OUT.jsonl | OUT.parquet | OUT.csv")
    export.set_defaults(func=_export)

    merge = ssub.add_parser(
        "merge",
        help="join shard stores into one (duplicates collapse, done wins)",
        description="Example: lga store merge wb.sqlite wb-0.sqlite wb-1.sqlite wb-2.sqlite",
    )
    merge.add_argument("out", type=Path, help="output store (created or extended)")
    merge.add_argument("inputs", type=Path, nargs="+", help="stores to merge")
    merge.set_defaults(func=_merge)

    imp = ssub.add_parser(
        "import",
        help="add descriptions made elsewhere (JSONL, Parquet or CSV) to a store",
        description="FILE is what `lga store export` writes, or a minimal file with the columns "
        "img_id, prompt (a prompt name of the prompt set) and text. Every row is checked against "
        "the dataset and the prompt set; nothing is written unless all pass. Importing twice "
        "changes nothing; `lga fit` reads imported descriptions like generated ones. Example: "
        "lga store import captions.jsonl --store wb.sqlite --data DIR --teacher vllm-batch",
    )
    imp.add_argument("file", type=Path, help="FILE.jsonl | FILE.parquet | FILE.csv")
    imp.add_argument("--store", type=Path, required=True, help="description store (created)")
    imp.add_argument("--data", type=Path, required=True, help="the dataset folder described")
    imp.add_argument(
        "--dataset-config",
        default=None,
        help="shipped name or YAML file; default: DATA/dataset.yaml if present, else waterbirds",
    )
    imp.add_argument(
        "--prompts",
        default=None,
        help="prompt set name or YAML file (default: the dataset's, as for `lga describe`)",
    )
    imp.add_argument(
        "--teacher",
        default=None,
        help="teacher name of rows without one (default: import:<file stem>)",
    )
    imp.set_defaults(func=_import)

    recover = ssub.add_parser(
        "recover",
        help="copy the readable rows of a damaged store into a new one",
        description="For a store that fails SQLite's integrity check: rows on damaged pages are "
        "lost, the rest is copied; a describe run on the new store redoes the lost items. "
        "Example: lga store recover wb.sqlite --to wb.recovered.sqlite",
    )
    recover.add_argument("file", type=Path, help="damaged description store")
    recover.add_argument("--to", type=Path, required=True, help="new store to create")
    recover.set_defaults(func=_recover)


def _stats(args: argparse.Namespace) -> int:
    import pandas as pd

    from lga.store.core import DescriptionStore

    with DescriptionStore(args.file, read_only=True) as store:
        s = store.stats()
        variants = store.variants()
    print(f"{s.path}: {s.rows} row(s)")
    if s.rows == 0:
        return 0
    table = s.counts.pivot_table(
        index=["dataset", "teacher", "prompt"],
        columns="status",
        values="n",
        fill_value=0,
        aggfunc="sum",
    )
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print("\nrows by dataset, teacher, prompt and status:")
        print(table.to_string())
        print("\nthroughput of done rows by teacher:")
        print(s.throughput.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("\nvariants (dataset, teacher, settings, prompt text) with done rows:")
    for v in variants:
        print(f"  {v}")
    if args.data is not None:
        _print_audit(args.file, args.data)
    return 0


def _print_audit(store: Path, root: Path) -> None:
    from lga.data.attributes import attributes_path
    from lga.errors import LgaError
    from lga.teacher.audit import audit_store, format_audit

    if not attributes_path(root).is_file():
        raise LgaError(f"{attributes_path(root)} not found: --data needs a dataset made by "
                       "`lga data synth`, whose attributes say what is true")  # fmt: skip
    found = audit_store(store, root)
    if not found:
        print(f"\nno done answers in {store} for the dataset {root}")
    for teacher, settings, table in found:
        print(f"\nanswers checked against {root}/attributes.csv: {teacher} {settings}")
        print("(% of images with answers; object: wrong species, wrong class, background words;")
        print(" background: wrong place, ambiguous)")
        print(format_audit(table))


def _export(args: argparse.Namespace) -> int:
    from lga.store.core import export_store

    n = export_store(args.file, args.to)
    print(f"wrote {n} record(s) to {args.to}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from lga.store.core import merge_stores

    res = merge_stores(args.out, args.inputs)
    print(
        f"merged {res['rows_read']} row(s) from {res['inputs']} store(s) into {args.out}: "
        f"{res['rows']} row(s)"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from lga.data.dataset import load_dataset
    from lga.data.dataset_config import load_dataset_config
    from lga.store.importing import import_descriptions
    from lga.teacher import resolve_prompts

    spec = load_dataset_config(args.dataset_config, args.data)
    ds = load_dataset(args.data, spec, splits=[], check_images=False)
    summary = import_descriptions(
        args.file, args.store, ds, resolve_prompts(spec, args.prompts), teacher=args.teacher
    )
    print(f"imported {args.file} into {args.store}: {summary.line()}")
    return 0


def _recover(args: argparse.Namespace) -> int:
    from lga.store.core import recover_store

    counts = recover_store(args.file, args.to)
    print(
        f"recovered {counts.get('descriptions', 0)} description row(s), "
        f"{counts.get('prompts', 0)} prompt(s), {counts.get('settings', 0)} setting(s) "
        f"from {args.file} into {args.to}"
    )
    return 0
