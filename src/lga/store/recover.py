"""``lga store recover``: the rows still readable in a damaged store, copied into a new one."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from lga.errors import LgaError
from lga.store.descriptions import DescriptionStore
from lga.store.files import remove_stale_tmp, remove_store_files, tmp_store
from lga.store.schema import KEY_COLUMNS

log = logging.getLogger(__name__)


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
    remove_stale_tmp(out, "recover")
    src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    tmp = tmp_store(out, "recover")
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
        remove_store_files(tmp)
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
