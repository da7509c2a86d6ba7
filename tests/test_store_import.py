"""`lga store import`: descriptions made elsewhere enter a store and train like generated ones."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fit_support import (
    PROMPTS,
    _answer,
    build_fit_env,
    one_thread,  # noqa: F401  (autouse fixture)
)
from lga.cli import main
from lga.data.dataset import load_dataset
from lga.store.core import DescriptionStore


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_dir):
    return build_fit_env(tmp_path_factory.mktemp("import"), tiny_clip_dir)


def _minimal_rows(data: Path) -> list[dict]:
    """What a captioner outside lga would write: img_id, prompt, text for every image."""
    ds = load_dataset(data, check_images=False)
    return [
        {"img_id": i, "prompt": p, "text": _answer(p, i, y, place)}
        for i, y, place in zip(ds.img_ids.tolist(), ds.y.tolist(), ds.place.tolist(), strict=True)
        for p in PROMPTS
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _import(env, file: Path, store: Path, *extra: str) -> int:
    return main(["store", "import", str(file), "--store", str(store), "--data", str(env["data"]),
                 *extra])  # fmt: skip


def _fit(env, store: Path, out: Path) -> dict:
    argv = ["fit", "--data", str(env["data"]), "--student", str(env["clip"]), "--method", "lga",
            "--descriptions", str(store), "--out", str(out), "--batch-size", "8", "--epochs", "1",
            "--num-workers", "0", "--no-progress", "--device", "cpu",
            "eval.use_cache=false"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _log(run: Path) -> list[dict]:
    return [json.loads(s) for s in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_minimal_file_trains_like_the_generated_store(env, tmp_path, suffix):
    file = _write(tmp_path / f"captions{suffix}", _minimal_rows(env["data"]))
    store = tmp_path / "imported.sqlite"
    assert _import(env, file, store, "--teacher", "my-captioner") == 0
    with DescriptionStore(store, read_only=True) as s:
        assert {v.teacher for v in s.variants()} == {"my-captioner"}
        kws = s.keywords("object_keywords")
        assert kws and all(isinstance(k, list) and k for k in kws.values())
    if suffix != ".jsonl":
        return  # one fit is enough to show it trains like the generated answers
    ref, imported = tmp_path / "ref", tmp_path / "imp"
    assert _fit(env, env["store"], ref) == _fit(env, store, imported)
    assert _log(ref) == _log(imported)


def test_export_round_trip_keeps_keys_and_importing_twice_changes_nothing(env, tmp_path, capsys):
    export = tmp_path / "export.jsonl"
    assert main(["store", "export", str(env["store"]), "--to", str(export)]) == 0
    store = tmp_path / "copy.sqlite"
    assert _import(env, export, store) == 0
    n = len(_minimal_rows(env["data"]))
    assert f"{n} new, 0 already" in capsys.readouterr().out
    again = tmp_path / "again.jsonl"
    assert main(["store", "export", str(store), "--to", str(again)]) == 0
    keep = ["dataset", "img_id", "prompt", "prompt_hash", "teacher", "settings_hash", "text",
            "keywords", "status"]  # fmt: skip
    a = pd.read_json(export, lines=True)[keep]
    b = pd.read_json(again, lines=True)[keep]
    pd.testing.assert_frame_equal(a, b)
    before = store.read_bytes()
    assert _import(env, export, store) == 0
    assert "0 new, " + str(n) + " already" in capsys.readouterr().out
    again2 = tmp_path / "again2.jsonl"
    assert main(["store", "export", str(store), "--to", str(again2)]) == 0
    assert again.read_text() == again2.read_text()
    assert len(before) > 0


def test_bad_rows_are_named_with_their_lines_and_nothing_is_written(env, tmp_path, capsys):
    rows = _minimal_rows(env["data"])[:6]
    rows[1] = {**rows[1], "img_id": 99999}
    rows[3] = {**rows[3], "prompt": "bird_colour"}
    rows[4] = {**rows[4], "text": "  "}
    file = _write(tmp_path / "bad.jsonl", rows)
    store = tmp_path / "s.sqlite"
    assert _import(env, file, store) == 1
    err = capsys.readouterr().err
    assert "3 row(s) cannot be imported" in err
    assert "line 2: img_id 99999 is not in" in err
    assert "line 4: prompt 'bird_colour' is not in the prompt set" in err
    assert "line 5: empty text" in err
    assert "Traceback" not in err and not store.exists()
    csv = _write(tmp_path / "bad.csv", rows)
    assert _import(env, csv, store) == 1
    assert "line 3: img_id 99999" in capsys.readouterr().err  # line 1 is the header
    no_text = _write(tmp_path / "no-text.csv", [{"img_id": 1, "prompt": "object_description"}])
    assert _import(env, no_text, store) == 1
    assert "no column(s) ['text']" in capsys.readouterr().err


@pytest.mark.parametrize("suffix, bad", [(".jsonl", 1.5), (".parquet", 2.7), (".csv", "1.5")])
def test_img_id_must_be_an_integer(env, tmp_path, capsys, suffix, bad):
    rows = _minimal_rows(env["data"])[:4]
    rows = [{**r, "img_id": float(r["img_id"])} for r in rows]  # 3.0 is the integer 3
    rows[2] = {**rows[2], "img_id": bad}
    store = tmp_path / "s.sqlite"
    assert _import(env, _write(tmp_path / f"ids{suffix}", rows), store) == 1
    place = {".jsonl": "line 3", ".parquet": "row 3", ".csv": "line 4"}[suffix]
    assert f"{place}: img_id {bad!r} is not an integer" in capsys.readouterr().err
    assert not store.exists()
    rows[2] = {**rows[2], "img_id": float(rows[1]["img_id"])}
    assert _import(env, _write(tmp_path / f"ok{suffix}", rows), store) == 0


def test_long_texts_are_cut_and_marked_as_describe_does(env, tmp_path, capsys):
    rows = _minimal_rows(env["data"])[:4]
    rows[0] = {**rows[0], "text": "a bird " * 3000}  # 21,000 characters
    store = tmp_path / "s.sqlite"
    assert _import(env, _write(tmp_path / "long.jsonl", rows), store) == 0
    assert "1 text(s) cut to 2048 characters" in capsys.readouterr().out
    with DescriptionStore(store, read_only=True) as s:
        df = s.frame().set_index(["img_id", "prompt"])
    cut = df.loc[(rows[0]["img_id"], rows[0]["prompt"])]
    assert len(cut.text) == 2048 and cut.truncated and cut.text == rows[0]["text"][:2048]
    assert int(df.truncated.sum()) == 1
    assert _import(env, _write(tmp_path / "long.jsonl", rows), store) == 0  # same cut text
    assert "0 new, 4 already" in capsys.readouterr().out


@pytest.mark.parametrize(
    "suffix, text, kind",
    [(".jsonl", ["a", "bird"], "list"), (".jsonl", {"a": 1}, "struct"), (".parquet", ["a"], "list"),
     (".parquet", {"a": 1}, "struct"), (".jsonl", 5, "number")],
)  # fmt: skip
def test_text_must_be_a_string(env, tmp_path, capsys, suffix, text, kind):
    rows = _minimal_rows(env["data"])[:2]
    # a Parquet column holds one type: every text is a list (or struct) there
    bad = [1] if suffix == ".jsonl" else [0, 1]
    rows = [{**r, "text": text} if i in bad else r for i, r in enumerate(rows)]
    store = tmp_path / "s.sqlite"
    assert _import(env, _write(tmp_path / f"t{suffix}", rows), store) == 1
    place = "line 2" if suffix == ".jsonl" else "row 2"
    assert f"{place}: text is a {kind}, not a string" in capsys.readouterr().err
    assert not store.exists()


def test_a_conflicting_reimport_is_refused_naming_the_row(env, tmp_path, capsys):
    rows = _minimal_rows(env["data"])[:4]
    store = tmp_path / "s.sqlite"
    assert _import(env, _write(tmp_path / "a.jsonl", rows), store, "--teacher", "cap") == 0
    capsys.readouterr()
    before = store.read_bytes()
    changed = [*rows[:2], {**rows[2], "text": "another text"}, rows[3]]
    assert _import(env, _write(tmp_path / "b.jsonl", changed), store, "--teacher", "cap") == 1
    err = capsys.readouterr().err
    assert "1 row(s) conflict with" in err
    assert f"line 3: the store holds another text for img_id {rows[2]['img_id']}" in err
    assert store.read_bytes() == before
    twice = [*rows, {**rows[0], "text": "another text"}]
    assert _import(env, _write(tmp_path / "c.jsonl", twice), tmp_path / "new.sqlite") == 1
    assert "line 5: another text for img_id" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, why",
    [
        ("x.parquet", b"not parquet", "cannot read {} as Parquet: Could not open Parquet"),
        (
            "x.csv",
            b'img_id,prompt,text\n1,"open quote\n',
            "cannot read {} as CSV: Error tokenizing",
        ),
        ("x.csv", b"\xff\xfeimg_id", "cannot read {} as CSV: 'utf-8' codec can't decode"),
        ("x.jsonl", b"\xff\xfe{}", "cannot read {} as JSON Lines: 'utf-8' codec"),
    ],
)
def test_an_unreadable_file_is_one_clear_line(env, tmp_path, capsys, name, content, why):
    file = tmp_path / name
    file.write_bytes(content)
    assert _import(env, file, tmp_path / "s.sqlite") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: " + why.format(file)), err
