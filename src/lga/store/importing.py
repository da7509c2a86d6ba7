"""``lga store import``: descriptions made elsewhere (a vLLM batch job, another captioner, a
colleague's file, an ``lga store export``) into a description store.

Two shapes of input, as JSON Lines, Parquet or CSV:

- what ``lga store export`` writes: the store's key columns (``teacher``, ``settings_hash``,
  ``prompt_hash`` with ``prompt_text`` and ``settings``) are kept, so a round trip through an
  export changes no key; only ``done`` rows are imported;
- a minimal file with the columns ``img_id``, ``prompt`` (a prompt name of the prompt set) and
  ``text``: the rows get the teacher ``--teacher`` (default ``import:<file stem>``), the prompt
  set's own prompt text and hash, and a settings hash that says "imported".

Every row is checked against the dataset (``img_id`` in its metadata.csv) and the prompt set
(known prompt names) and must have a text; every fault is named with its line, and nothing is
written unless all rows pass. Rows are stored under the ``--data`` dataset's key, so ``lga fit``
reads them exactly like generated ones. A done row is never replaced: importing twice changes
nothing, and a row whose text differs from the one the store (or an earlier row of the file)
holds for the same key is refused. ``img_id`` must be an integer (``3`` or ``3.0``; ``1.5`` is
refused), ``text`` a string; a text longer than ``MAX_TEXT_CHARS`` (the 2,048 characters that
``lga describe`` keeps of an answer by default) is cut to it and marked truncated, as describe
marks the answers it cuts.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lga.errors import DataError, LgaError
from lga.store.descriptions import DescriptionStore
from lga.store.keys import dataset_key, settings_key
from lga.store.keywords import parse_keywords
from lga.store.schema import DONE, Row

log = logging.getLogger(__name__)

IMPORT_FORMATS = (".jsonl", ".parquet", ".csv")
REQUIRED = ("img_id", "prompt", "text")
# What describe keeps of an answer by default: 16 characters per token of 128 new tokens.
MAX_TEXT_CHARS = 2048


@dataclass
class ImportSummary:
    """What an import did."""

    rows: int  # rows in the file
    imported: int  # rows new to the store
    already: int  # rows the store held already (a done row is kept)
    skipped_failed: int  # rows of an export whose status was not done
    teachers: list[str]
    truncated: int = 0  # texts cut to MAX_TEXT_CHARS

    def line(self) -> str:
        parts = [f"{self.imported} new", f"{self.already} already in the store"]
        if self.truncated:
            parts.append(f"{self.truncated} text(s) cut to {MAX_TEXT_CHARS} characters")
        if self.skipped_failed:
            parts.append(f"{self.skipped_failed} failed row(s) skipped")
        return f"{self.rows} row(s): " + ", ".join(parts) + f" (teacher {', '.join(self.teachers)})"


def read_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The file as a frame of strings/objects, and each row's place (``line 3`` / ``row 3``)."""
    if path.suffix not in IMPORT_FORMATS:
        raise LgaError(f"cannot import {path}: the name must end with one of {IMPORT_FORMATS}")
    if not path.is_file():
        raise LgaError(f"{path}: file not found")
    try:
        return _read(path)
    except DataError:
        raise
    except (ValueError, OSError) as e:  # not Parquet, bad CSV quoting, not UTF-8 ...
        kind = {".jsonl": "JSON Lines", ".parquet": "Parquet", ".csv": "CSV"}[path.suffix]
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read {path} as {kind}: {reason}") from e


def _read(path: Path) -> tuple[pd.DataFrame, list[str]]:
    if path.suffix == ".jsonl":
        records, where = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n} is not JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise DataError(f"{path}: line {n} is not a JSON object")
            records.append(rec)
            where.append(f"line {n}")
        return pd.DataFrame.from_records(records), where
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        return df, [f"row {i + 1}" for i in range(len(df))]
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df, [f"line {i + 2}" for i in range(len(df))]  # line 1 is the header


def _img_id(value: Any) -> int | None:
    """An integer id: an int, an integral float (``3.0``: a column with gaps), or its text;
    None for anything else (``1.5``, ``"2.7"``, ``True``)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def _kind(value: Any) -> str:
    """What a non-string text is, in the words of JSON and Parquet."""
    if isinstance(value, dict):
        return "a struct"
    if isinstance(value, list | tuple | np.ndarray):
        return "a list"
    if isinstance(value, bool | np.bool_):
        return "a boolean"
    return "a number" if isinstance(value, int | float | np.number) else f"a {type(value).__name__}"


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (str(v).strip() == "")


def _keywords(value: Any, text: str, is_keyword_prompt: bool) -> list[str] | None:
    """The row's keyword list (a list, a numpy array from Parquet, or a JSON list in CSV), else
    the text parsed as the store parses keyword answers."""
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [str(k) for k in value]
    return parse_keywords(text) if is_keyword_prompt else None


def import_descriptions(
    path: str | Path,
    store_path: str | Path,
    dataset,
    prompts: list,
    *,
    teacher: str | None = None,
) -> ImportSummary:
    """Validate every row of ``path`` and write them into the store at ``store_path``.

    Args:
        path: a ``.jsonl``, ``.parquet`` or ``.csv`` file.
        store_path: the description store (created when missing).
        dataset: the :class:`lga.data.GroupDataset` the descriptions are of (all splits).
        prompts: the rendered prompt set (:func:`lga.teacher.resolve_prompts`).
        teacher: the teacher name of rows that have none (default ``import:<file stem>``).

    Raises:
        DataError: missing columns, or rows with an unknown img_id or prompt name or no text
            (all named, with their lines); nothing is written then.
    """
    path = Path(path)
    df, where = read_table(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: no column(s) {missing}; a minimal file has img_id, prompt, text "
            f"(it has {list(df.columns)})"
        )
    by_name = {p.name: p for p in prompts}
    known_ids = {int(i) for i in dataset.img_ids.tolist()}
    key = dataset_key(dataset)
    default_teacher = teacher or f"import:{path.stem}"
    has = set(df.columns)
    problems, rows, skipped, other_keys = [], [], 0, set()
    places: list[str] = []  # each row's place in the file
    n_cut = 0  # texts cut to MAX_TEXT_CHARS
    import_settings: dict[str, dict] = {}
    prompt_texts: dict[tuple[str, str], str] = {}
    for rec, at in zip(df.to_dict("records"), where, strict=True):
        if "status" in has and not _blank(rec["status"]) and rec["status"] != DONE:
            skipped += 1
            continue
        img_id = _img_id(rec["img_id"])
        if img_id is None:
            problems.append(f"{path}: {at}: img_id {rec['img_id']!r} is not an integer")
            continue
        fault = []
        if img_id not in known_ids:
            fault.append(f"img_id {img_id} is not in {dataset.root}/metadata.csv")
        name = str(rec["prompt"])
        if name not in by_name:
            fault.append(f"prompt {name!r} is not in the prompt set (it has {sorted(by_name)})")
        text = rec["text"]
        if not isinstance(text, str) and not _blank(text):
            fault.append(f"text is {_kind(text)}, not a string")
        elif _blank(text):
            fault.append("empty text")
        if fault:
            problems.append(f"{path}: {at}: " + "; ".join(fault))
            continue
        prompt, cut = by_name[name], len(text) > MAX_TEXT_CHARS
        n_cut += cut
        text = text[:MAX_TEXT_CHARS]
        who = default_teacher if "teacher" not in has or _blank(rec["teacher"]) else rec["teacher"]
        if "settings_hash" in has and not _blank(rec["settings_hash"]):
            settings_hash = str(rec["settings_hash"])
            if "settings" in has and not _blank(rec["settings"]):
                import_settings[settings_hash] = json.loads(rec["settings"])
        else:
            # the store's own settings key, with an "imported" teacher setting
            settings_hash, settings = settings_key({"source": "import", "teacher": who}, "none")
            import_settings[settings_hash] = settings
        if "prompt_hash" in has and not _blank(rec["prompt_hash"]):
            prompt_hash = str(rec["prompt_hash"])
            if (
                prompt_hash != prompt.hash
                and "prompt_text" in has
                and not _blank(rec["prompt_text"])
            ):
                prompt_texts[(name, prompt_hash)] = str(rec["prompt_text"])
        else:
            prompt_hash = prompt.hash
        if "dataset" in has and not _blank(rec["dataset"]) and rec["dataset"] != key:
            other_keys.add(str(rec["dataset"]))
        kw_value = rec.get("keywords") if "keywords" in has else None
        marked = "truncated" in has and not _blank(rec["truncated"]) and _true(rec["truncated"])
        places.append(at)
        rows.append(
            Row(
                dataset=key,
                img_id=img_id,
                prompt=name,
                prompt_hash=prompt_hash,
                teacher=str(who),
                settings_hash=settings_hash,
                status=DONE,
                text=text,
                keywords=_keywords(kw_value, text, prompt.format.value == "keywords"),
                attempts=1,
                truncated=cut or marked,
            )
        )
    problems += _conflicts_in_file(path, rows, places)
    if problems:
        raise DataError(f"{path}: {len(problems)} row(s) cannot be imported", problems)
    if other_keys:
        log.warning(
            "%s: rows were made for dataset(s) %s; they are imported under %s (--data)",
            path,
            sorted(other_keys),
            key,
        )
    if n_cut:
        log.warning("%s: %d text(s) longer than %d characters cut and marked truncated",
                    path, n_cut, MAX_TEXT_CHARS)  # fmt: skip
    with DescriptionStore(store_path) as store:
        done: dict[tuple, str | None] = {}
        for who, h in {(r.teacher, r.settings_hash) for r in rows}:
            done |= {(who, h, *k): t for k, t in store.done_texts(key, who, h).items()}
        clash = [
            f"{path}: {at}: the store holds another text for img_id {r.img_id}, prompt "
            f"{r.prompt!r}, teacher {r.teacher!r} (a done row is never replaced: import into "
            "another store, or under another --teacher)"
            for r, at in zip(rows, places, strict=True)
            if _key(r) in done and done[_key(r)] != r.text
        ]
        if clash:
            raise DataError(f"{path}: {len(clash)} row(s) conflict with {store_path}", clash)
        new = {_key(r) for r in rows}
        added = len(new - done.keys())
        store.register_prompts(prompts)
        for (name, h), text in prompt_texts.items():
            store.register_prompts([_PromptText(name, h, text, by_name[name])])
        for h, settings in import_settings.items():
            store.register_settings(h, settings)
        store.put(rows)
    return ImportSummary(
        rows=len(df),
        imported=added,
        already=len(new) - added,
        skipped_failed=skipped,
        teachers=sorted({r.teacher for r in rows}),
        truncated=n_cut,
    )


def _key(r: Row) -> tuple:
    return (r.teacher, r.settings_hash, r.img_id, r.prompt, r.prompt_hash)


def _true(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0")


def _conflicts_in_file(path: Path, rows: list[Row], places: list[str]) -> list[str]:
    """Rows of one key given twice with different texts (the same text twice is harmless)."""
    first: dict[tuple, str | None] = {}
    out = []
    for r, at in zip(rows, places, strict=True):
        k = _key(r)
        if k in first and first[k] != r.text:
            out.append(
                f"{path}: {at}: another text for img_id {r.img_id}, prompt "
                f"{r.prompt!r}, teacher {r.teacher!r} than an earlier row of the file"
            )
        first.setdefault(k, r.text)
    return out


@dataclass
class _PromptText:
    """A prompt text of an export that differs from the prompt set's current wording."""

    name: str
    hash: str
    text: str
    like: Any

    @property
    def target(self):
        return self.like.target

    @property
    def format(self):
        return self.like.format
