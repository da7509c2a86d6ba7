"""The description store's reading and writing API over one store file.

A row is keyed by (dataset, img_id, prompt name, prompt-text hash, teacher id, generation-settings
hash) and holds the answer ``text``, its parsed ``keywords`` (keyword prompts), ``status``
(``done`` or ``failed``), the ``error`` of a failed item, ``latency_s``, ``attempts`` and
``created_at`` and ``truncated`` (the answer was cut to the teacher's length cap). Rows are
written in short transactions as results arrive: a killed writer loses at most the results it had
not committed and never leaves a partial row (SQLite transactions are atomic). A ``done`` row is
never overwritten.

The trainer reads it with :meth:`DescriptionStore.texts` / :meth:`DescriptionStore.keywords`
(img_id -> answer for one prompt) and checks coverage with :meth:`DescriptionStore.missing`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from lga.errors import LgaError
from lga.store.claims import ClaimState, claim_items, release_claims, release_rows, renew_claims
from lga.store.schema import (
    COLUMNS,
    DONE,
    UPSERT,
    Row,
    Transaction,
    columns,
    guarded,
    open_store,
)

# What the readers (texts, keywords, missing) may filter on besides the prompt name.
FILTERS = ("dataset", "teacher", "settings_hash", "prompt_hash")


def _filters(given: dict[str, str | None]) -> dict[str, str | None]:
    unknown = sorted(set(given) - set(FILTERS))
    if unknown:
        raise TypeError(f"unknown store filter(s) {unknown}; the filters are {FILTERS}")
    return {k: given.get(k) for k in FILTERS}


@dataclass(frozen=True)
class Variant:
    """One (dataset, teacher, settings, prompt text) combination of a prompt name.

    ``settings`` is the JSON the settings hash stands for (e.g. max_new_tokens, visual prompt).
    """

    prompt: str
    dataset: str
    teacher: str
    settings_hash: str
    prompt_hash: str
    n_done: int
    settings: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.prompt}: dataset={self.dataset} teacher={self.teacher} "
            f"settings_hash={self.settings_hash} {self.settings or ''} "
            f"prompt_hash={self.prompt_hash} ({self.n_done} done)"
        )


@dataclass(frozen=True)
class StoreStats:
    """Counts by (dataset, teacher, prompt, status) and throughput by teacher."""

    path: Path
    rows: int
    counts: pd.DataFrame
    throughput: pd.DataFrame


class DescriptionStore:
    """A description store file (SQLite, WAL).

    Args:
        path: the store file.
        create: create the file when missing (otherwise a missing file is an error).
        read_only: open for reading only (the file must exist; writing raises). Readers such as
            ``lga store stats``, export and ``lga fit`` use it.

    Every open runs SQLite's ``quick_check`` (a read of every page, well under a second for
    a store of tens of MB), so a damaged file is refused before it is used.

    Raises:
        LgaError: the file is missing (``create=False``), not SQLite, or not a description store.
        StoreCorruptError: the file is damaged (on open, or met later by a read or write).
    """

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False):
        self.path = Path(path)
        self._con = open_store(self.path, create=create, read_only=read_only)
        self._has_truncated = "truncated" in self._columns("main", "descriptions")

    def _columns(self, schema: str, table: str) -> set[str]:
        return columns(self._con, schema, table)

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> DescriptionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> Transaction:
        """A context manager: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        return Transaction(self._con)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._con.execute(sql, params).fetchall()

    def backup(self, to: str | Path) -> None:
        """Copy the whole store into the file ``to`` with SQLite's backup API."""
        dst = sqlite3.connect(str(to))
        try:
            self._con.backup(dst)
        finally:
            dst.close()

    def merge_from(self, src: str | Path) -> int:
        """Insert the prompts, settings and rows of the store file ``src``, in one transaction
        (a row already here is kept unless the one of ``src`` supersedes it, as :meth:`put`);
        returns how many rows ``src`` holds."""
        con = self._con
        con.execute("ATTACH DATABASE ? AS src", (str(src),))
        try:
            # A version-1 store has no truncated column: its answers were never cut.
            names = self._columns("src", "descriptions")
            select = ", ".join(c if c in names else f"0 AS {c}" for c in COLUMNS)
            with self.transaction():
                con.execute("INSERT OR IGNORE INTO prompts SELECT * FROM src.prompts")
                con.execute("INSERT OR IGNORE INTO settings SELECT * FROM src.settings")
                # "WHERE true" lets SQLite parse ON CONFLICT after a SELECT.
                source = f"SELECT {select} FROM src.descriptions WHERE true"
                con.execute(UPSERT.format(source=source))
                n = con.execute("SELECT COUNT(*) FROM src.descriptions").fetchone()[0]
        finally:
            con.execute("DETACH DATABASE src")
        return int(n)

    # -- writing --------------------------------------------------------------------------------

    @guarded
    def register_prompts(self, prompts: Iterable[Any]) -> None:
        """Record prompt texts (objects with ``name, hash, text, target, format``)."""
        rows = [
            (p.name, p.hash, p.text, _enum_value(p.target), _enum_value(p.format)) for p in prompts
        ]
        with self.transaction() as con:
            con.executemany("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?, ?)", rows)

    @guarded
    def register_settings(self, settings_hash: str, settings: dict[str, Any]) -> None:
        """Record what a generation-settings hash stands for."""
        with self.transaction() as con:
            con.execute(
                "INSERT OR IGNORE INTO settings VALUES (?, ?)",
                (settings_hash, json.dumps(settings, sort_keys=True)),
            )

    @guarded
    def put(self, rows: Sequence[Row], *, release: str | None = None) -> None:
        """Write outcomes in one transaction; a ``done`` row already there is kept.

        Args:
            rows: the outcomes.
            release: an owner id whose claims on these rows' items end in the same transaction.
        """
        if not rows:
            return
        with self.transaction() as con:
            con.executemany(
                UPSERT.format(source=f"VALUES ({', '.join('?' * len(COLUMNS))})"),
                [r.values() for r in rows],
            )
            if release is not None:
                release_rows(con, rows, release)

    # -- claims (several writers sharing one store) ---------------------------------------------

    @guarded
    def claim(
        self,
        items: Sequence[tuple[int, str, str]],
        *,
        dataset: str,
        teacher: str,
        settings_hash: str,
        owner: str,
        lease_s: float,
    ) -> list[ClaimState]:
        """Claim items ``(img_id, prompt name, prompt hash)`` for ``owner`` in one transaction.

        An item is claimed unless it is done or another owner holds an unexpired lease on it.
        An expired lease is taken over, and so is the lease of a process of this machine that
        no longer runs.

        Returns:
            What became of each item, in order.
        """
        return claim_items(
            self._con,
            items,
            dataset=dataset,
            teacher=teacher,
            settings_hash=settings_hash,
            owner=owner,
            lease_s=lease_s,
        )

    @guarded
    def release(self, owner: str) -> int:
        """End every claim of ``owner`` (items it will not answer); returns how many."""
        return release_claims(self._con, owner)

    @guarded
    def renew(self, owner: str, lease_s: float) -> int:
        """Push the expiry of ``owner``'s claims to now + ``lease_s``; returns how many."""
        return renew_claims(self._con, owner, lease_s)

    # -- reading --------------------------------------------------------------------------------

    @guarded
    def done_keys(
        self, dataset: str, teacher: str, settings_hash: str
    ) -> set[tuple[int, str, str]]:
        """(img_id, prompt name, prompt hash) of the finished items of one teacher run setting."""
        rows = self._query(
            "SELECT img_id, prompt, prompt_hash FROM descriptions WHERE dataset=? AND teacher=? "
            "AND settings_hash=? AND status=?",
            (dataset, teacher, settings_hash, DONE),
        )
        return {(int(i), p, h) for i, p, h in rows}

    @guarded
    def done_texts(
        self, dataset: str, teacher: str, settings_hash: str
    ) -> dict[tuple[int, str, str], str | None]:
        """Like :meth:`done_keys`, each key with its text."""
        rows = self._query(
            "SELECT img_id, prompt, prompt_hash, text FROM descriptions WHERE dataset=? AND "
            "teacher=? AND settings_hash=? AND status=?",
            (dataset, teacher, settings_hash, DONE),
        )
        return {(int(i), p, h): t for i, p, h, t in rows}

    @guarded
    def variants(self, prompt: str | None = None) -> list[Variant]:
        """The (dataset, teacher, settings, prompt text) combinations with done rows."""
        where, params = ("AND d.prompt=?", [prompt]) if prompt else ("", [])
        rows = self._query(
            "SELECT d.prompt, d.dataset, d.teacher, d.settings_hash, d.prompt_hash, COUNT(*), "
            "s.json FROM descriptions d LEFT JOIN settings s ON s.settings_hash=d.settings_hash "
            f"WHERE d.status=? {where} GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
            [DONE, *params],
        )
        return [Variant(*r) for r in rows]

    def _done(
        self,
        prompt: str,
        *,
        dataset: str | None,
        teacher: str | None,
        settings_hash: str | None,
        prompt_hash: str | None,
    ) -> list[tuple]:
        sql = (
            "SELECT img_id, text, keywords, dataset, teacher, settings_hash, prompt_hash "
            "FROM descriptions WHERE prompt=? AND status=?"
        )
        params: list[Any] = [prompt, DONE]
        for col, value in (
            ("dataset", dataset),
            ("teacher", teacher),
            ("settings_hash", settings_hash),
            ("prompt_hash", prompt_hash),
        ):
            if value is not None:
                sql += f" AND {col}=?"
                params.append(value)
        return self._query(sql, params)

    @guarded
    def _select(
        self,
        prompt: str,
        img_ids: Iterable[int] | None,
        column: int,
        filters: dict[str, str | None],
    ) -> dict[int, Any]:
        rows = self._done(prompt, **filters)
        variants = {r[3:] for r in rows}
        if len(variants) > 1:
            lines = "\n  ".join(
                str(v)
                for v in self.variants(prompt)
                if (v.dataset, v.teacher, v.settings_hash, v.prompt_hash) in variants
            )
            raise LgaError(
                f"{self.path}: prompt {prompt!r} has answers from several teachers/settings; "
                f"choose one with dataset=, teacher=, settings_hash= or prompt_hash=:\n  {lines}"
            )
        wanted = None if img_ids is None else {int(i) for i in img_ids}
        return {int(r[0]): r[column] for r in rows if wanted is None or int(r[0]) in wanted}

    def texts(
        self, prompt: str, img_ids: Iterable[int] | None = None, **filters: str | None
    ) -> dict[int, str]:
        """The finished answers to one prompt: ``{img_id: text}``.

        Args:
            prompt: the prompt name (``object_description``, ...).
            img_ids: only these images (None: all); images without a done answer are left out
                (see :meth:`missing`).
            **filters: which answers, each None for any (``FILTERS``): ``dataset`` (a dataset
                key, :func:`dataset_key`), ``teacher`` (``oracle``,
                ``hf:llava-hf/llava-1.5-7b-hf``, ``openai:<model>``), ``settings_hash`` (see
                ``lga store stats``), ``prompt_hash`` (when the wording changed between runs).

        Raises:
            LgaError: the rows left by the filters come from more than one
                (dataset, teacher, settings, prompt text): the message lists them.
            TypeError: an unknown filter.
        """
        return self._select(prompt, img_ids, 1, _filters(filters))

    def keywords(
        self, prompt: str, img_ids: Iterable[int] | None = None, **filters: str | None
    ) -> dict[int, list[str]]:
        """Like :meth:`texts`, but the parsed keyword lists (``[]`` for a text prompt's rows)."""
        raw = self._select(prompt, img_ids, 2, _filters(filters))
        return {i: json.loads(v) if v else [] for i, v in raw.items()}

    def missing(
        self, prompts: str | Iterable[str], img_ids: Iterable[int], **filters: str | None
    ) -> dict[str, list[int]]:
        """Images without a done answer, per prompt name (prompts with none missing left out).

        Same filters as :meth:`texts` (and the same error when they are ambiguous).
        """
        names = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = sorted({int(i) for i in img_ids})
        out = {}
        for name in names:
            have = self.texts(name, ids, **filters)
            lacking = [i for i in ids if i not in have]
            if lacking:
                out[name] = lacking
        return out

    @guarded
    def frame(self) -> pd.DataFrame:
        """Every row, with the prompt text and settings JSON joined in."""
        sql = (
            "SELECT d.img_id, d.prompt, d.teacher, d.status, d.text, d.keywords, d.error, "
            "d.latency_s, d.attempts, d.created_at, d.dataset, d.prompt_hash, "
            f"d.settings_hash, {'d.truncated' if self._has_truncated else '0'} AS truncated, "
            "p.text AS prompt_text, s.json AS settings FROM descriptions d "
            "LEFT JOIN prompts p ON p.prompt=d.prompt AND p.prompt_hash=d.prompt_hash "
            "LEFT JOIN settings s ON s.settings_hash=d.settings_hash "
            "ORDER BY d.dataset, d.teacher, d.settings_hash, d.img_id, d.prompt"
        )
        df = pd.read_sql_query(sql, self._con)
        df["keywords"] = [json.loads(k) if isinstance(k, str) else None for k in df["keywords"]]
        df["created_at"] = [_iso(t) for t in df["created_at"]]
        df["truncated"] = df["truncated"].astype(bool)
        return df

    @guarded
    def stats(self) -> StoreStats:
        """Counts by (dataset, teacher, prompt, status); done rows per second by teacher."""
        counts = pd.read_sql_query(
            "SELECT dataset, teacher, prompt, status, COUNT(*) AS n FROM descriptions "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            self._con,
        )
        thr = pd.read_sql_query(
            "SELECT teacher, COUNT(*) AS done, MIN(created_at) AS first, MAX(created_at) AS last, "
            "AVG(latency_s) AS mean_latency_s FROM descriptions WHERE status=? GROUP BY teacher "
            "ORDER BY teacher",
            self._con,
            params=(DONE,),
        )
        span = (thr["last"] - thr["first"]).where(lambda s: s > 0)
        thr["items_per_s"] = (thr["done"] - 1) / span
        thr["first"] = [_iso(t) for t in thr["first"]]
        thr["last"] = [_iso(t) for t in thr["last"]]
        total = int(self._query("SELECT COUNT(*) FROM descriptions")[0][0])
        return StoreStats(self.path, total, counts, thr)


def _enum_value(x: Any) -> Any:
    return getattr(x, "value", x)


def _iso(t: float | None) -> str | None:
    if t is None or pd.isna(t):
        return None
    return datetime.fromtimestamp(float(t), tz=timezone.utc).isoformat(timespec="seconds")
