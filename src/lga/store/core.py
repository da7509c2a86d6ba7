"""The description store: teacher answers in SQLite (WAL), one row per item, crash-safe.

A row is keyed by (dataset, img_id, prompt name, prompt-text hash, teacher id, generation-settings
hash) and holds the answer ``text``, its parsed ``keywords`` (keyword prompts), ``status``
(``done`` or ``failed``), the ``error`` of a failed item, ``latency_s``, ``attempts`` and
``created_at`` and ``truncated`` (the answer was cut to the teacher's length cap). Rows are
written in short transactions as results arrive: a killed writer loses at most the results it had
not committed and never leaves a partial row (SQLite transactions are atomic). A ``done`` row is
never overwritten.

Several describe processes share one store through ``claims``: an item is claimed (owner id and
lease expiry, in one ``BEGIN IMMEDIATE`` transaction) before it is asked, and released when its
outcome is written; the lease of a process that died expires and another one takes the item.

Schema versions: 1 (no ``truncated`` column, no claims) is migrated to 2 when a store is opened
for writing; read-only opens read both.

The trainer reads it with :meth:`DescriptionStore.texts` / :meth:`DescriptionStore.keywords`
(img_id -> answer for one prompt) and checks coverage with :meth:`DescriptionStore.missing`.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from lga.errors import LgaError
from lga.store.claims import (
    ClaimState,
    LeaseRenewer,
    claim_owner,
)
from lga.store.descriptions import FILTERS, DescriptionStore, StoreStats, Variant
from lga.store.keys import dataset_key
from lga.store.keywords import parse_keywords
from lga.store.schema import (
    COLUMNS,
    DONE,
    FAILED,
    KEY_COLUMNS,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    UPSERT,
    VALUE_COLUMNS,
    Row,
    StoreCorruptError,
)

__all__ = [
    "COLUMNS",
    "DONE",
    "EXPORT_FORMATS",
    "FAILED",
    "FILTERS",
    "KEY_COLUMNS",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "VALUE_COLUMNS",
    "ClaimState",
    "DescriptionStore",
    "LeaseRenewer",
    "Row",
    "StoreCorruptError",
    "StoreStats",
    "Variant",
    "claim_owner",
    "dataset_key",
    "export_store",
    "merge_stores",
    "parse_keywords",
    "recover_store",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Export and merge


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
    _remove_stale_tmp(out, "merge")
    tmp = out.with_name(f".{out.name}.merge-{os.getpid()}.tmp")
    try:
        if out.exists():
            _copy_store(out, tmp)
        read = 0
        with DescriptionStore(tmp) as store:
            for src in sources:
                read += _merge_one(store, src)
            total = int(store._query("SELECT COUNT(*) FROM descriptions")[0][0])
        os.replace(tmp, out)  # closing the store folded its WAL into tmp
    except BaseException:
        _remove_store_files(tmp)
        raise
    log.info("merged %d row(s) from %d store(s) into %s: %d row(s)", read, len(sources), out, total)
    return {"inputs": len(sources), "rows_read": read, "rows": total}


def _copy_store(path: Path, to: Path) -> None:
    """Copy a store with SQLite's backup API, refusing one that another process holds open.

    The file replaced by the merge must not keep a write-ahead log: SQLite would replay it on
    the new file. Opening it for writing once folds a leftover log in (and migrates the schema).
    """
    with DescriptionStore(path, create=False) as store:
        dst = sqlite3.connect(str(to))
        try:
            store._con.backup(dst)
        finally:
            dst.close()
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise LgaError(
            f"{path} is open in another process (its write-ahead log {wal} is in use); "
            "merge when that process has finished"
        )


def _remove_stale_tmp(out: Path, job: str) -> None:
    """Remove the temporary store (and its -wal, -shm) of an earlier ``job`` into ``out`` that
    was killed before it could clean up: one whose process is gone on this machine."""
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.{job}-*.tmp"):
        pid = tmp.name.removesuffix(".tmp").rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a %s that was killed", tmp, job)
            _remove_store_files(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_store_files(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


def recover_store(path: str | Path, out: str | Path) -> dict[str, int]:
    """Copy the rows still readable in a damaged store into a new store ``out``.

    Each table is read forwards along its key until the first damaged page, then backwards
    from the end until it: only the rows on damaged pages (and between them) are lost. The new
    store is written to a temporary file and renamed at the end.

    A row whose text is no longer UTF-8 (garbled by the damage) is left out and counted.

    Returns:
        Rows recovered per table: ``{"prompts": ..., "settings": ..., "descriptions": ...}``.

    Raises:
        LgaError: ``out`` exists, the file's schema itself cannot be read, or not one
            description row can be reached (the table's top page is damaged): nothing is
            written then.
    """
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise LgaError(f"description store not found: {path}")
    if out.exists():
        raise LgaError(f"{out} exists; give a new file to recover into")
    _remove_stale_tmp(out, "recover")
    src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    tmp = out.with_name(f".{out.name}.recover-{os.getpid()}.tmp")
    counts: dict[str, int] = {}
    try:
        try:
            names = {r[0] for r in src.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as e:
            raise LgaError(f"cannot recover {path}: its schema is unreadable ({e})") from e
        if "descriptions" not in names:
            raise LgaError(f"cannot recover {path}: no descriptions table left")
        out.parent.mkdir(parents=True, exist_ok=True)
        with DescriptionStore(tmp) as dst:
            for table, order in (
                ("prompts", ("rowid",)),
                ("settings", ("rowid",)),
                ("descriptions", KEY_COLUMNS),
            ):
                if table in names:
                    counts[table], damaged = _recover_table(src, dst, table, order)
                    if damaged and table == "descriptions" and not counts[table]:
                        raise LgaError(
                            f"cannot recover {path}: no description row can be reached (the "
                            "damage is at the top of the table); SQLite's own "
                            f"`sqlite3 {path} .recover` may find more"
                        )
        os.replace(tmp, out)
    except BaseException:
        _remove_store_files(tmp)
        raise
    finally:
        src.close()
    log.info("recovered %s from %s into %s", counts, path, out)
    return counts


def _decoded(values: tuple) -> tuple | None:
    """A row read as bytes, its texts decoded; None when one is not UTF-8 (garbled)."""
    try:
        return tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in values)
    except UnicodeDecodeError:
        return None


def _recover_table(
    src: sqlite3.Connection, dst: DescriptionStore, table: str, order: Sequence[str]
) -> tuple[int, bool]:
    """Copy the readable rows of ``table``: (rows copied, whether a damaged page was met)."""
    have = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    columns = dst._columns("main", table)
    wanted = [c for c in have if c in columns]
    rows: dict[tuple, tuple] = {}
    damaged, garbled = False, set()
    for direction in ("ASC", "DESC"):
        # NOT INDEXED: walk the table's own b-tree (in key order, so no sort reads it all)
        # rather than an index that may be the damaged part.
        sql = (
            f"SELECT {', '.join(wanted)}, {', '.join(order)} FROM {table} NOT INDEXED "
            f"ORDER BY {', '.join(f'{c} {direction}' for c in order)}"
        )
        src.text_factory = bytes  # a garbled text is one row left out, not the end of the scan
        try:
            for r in src.execute(sql):
                key, values = r[len(wanted) :], _decoded(r[: len(wanted)])
                if values is None:
                    garbled.add(key)
                else:
                    rows[key] = values
        except sqlite3.DatabaseError as e:
            damaged = True
            log.warning("reading %s %s stopped at a damaged page: %s", table, direction, e)
        finally:
            src.text_factory = str
    if garbled:
        damaged = True
        log.warning("%s: %d row(s) with garbled text left out", table, len(garbled))
    with dst.transaction() as con:
        con.executemany(
            f"INSERT OR IGNORE INTO {table} ({', '.join(wanted)}) "
            f"VALUES ({', '.join('?' * len(wanted))})",
            rows.values(),
        )
    return len(rows), damaged


def _merge_one(store: DescriptionStore, src: Path) -> int:
    con = store._con
    con.execute("ATTACH DATABASE ? AS src", (str(src),))
    try:
        # A version-1 store has no truncated column: its answers were never cut.
        names = store._columns("src", "descriptions")
        select = ", ".join(c if c in names else f"0 AS {c}" for c in COLUMNS)
        with store.transaction():
            con.execute("INSERT OR IGNORE INTO prompts SELECT * FROM src.prompts")
            con.execute("INSERT OR IGNORE INTO settings SELECT * FROM src.settings")
            # "WHERE true" lets SQLite parse ON CONFLICT after a SELECT.
            source = f"SELECT {select} FROM src.descriptions WHERE true"
            con.execute(UPSERT.format(source=source))
            n = con.execute("SELECT COUNT(*) FROM src.descriptions").fetchone()[0]
    finally:
        con.execute("DETACH DATABASE src")
    return int(n)
