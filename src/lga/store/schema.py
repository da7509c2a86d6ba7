"""The store file: its tables, schema versions and rows, and how a file is opened.

Opening connects with the store's settings (WAL, ``synchronous=NORMAL``, a 30 s busy timeout;
read-only opens never change the file), runs SQLite's ``quick_check`` and then creates the
tables, migrates an old version or refuses an unknown one. SQLite's "disk image is malformed",
on open or later, becomes :class:`StoreCorruptError`, which names ``lga store recover``.

Schema versions: 1 (no ``truncated`` column, no claims) is migrated to 2 when a store is opened
for writing; read-only opens read both.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from lga.errors import LgaError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # version 1 lacks descriptions.truncated and the claims table
DONE, FAILED = "done", "failed"
KEY_COLUMNS = ("dataset", "img_id", "prompt", "prompt_hash", "teacher", "settings_hash")
VALUE_COLUMNS = (
    "status",
    "text",
    "keywords",
    "error",
    "latency_s",
    "attempts",
    "created_at",
    "truncated",
)
COLUMNS = KEY_COLUMNS + VALUE_COLUMNS

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    prompt TEXT NOT NULL, prompt_hash TEXT NOT NULL, text TEXT NOT NULL,
    target TEXT, format TEXT, PRIMARY KEY (prompt, prompt_hash));
CREATE TABLE IF NOT EXISTS settings (settings_hash TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS descriptions (
    dataset TEXT NOT NULL, img_id INTEGER NOT NULL, prompt TEXT NOT NULL,
    prompt_hash TEXT NOT NULL, teacher TEXT NOT NULL, settings_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('{DONE}', '{FAILED}')),
    text TEXT, keywords TEXT, error TEXT, latency_s REAL,
    attempts INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY ({", ".join(KEY_COLUMNS)})) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS descriptions_prompt ON descriptions (prompt, status);
CREATE TABLE IF NOT EXISTS claims (
    dataset TEXT NOT NULL, img_id INTEGER NOT NULL, prompt TEXT NOT NULL,
    prompt_hash TEXT NOT NULL, teacher TEXT NOT NULL, settings_hash TEXT NOT NULL,
    owner TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY ({", ".join(KEY_COLUMNS)})) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_owner ON claims (owner);
"""
_ADD_TRUNCATED = "ALTER TABLE descriptions ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0"

# A finished (done) row is never replaced; a failed one is replaced by the newer outcome and its
# attempts accumulate, so the count says how often the item was tried over all runs.
UPSERT = f"""
INSERT INTO descriptions ({", ".join(COLUMNS)}) {{source}}
ON CONFLICT ({", ".join(KEY_COLUMNS)}) DO UPDATE SET
    status = excluded.status, text = excluded.text, keywords = excluded.keywords,
    error = excluded.error, latency_s = excluded.latency_s, created_at = excluded.created_at,
    truncated = excluded.truncated, attempts = descriptions.attempts + excluded.attempts
WHERE descriptions.status != '{DONE}'
"""

# The WHERE clause that picks one item by its whole key (values: :func:`key_values`).
KEY_MATCH = " AND ".join(f"{c}=?" for c in KEY_COLUMNS)


@dataclass(frozen=True)
class Row:
    """One teacher outcome, as stored."""

    dataset: str
    img_id: int
    prompt: str
    prompt_hash: str
    teacher: str
    settings_hash: str
    status: str
    text: str | None = None
    keywords: list[str] | None = None
    error: str | None = None
    latency_s: float | None = None
    attempts: int = 1
    created_at: float = field(default_factory=time.time)
    truncated: bool = False

    def values(self) -> tuple:
        kw = json.dumps(self.keywords, ensure_ascii=False) if self.keywords is not None else None
        return (
            self.dataset,
            int(self.img_id),
            self.prompt,
            self.prompt_hash,
            self.teacher,
            self.settings_hash,
            self.status,
            self.text,
            kw,
            self.error,
            self.latency_s,
            int(self.attempts),
            float(self.created_at),
            int(self.truncated),
        )


def key_values(r: Row) -> tuple:
    return (r.dataset, int(r.img_id), r.prompt, r.prompt_hash, r.teacher, r.settings_hash)


# ---------------------------------------------------------------------------------------------
# Damage


class StoreCorruptError(LgaError):
    """The store file fails SQLite's integrity check; the message says how to save its rows."""

    def __init__(self, path: Path, detail: str):
        recovered = path.with_name(f"{path.stem}.recovered{path.suffix or '.sqlite'}")
        super().__init__(
            f"description store {path} is damaged ({detail}); copy its readable rows into a new "
            f"store with: lga store recover {shlex.quote(str(path))} --to "
            f"{shlex.quote(str(recovered))} -- then use {recovered} (a describe run on it redoes "
            "the lost items)"
        )
        self.path = path


_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_F = TypeVar("_F", bound=Callable[..., Any])


def is_corruption(e: BaseException | None) -> bool:
    # pandas wraps the sqlite3 error of a failed query in its own DatabaseError.
    while e is not None and not isinstance(e, sqlite3.DatabaseError):
        e = e.__cause__
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT_CODES


def guarded(method: _F) -> _F:
    """Turn SQLite's "disk image is malformed" inside a store method (of an object with a
    ``path``) into StoreCorruptError."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as e:
            if is_corruption(e):
                raise StoreCorruptError(self.path, str(e)) from e
            raise

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Opening


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    # isolation_level=None: we open and close every transaction ourselves (short, explicit).
    if read_only:  # readers never change the file (nor its journal mode), even by accident
        uri = f"{path.resolve().as_uri()}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA busy_timeout=30000")
        return con
    con = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives a killed process (not a power cut).
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA busy_timeout=30000")
    return con


class Transaction:
    """A context manager: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")


def open_store(path: Path, *, create: bool, read_only: bool) -> sqlite3.Connection:
    """Connect to a store file, check it and bring its tables to this version.

    Args:
        path: the store file.
        create: create the file when missing (ignored with ``read_only``).
        read_only: connect read-only (the version is checked, nothing is created or migrated).

    Raises:
        LgaError: the file is missing (``create=False``), not SQLite, or not a description store.
        StoreCorruptError: the file is damaged.
    """
    create = create and not read_only
    if not create and not path.is_file():
        raise LgaError(f"description store not found: {path}")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = connect(path, read_only)
    except sqlite3.DatabaseError as e:
        raise LgaError(f"{path} is not a usable description store: {e}") from e
    try:
        _prepare(con, path, create, read_only)
    except sqlite3.DatabaseError as e:
        con.close()
        if is_corruption(e) and path.stat().st_size >= 512:
            # A real SQLite file (not a stray text file) whose pages are damaged.
            if _looks_like_sqlite(path):
                raise StoreCorruptError(path, str(e)) from e
        raise LgaError(f"{path} is not a usable description store: {e}") from e
    except LgaError:
        con.close()
        raise
    return con


def _looks_like_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _prepare(con: sqlite3.Connection, path: Path, create: bool, read_only: bool) -> None:
    if not create and not has_table(con, "descriptions"):
        raise LgaError(f"{path} is an SQLite file but not a description store")
    integrity_check(con, path)
    if read_only:
        _check_version(con, path)
    else:
        _init_schema(con, path)


def integrity_check(con: sqlite3.Connection, path: Path) -> None:
    problems = [r[0] for r in con.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        raise StoreCorruptError(path, "; ".join(problems))


def has_table(con: sqlite3.Connection, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
    return con.execute(sql, (name,)).fetchone() is not None


def columns(con: sqlite3.Connection, schema: str, table: str) -> set[str]:
    """The column names of ``table`` in the attached database ``schema`` (``main``, ...)."""
    return {r[1] for r in con.execute(f"PRAGMA {schema}.table_info({table})")}


def _init_schema(con: sqlite3.Connection, path: Path) -> None:
    with Transaction(con):
        version = _version(con) if has_table(con, "meta") else None
        if version is not None and version not in READABLE_VERSIONS:
            return  # refused by _check_version below, without touching the file
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            con.execute(stmt)
        if version is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            _migrate(con, path, version)
    _check_version(con, path)


def _version(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return row[0] if row else None


def _migrate(con: sqlite3.Connection, path: Path, version: str) -> None:
    # 1 -> 2: descriptions.truncated (0 for every old row); the claims table was created
    # by _SCHEMA (CREATE IF NOT EXISTS). Inside the caller's BEGIN IMMEDIATE, so two
    # processes opening an old store at once migrate it once.
    if "truncated" not in {r[1] for r in con.execute("PRAGMA table_info(descriptions)")}:
        con.execute(_ADD_TRUNCATED)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION,))
    log.info("%s: store schema migrated from version %s to %s", path, version, 2)


def _check_version(con: sqlite3.Connection, path: Path) -> None:
    version = _version(con)
    if version not in READABLE_VERSIONS:
        raise LgaError(
            f"{path}: store schema version {version or 'missing'}, this lga "
            f"reads versions {', '.join(READABLE_VERSIONS)}"
        )
