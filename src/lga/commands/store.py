"""`lga store stats|export|merge|recover`: inspect, export, join and rescue description stores."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    store = sub.add_parser("store", help="inspect, export or merge description stores")
    ssub = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    stats = ssub.add_parser(
        "stats",
        help="counts by prompt, status and teacher; throughput",
        description="Example: lga store stats wb.sqlite",
    )
    stats.add_argument("file", type=Path, help="description store")
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

    from lga.store import DescriptionStore

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
    return 0


def _export(args: argparse.Namespace) -> int:
    from lga.store import export_store

    n = export_store(args.file, args.to)
    print(f"wrote {n} record(s) to {args.to}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from lga.store import merge_stores

    res = merge_stores(args.out, args.inputs)
    print(
        f"merged {res['rows_read']} row(s) from {res['inputs']} store(s) into {args.out}: "
        f"{res['rows']} row(s)"
    )
    return 0


def _recover(args: argparse.Namespace) -> int:
    from lga.store import recover_store

    counts = recover_store(args.file, args.to)
    print(
        f"recovered {counts.get('descriptions', 0)} description row(s), "
        f"{counts.get('prompts', 0)} prompt(s), {counts.get('settings', 0)} setting(s) "
        f"from {args.file} into {args.to}"
    )
    return 0
