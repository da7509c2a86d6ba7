"""The description store: upsert rules, read API, keyword parsing, export, merge, CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lga.cli import main
from lga.errors import LgaError
from lga.store.core import (
    DONE,
    FAILED,
    DescriptionStore,
    Row,
    export_store,
    merge_stores,
    parse_keywords,
)

KEY = {"dataset": "wb@abc", "teacher": "oracle", "settings_hash": "s1", "prompt_hash": "p1"}


def row(img_id: int, status: str = DONE, prompt: str = "object_description", **kw) -> Row:
    text = kw.pop("text", f"text {img_id}" if status == DONE else None)
    values = {**KEY, **kw}
    return Row(
        img_id=img_id,
        prompt=prompt,
        status=status,
        text=text,
        error=None if status == DONE else "boom",
        **values,
    )


@pytest.fixture
def store(tmp_path):
    with DescriptionStore(tmp_path / "d.sqlite") as s:
        yield s


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Gull, webbed feet, long neck, flat bill, white and grey plumage",
            ["gull", "webbed feet", "long neck", "flat bill", "white and grey plumage"],
        ),
        ("Keywords: lake, water; shore.", ["lake", "water", "shore"]),
        (
            "- Forest\n- trees\n* green foliage\n1. Woodland",
            ["forest", "trees", "green foliage", "woodland"],
        ),
        ("Common name: Mallard. Traits: webbed feet, Webbed feet", ["mallard", "webbed feet"]),
        ('"Heron", (long legs)', ["heron", "long legs"]),
        ("", []),
        (None, []),
    ],
)
def test_parse_keywords(text, expected):
    assert parse_keywords(text) == expected


@given(st.text(max_size=200))
def test_parse_keywords_is_normalised(text):
    words = parse_keywords(text)
    assert len(words) == len(set(words))
    assert all(w and w == w.lower() and w == w.strip() and "," not in w for w in words)


def test_wal_mode_and_schema(store):
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_done_row_is_never_overwritten_failed_is_replaced(store):
    store.put([row(1, FAILED), row(2, DONE, text="first")])
    store.put([row(1, FAILED)])
    store.put([row(1, DONE, text="now done"), row(2, FAILED), row(2, DONE, text="second")])
    df = store.frame().set_index("img_id")
    assert df.loc[1, "status"] == DONE and df.loc[1, "text"] == "now done"
    assert df.loc[1, "attempts"] == 3  # failed, failed, done
    assert df.loc[2, "text"] == "first"
    assert store.done_keys("wb@abc", "oracle", "s1") == {
        (1, "object_description", "p1"),
        (2, "object_description", "p1"),
    }


def test_texts_keywords_missing(store):
    store.put([row(i) for i in (1, 2, 3)] + [row(4, FAILED)])
    store.put(
        [row(1, prompt="object_keywords", text="Gull, long neck", keywords=["gull", "long neck"])]
    )
    assert store.texts("object_description") == {1: "text 1", 2: "text 2", 3: "text 3"}
    assert store.texts("object_description", [2, 4, 9]) == {2: "text 2"}
    assert store.keywords("object_keywords") == {1: ["gull", "long neck"]}
    assert store.missing(["object_description", "object_keywords"], [1, 2, 4]) == {
        "object_description": [4],
        "object_keywords": [2, 4],
    }


def test_texts_refuses_ambiguous_variants(store):
    store.register_settings("s1", {"max_new_tokens": 64})
    store.put([row(1), row(1, teacher="hf:llava", text="llava says")])
    with pytest.raises(LgaError, match="several teachers") as e:
        store.texts("object_description")
    assert "hf:llava" in str(e.value) and "oracle" in str(e.value)
    assert store.texts("object_description", teacher="hf:llava") == {1: "llava says"}
    variants = store.variants("object_description")
    assert [v.teacher for v in variants] == ["hf:llava", "oracle"]
    assert "max_new_tokens" in str(variants[0])


def test_missing_store_and_non_sqlite_file(tmp_path):
    with pytest.raises(LgaError, match="not found"):
        DescriptionStore(tmp_path / "nope.sqlite", create=False)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LgaError, match="not a usable description store"):
        DescriptionStore(bad)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(LgaError, match="not a description store"):
        DescriptionStore(other, create=False)
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("t",)]  # left untouched


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_export(store, tmp_path, suffix):
    store.put(
        [
            row(1),
            row(2, FAILED),
            row(1, prompt="object_keywords", text="Gull, neck", keywords=["gull", "neck"]),
        ]
    )
    out = tmp_path / f"out{suffix}"
    assert export_store(store.path, out) == 3
    if suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
    elif suffix == ".parquet":
        records = pd.read_parquet(out).to_dict("records")
    else:
        records = pd.read_csv(out).to_dict("records")
    for r in records:
        assert {"img_id", "prompt", "teacher", "status", "text", "keywords"} <= set(r)
    kw = next(r["keywords"] for r in records if r["prompt"] == "object_keywords")
    assert list(json.loads(kw) if isinstance(kw, str) else kw) == ["gull", "neck"]
    assert sorted(r["status"] for r in records) == [DONE, DONE, FAILED]


def test_export_bad_suffix(store, tmp_path):
    with pytest.raises(LgaError, match="must end with"):
        export_store(store.path, tmp_path / "out.xlsx")


def test_merge_collapses_duplicates_done_wins(tmp_path):
    a, b, out = (tmp_path / n for n in ("a.sqlite", "b.sqlite", "out.sqlite"))
    with DescriptionStore(a) as s:
        s.put([row(1), row(2, FAILED), row(3, FAILED)])
    with DescriptionStore(b) as s:
        s.put([row(2, DONE, text="from b"), row(3, FAILED), row(4)])
    res = merge_stores(out, [a, b])
    assert res == {"inputs": 2, "rows_read": 6, "rows": 4}
    with DescriptionStore(out, create=False) as s:
        df = s.frame().set_index("img_id")
    assert df["status"].to_dict() == {1: DONE, 2: DONE, 3: FAILED, 4: DONE}
    assert df.loc[2, "text"] == "from b"
    assert df.loc[3, "attempts"] == 2
    merge_stores(out, [a, b])  # merging again changes nothing
    with DescriptionStore(out, create=False) as s:
        assert len(s.frame()) == 4
    with pytest.raises(LgaError, match="into itself"):
        merge_stores(a, [a])
    with pytest.raises(LgaError, match="not found"):
        merge_stores(out, [tmp_path / "missing.sqlite"])


def test_store_cli(tmp_path, capsys):
    a, b, out = (tmp_path / n for n in ("a.sqlite", "b.sqlite", "out.sqlite"))
    with DescriptionStore(a) as s:
        s.put([row(1), row(2, FAILED)])
    with DescriptionStore(b) as s:
        s.put([row(2), row(3, prompt="background_description")])
    assert main(["store", "merge", str(out), str(a), str(b)]) == 0
    assert main(["store", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 row(s)" in text and "object_description" in text and "background_description" in text
    assert main(["store", "export", str(out), "--to", str(tmp_path / "o.jsonl")]) == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3
    assert main(["store", "stats", str(tmp_path / "none.sqlite")]) == 1
    assert "not found" in capsys.readouterr().err


def test_read_only_store_reads_and_refuses_writes(tmp_path):
    path = tmp_path / "d.sqlite"
    with DescriptionStore(path) as s:
        s.put([row(1), row(2)])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name == "d.sqlite"}
    with DescriptionStore(path, read_only=True) as s:
        assert s.stats().rows == 2
        texts = s.texts("object_description", [1, 2], dataset=KEY["dataset"])
        assert texts == {1: "text 1", 2: "text 2"}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            s.put([row(3)])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name == "d.sqlite"} == before
    with pytest.raises(LgaError, match="not found"):
        DescriptionStore(tmp_path / "nope.sqlite", read_only=True)
    assert not (tmp_path / "nope.sqlite").exists()


def test_read_only_store_checks_schema_version(tmp_path):
    path = tmp_path / "d.sqlite"
    DescriptionStore(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(LgaError, match="schema version 99"):
        DescriptionStore(path, read_only=True)


# -- schema versions, damage, atomic merge, claims --------------------------------------------


def make_v1_store(path, rows):
    """A store as lga wrote it before schema version 2 (no truncated column, no claims)."""
    with DescriptionStore(path) as s:
        s.put(rows)
    con = sqlite3.connect(path)
    con.executescript(
        "ALTER TABLE descriptions DROP COLUMN truncated; DROP TABLE claims; "
        "UPDATE meta SET value='1' WHERE key='schema_version';"
    )
    con.close()
    return path


def test_version_1_store_is_read_as_is_and_migrated_for_writing(tmp_path):
    path = make_v1_store(tmp_path / "v1.sqlite", [row(1), row(2, FAILED)])
    with DescriptionStore(path, read_only=True) as s:
        assert s.texts("object_description") == {1: "text 1"}
        assert s.frame()["truncated"].tolist() == [False, False]
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone() == ("1",)
    out = tmp_path / "merged.sqlite"
    merge_stores(out, [path])  # a version-1 input merges into a version-2 store
    with DescriptionStore(out, read_only=True) as s:
        assert len(s.frame()) == 2
    with DescriptionStore(path) as s:  # opening for writing migrates
        s.put([row(3, text="long", truncated=True)])
        df = s.frame().set_index("img_id")
    assert df["truncated"].to_dict() == {1: False, 2: False, 3: True}
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta").fetchone() == ("2",)
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)


def corrupt_middle_page(path) -> None:
    """Overwrite one page in the middle of an SQLite file with garbage."""
    con = sqlite3.connect(path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    assert pages > 8, "the store must span several pages"
    with open(path, "r+b") as f:
        f.seek(page_size * (pages // 2))
        f.write(bytes(range(256)) * (page_size // 256))


@pytest.fixture
def damaged_store(tmp_path):
    path = tmp_path / "damaged.sqlite"
    with DescriptionStore(path) as s:
        s.put([row(i, text=f"answer {i} " * 20) for i in range(600)])
    # closing the last connection folded the WAL into the file
    assert not (tmp_path / "damaged.sqlite-wal").exists()
    corrupt_middle_page(path)
    return path


@pytest.mark.parametrize("mode", ["read_only", "write"])
def test_damaged_store_is_one_clear_error(damaged_store, mode):
    with pytest.raises(LgaError, match="is damaged") as e:
        DescriptionStore(damaged_store, read_only=mode == "read_only")
    message = str(e.value)
    assert str(damaged_store) in message and ".recover" in message


def test_damaged_store_cli_and_recovery_hint_works(damaged_store, tmp_path, capsys):
    assert main(["store", "stats", str(damaged_store)]) == 1
    err = capsys.readouterr().err
    assert str(damaged_store) in err and "damaged" in err and "Traceback" not in err
    assert main(["store", "export", str(damaged_store), "--to", str(tmp_path / "x.jsonl")]) == 1
    merged = tmp_path / "m.sqlite"
    assert main(["store", "merge", str(merged), str(damaged_store)]) == 1
    assert not merged.exists()


def test_damage_met_after_open_is_the_same_error(damaged_store, monkeypatch):
    # as if the page broke after the open's check: reads and writes still name the file
    monkeypatch.setattr("lga.store.schema.integrity_check", lambda con, path: None)
    with DescriptionStore(damaged_store, read_only=True) as s:
        with pytest.raises(LgaError, match="is damaged") as e:
            s.frame()
        assert str(damaged_store) in str(e.value)


def test_merge_failing_midway_leaves_old_output_untouched(tmp_path, monkeypatch):
    a, b, out = (tmp_path / n for n in ("a.sqlite", "b.sqlite", "out.sqlite"))
    for path, rows in ((a, [row(1)]), (b, [row(2)]), (out, [row(9)])):
        with DescriptionStore(path) as s:
            s.put(rows)
    before = out.read_bytes()
    real = DescriptionStore.merge_from

    def fail_on_b(store, src):
        if src == b:
            raise OSError("disk full")
        return real(store, src)

    monkeypatch.setattr(DescriptionStore, "merge_from", fail_on_b)
    with pytest.raises(OSError, match="disk full"):
        merge_stores(out, [a, b])
    assert out.read_bytes() == before
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in left if "merge" in n or n.startswith("out.sqlite-")], left
    fresh = tmp_path / "fresh.sqlite"
    with pytest.raises(OSError, match="disk full"):
        merge_stores(fresh, [a, b])
    assert not fresh.exists()
    monkeypatch.setattr(DescriptionStore, "merge_from", real)
    assert merge_stores(out, [a, b])["rows"] == 3


def test_empty_export_is_an_empty_file(store, tmp_path):
    out = tmp_path / "empty.jsonl"
    assert export_store(store.path, out) == 0
    assert out.read_bytes() == b""


def test_claims(store):
    run = dict(dataset="wb@abc", teacher="oracle", settings_hash="s1")
    items = [(1, "object_description", "p1"), (2, "object_description", "p1")]
    store.put([row(1)])
    states = store.claim(items, **run, owner="A", lease_s=60)
    assert [s.value for s in states] == ["done", "claimed"]
    assert [s.value for s in store.claim(items[1:], **run, owner="B", lease_s=60)] == ["taken"]
    assert [s.value for s in store.claim(items[1:], **run, owner="A", lease_s=60)] == ["claimed"]
    assert store.renew("A", lease_s=-1) == 1  # A's lease has run out: B takes the item over
    assert [s.value for s in store.claim(items[1:], **run, owner="B", lease_s=60)] == ["claimed"]
    store.put([row(2)], release="A")  # A's late answer is kept; B's claim is B's to end
    assert store.release("B") == 1
    assert store.release("B") == 0


def test_recover_copies_the_readable_rows(damaged_store, tmp_path, capsys):
    new = tmp_path / "new.sqlite"
    assert main(["store", "recover", str(damaged_store), "--to", str(new)]) == 0
    assert "recovered" in capsys.readouterr().out
    with DescriptionStore(new, read_only=True) as s:
        texts = s.texts("object_description")
    assert 500 <= len(texts) <= 600  # one damaged page of ~10 rows
    assert all(t == f"answer {i} " * 20 for i, t in texts.items())
    assert main(["store", "recover", str(damaged_store), "--to", str(new)]) == 1  # exists


def test_recover_of_a_store_whose_top_page_is_damaged_says_so(tmp_path, capsys):
    path = tmp_path / "d.sqlite"
    with DescriptionStore(path) as s:
        s.put([row(i, text=f"answer {i} " * 20) for i in range(288)])
    con = sqlite3.connect(path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    top = con.execute("SELECT rootpage FROM sqlite_master WHERE name='descriptions'").fetchone()[0]
    con.close()
    with open(path, "r+b") as f:  # the table's root: an interior page over its leaves
        f.seek(page_size * (top - 1))
        f.write(bytes(range(256)) * (page_size // 256))
    new = tmp_path / "new.sqlite"
    assert main(["store", "recover", str(path), "--to", str(new)]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert err == [
        f"error: cannot recover {path}: no description row can be reached (the damage is at the "
        f"top of the table); SQLite's own `sqlite3 {path} .recover` may find more"
    ]
    assert not [p.name for p in tmp_path.iterdir() if "new.sqlite" in p.name]  # nor its .tmp


def test_recover_leaves_out_a_garbled_text_and_never_prints_it(tmp_path, capsys, caplog):
    path = tmp_path / "d.sqlite"
    with DescriptionStore(path) as s:
        s.put([row(i, text=f"answer {i} " * 20) for i in range(288)])
    raw = path.read_bytes()
    at = raw.index(b"answer 150 answer 150")
    path.write_bytes(raw[:at] + b"\xff\xfe" + raw[at + 2 :])  # the page itself is intact
    new = tmp_path / "new.sqlite"
    assert main(["store", "recover", str(path), "--to", str(new)]) == 0
    captured = capsys.readouterr()
    assert "recovered 287 description row(s)" in captured.out
    assert "swer 150" not in captured.out + captured.err + caplog.text
    assert "descriptions: 1 row(s) with garbled text left out" in caplog.text
    with DescriptionStore(new, read_only=True) as s:
        texts = s.texts("object_description")
    assert sorted(texts) == [i for i in range(288) if i != 150]


def test_a_killed_merge_leaves_files_that_the_rerun_removes(tmp_path):
    a, b, out = (tmp_path / n for n in ("a.sqlite", "b.sqlite", "out.sqlite"))
    with DescriptionStore(a) as s:
        s.put([row(i) for i in range(50)])
    with DescriptionStore(b) as s:
        s.put([row(i) for i in range(50, 90)])
    # a merge killed (SIGKILL: no cleanup) in its second input, its transaction open
    script = (
        "import os, signal, sys\n"
        "import lga.store.transfer as transfer\n"
        "from lga.store.descriptions import DescriptionStore\n"
        "one = DescriptionStore.merge_from\n"
        "def killed(store, src):\n"
        "    if src.name == 'b.sqlite':\n"
        "        store._con.execute('BEGIN')\n"
        "        store._con.execute(\"UPDATE descriptions SET text = 'x'\")\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return one(store, src)\n"
        "DescriptionStore.merge_from = killed\n"
        "transfer.merge_stores(sys.argv[1], sys.argv[2:])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script, str(out), str(a), str(b)], env=env)
    assert proc.returncode == -9
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.sqlite.merge-"))
    assert left and left[0].endswith(".tmp") and any(n.endswith("-wal") for n in left), left
    assert not out.exists()
    assert main(["store", "merge", str(out), str(a), str(b)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sqlite", "b.sqlite", "out.sqlite"]
    with DescriptionStore(out, read_only=True) as s:
        assert len(s.texts("object_description")) == 90
