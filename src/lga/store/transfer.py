"""Rows between stores and files: ``lga store export`` (JSONL, Parquet, CSV) and ``lga store
merge`` (shard stores joined into one, written to a temporary file and renamed at the end)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from lga.errors import LgaError
from lga.store.descriptions import DescriptionStore
from lga.store.files import remove_stale_tmp, remove_store_files, tmp_store

log = logging.getLogger(__name__)

EXPORT_FORMATS = (".jsonl", ".parquet", ".csv")


def export_store(path: str | Path, out: str | Path) -> int:
    """Write every row of a store to ``out`` (``.jsonl``, ``.parquet`` or ``.csv``).

    Records hold ``img_id, prompt, teacher, status, text, keywords`` and the rest of the key,
    the prompt text, the settings JSON, error, latency, attempts and an ISO ``created_at``.
    CSV cells hold ``keywords`` as a JSON list.

    Returns:
        The number of records written.
    """
    out = Path(out)
    if out.suffix not in EXPORT_FORMATS:
        raise LgaError(f"cannot export to {out}: the name must end with one of {EXPORT_FORMATS}")
    with DescriptionStore(path, read_only=True) as store:
        df = store.frame()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        if df.empty:  # pandas writes a lone newline, which is not a JSON Lines record
            out.write_bytes(b"")
        else:
            df.to_json(out, orient="records", lines=True, force_ascii=False)
    elif out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.assign(
            keywords=[
                json.dumps(k, ensure_ascii=False) if k is not None else None for k in df["keywords"]
            ]
        ).to_csv(out, index=False)
    return len(df)


def merge_stores(out: str | Path, inputs: Sequence[str | Path]) -> dict[str, int]:
    """Join shard stores into ``out`` (created, or extended when it exists).

    Duplicated keys collapse to one row: a done row wins over a failed one (and the first done
    row met is kept); failed rows add up their attempts.

    The merge is written to a temporary file beside ``out`` (a copy of ``out`` when it exists)
    and renamed over ``out`` at the end: a merge that fails midway leaves no partial output and
    the old ``out`` as it was.

    Returns:
        ``{"inputs": ..., "rows_read": ..., "rows": rows in out after the merge}``.
    """
    out = Path(out)
    sources = [Path(p) for p in inputs]
    for src in sources:
        if not src.is_file():
            raise LgaError(f"store to merge not found: {src}")
        if out.exists() and src.resolve() == out.resolve():
            raise LgaError(f"cannot merge {src} into itself; give a new output file")
    for src in sources:  # file, integrity and schema version, before anything is written
        DescriptionStore(src, read_only=True).close()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out, "merge")
    tmp = tmp_store(out, "merge")
    try:
        if out.exists():
            _copy_store(out, tmp)
        read = 0
        with DescriptionStore(tmp) as store:
            for src in sources:
                read += store.merge_from(src)
            total = int(store._query("SELECT COUNT(*) FROM descriptions")[0][0])
        os.replace(tmp, out)  # closing the store folded its WAL into tmp
    except BaseException:
        remove_store_files(tmp)
        raise
    log.info("merged %d row(s) from %d store(s) into %s: %d row(s)", read, len(sources), out, total)
    return {"inputs": len(sources), "rows_read": read, "rows": total}


def _copy_store(path: Path, to: Path) -> None:
    """Copy a store with SQLite's backup API, refusing one that another process holds open.

    The file replaced by the merge must not keep a write-ahead log: SQLite would replay it on
    the new file. Opening it for writing once folds a leftover log in (and migrates the schema).
    """
    with DescriptionStore(path, create=False) as store:
        store.backup(to)
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise LgaError(
            f"{path} is open in another process (its write-ahead log {wal} is in use); "
            "merge when that process has finished"
        )
